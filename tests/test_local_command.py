"""`wsconn local` and `wsconn demo` as a user runs them: real processes, signals and pipes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, default_sigint, run_wsconn


def _banner(stream: IO[bytes]) -> str:
    """The banner's lines on stderr, up to its `wsconn send` line."""
    lines = []
    while not lines or "wsconn send" not in lines[-1]:
        line = stream.readline().decode()
        assert line, f"stderr ended before the banner's command line: {lines}"
        lines.append(line)
    return "".join(lines)


def _read_event(stream: IO[bytes], timeout: float = 15) -> dict[str, object]:
    """The next JSON event line (the gateway flushes each one as it happens)."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    if not selector.select(timeout):
        raise AssertionError("no event within the timeout")
    line = stream.readline()
    assert line, "the gateway's stdout closed"
    return dict(json.loads(line))


@contextmanager
def local_gateway(
    *args: str,
    env: dict[str, str] | None = None,
    json_events: bool = True,
    preexec_fn: Callable[[], None] = default_sigint,
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "wsconn", "local", "--port", "0"]
        + (["--json"] if json_events else [])
        + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec_fn,
        bufsize=0,  # unbuffered: a select() on the pipe then never misses a line already read
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_local_json_events_then_ctrl_c_closes_clients_with_1001() -> None:
    with local_gateway("--stage", "prod") as process:
        assert process.stdout is not None
        listening = _read_event(process.stdout)
        assert listening["event"] == "listening"
        assert str(listening["endpoint"]).endswith("/prod") and listening["auth"] is True
        assert listening["accessKeyId"] == FAKE_ACCESS_KEY
        with connect(str(listening["wsUrl"]), open_timeout=5) as ws:
            connect_event = _read_event(process.stdout)
            assert connect_event["event"] == "connect"
            cid = str(connect_event["connectionId"])
            run = run_wsconn(
                "send", "--endpoint", str(listening["endpoint"]), cid, "through a pipe"
            )
            assert run.code == 0, run.stderr
            assert ws.recv(timeout=5) == "through a pipe"
            post = _read_event(process.stdout)
            assert post["event"] == "post" and post["connectionId"] == cid and post["bytes"] == 14
            process.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
        disconnect = _read_event(process.stdout)
        assert disconnect["event"] == "disconnect" and disconnect["by"] == "gateway"
        assert process.wait(timeout=10) == 0
        stderr = process.stderr.read().decode() if process.stderr else ""
        assert "Traceback" not in stderr
        assert FAKE_SECRET_KEY not in stderr


def test_local_without_credentials_generates_a_pair_and_says_how_to_use_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with local_gateway() as process:
        assert process.stdout is not None and process.stderr is not None
        listening = _read_event(process.stdout)
        assert listening["credentialSource"] == "generated"
        assert str(listening["accessKeyId"]).startswith("AKIALOCAL")
        hint = _banner(process.stderr)
        assert f"export AWS_ACCESS_KEY_ID={listening['accessKeyId']}" in hint
        secret = hint.split("AWS_SECRET_ACCESS_KEY=", 1)[1].split()[0]
        # The printed export line really works: wsconn signs with it and the gateway accepts.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", str(listening["accessKeyId"]))
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        run = run_wsconn("status", "--endpoint", str(listening["endpoint"]), "AAAAAAAAAAAAAAA=")
        assert run.code == 3, run.stderr  # signed right: the answer is gone, not forbidden


def test_local_no_auth_warns_and_accepts_unsigned_requests() -> None:
    import http.client

    with local_gateway("--no-auth") as process:
        assert process.stdout is not None and process.stderr is not None
        listening = _read_event(process.stdout)
        assert listening["auth"] is False
        assert "signature checking is OFF" in process.stderr.readline().decode()
        port = int(str(listening["endpoint"]).split(":")[2].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/dev/@connections/AAAAAAAAAAAAAAA%3D")
        assert conn.getresponse().status == 410  # unsigned, yet past the signature check


def test_local_port_in_use_is_a_config_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "wsconn", "local", "--port", str(port)],
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 8
    err = done.stderr.decode()
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in err
    assert "--port 0" in err  # what to do
    assert "('127.0.0.1'" not in err  # asyncio's repr of the address does not leak
    assert b"Traceback" not in done.stderr


def test_missing_local_extra_names_the_install_command() -> None:
    code = (
        "import sys; sys.modules['aiohttp'] = None\nfrom wsconn.cli import main\nmain(['local'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 8
    assert done.stderr.decode().strip() == (
        'wsconn: configuration: the local gateway needs the "local" extra '
        '(aiohttp is not installed): pip install "wsconn[local]"'
    )


def test_core_commands_do_not_import_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "from wsconn.cli import main\n"
        "main(['send', '--endpoint', 'http://127.0.0.1:9/dev', '--retries', '0', 'id=', 'x'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 7, done.stderr  # reached the network step without aiohttp


def test_demo_runs_the_whole_job_and_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh machine: no credentials at all, and the demo still works.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    done = subprocess.run(
        [sys.executable, "-m", "wsconn", "demo"], capture_output=True, timeout=120, check=False
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    for expected in (
        "$ wsconn send --endpoint http://127.0.0.1:",
        "the client received a text frame: Hello from wsconn!",
        "the client received a binary frame: b'\\x00\\x01binary\\xff'",
        "$ wsconn status",
        "$ wsconn disconnect",
        "The client saw the connection close (code 1000)",
        "is not connected (410 GoneException)",
        "(exit 3)",
    ):
        assert expected in out, expected
    # The gateway's port is closed again.
    port = int(out.split("ws://127.0.0.1:", 1)[1].split("/", 1)[0])
    import socket

    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def _read_line(stream: IO[bytes], timeout: float = 15) -> str:
    """The next line of text events."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    if not selector.select(timeout):
        raise AssertionError("no line within the timeout")
    return stream.readline().decode()


def _bare_shell(**settings: str) -> dict[str, str]:
    """A shell with nothing set but a PATH to wsconn and bash, and the AWS config files standing in
    for the user's ~/.aws (the hermetic test ones, never the machine's)."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "AWS_CONFIG_FILE": os.environ["AWS_CONFIG_FILE"],
        "AWS_SHARED_CREDENTIALS_FILE": os.environ["AWS_SHARED_CREDENTIALS_FILE"],
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        **settings,
    }


@pytest.mark.parametrize("credentials", ["generated", "profile"])
def test_the_banner_lines_work_pasted_into_a_bare_shell(
    credentials: str, monkeypatch: pytest.MonkeyPatch, hermetic_env: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    args: list[str] = []
    if credentials == "profile":
        (hermetic_env / "credentials").write_text(
            f"[team]\naws_access_key_id = {FAKE_ACCESS_KEY}\n"
            f"aws_secret_access_key = {FAKE_SECRET_KEY}\n"
        )
        args = ["--profile", "team", "--region", "eu-west-1"]
    with local_gateway(*args) as process:
        assert process.stdout is not None and process.stderr is not None
        listening = _read_event(process.stdout)
        assert listening["credentialSource"] == credentials or credentials == "profile"
        banner = _banner(process.stderr)
        with connect(str(listening["wsUrl"]), open_timeout=5) as ws:
            cid = str(_read_event(process.stdout)["connectionId"])
            pasted = banner.splitlines()[1:]  # the first line is the banner's title
            script = "\n".join(pasted).replace("CONNECTION_ID", shlex.quote(cid))
            done = subprocess.run(
                ["bash", "-c", "set -e\n" + script],
                env=_bare_shell(),
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == 0, banner + done.stderr.decode()
            assert ws.recv(timeout=5) == "hello"
    if credentials == "profile":
        assert "export AWS_PROFILE=team" in banner
        assert FAKE_SECRET_KEY not in banner  # a user's own secret is never printed


def test_the_lines_local_help_prints_work_pasted_into_a_shell() -> None:
    lines = [line.strip() for line in run_wsconn("local", "--help").stdout.splitlines()]
    start = next(line for line in lines if line.startswith("wsconn local --port 8080"))
    export = next(line for line in lines if line.startswith("export WSCONN_ENDPOINT="))
    send = next(line for line in lines if line.startswith("wsconn send"))
    # The help's own gateway, on a free port instead of 8080.
    args = [("0" if arg == "8080" else arg) for arg in shlex.split(start)[2:]]
    with local_gateway(*args) as process:
        assert process.stdout is not None
        listening = _read_event(process.stdout)
        port = str(listening["endpoint"]).split(":")[2].split("/")[0]
        with connect(str(listening["wsUrl"]), open_timeout=5) as ws:
            cid = str(_read_event(process.stdout)["connectionId"])
            script = (
                f"set -e\n{export.replace(':8080/', f':{port}/')}\nID={shlex.quote(cid)}\n{send}"
            )
            # The shell has the credentials the gateway trusts (the help says so), nothing else.
            env = _bare_shell(
                AWS_ACCESS_KEY_ID=FAKE_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=FAKE_SECRET_KEY
            )
            done = subprocess.run(
                ["bash", "-c", script], env=env, capture_output=True, timeout=30, check=False
            )
            assert done.returncode == 0, script + "\n" + done.stderr.decode()
            assert ws.recv(timeout=5) == "hi"


@pytest.mark.parametrize("command", ["local", "demo"])
def test_local_and_demo_help_give_their_exit_status_not_the_table(command: str) -> None:
    run = run_wsconn(command, "--help")
    assert run.code == 0
    assert "Exit codes:" not in run.stdout and "130" not in run.stdout
    paragraphs = [" ".join(p.split()) for p in run.stdout.split("\n\n")]
    assert len([p for p in paragraphs if p.startswith("Exit status: 0 ")]) == 1


def test_text_events_give_post_sizes_and_frames_and_call_a_410_gone() -> None:
    with local_gateway(json_events=False) as process:
        assert process.stdout is not None and process.stderr is not None
        endpoint = re.findall(r"WSCONN_ENDPOINT=(\S+)", _banner(process.stderr))[0]
        listening = _read_line(process.stdout)
        assert listening.split()[1] == "listening"
        ws_url = re.findall(r"WebSocket (\S+)", listening)[0]
        with connect(ws_url, open_timeout=5) as ws:
            connected = _read_line(process.stdout).split()
            assert connected[1] == "connect"
            cid = connected[2]
            assert run_wsconn("send", "--endpoint", endpoint, cid, "through a pipe").code == 0
            assert _read_line(process.stdout).split(None, 1)[1] == (
                f"post       {cid} <- 14 bytes as a text frame (200)\n"
            )
            run = run_wsconn("send", "--endpoint", endpoint, cid, input=b"\x00\xff")
            assert run.code == 0, run.stderr
            assert _read_line(process.stdout).split(None, 1)[1] == (
                f"post       {cid} <- 2 bytes as a binary frame (200)\n"
            )
            assert ws.recv(timeout=5) == "through a pipe"
        assert run_wsconn("status", "--endpoint", endpoint, "AAAAAAAAAAAAAAA=").code == 3
        while (line := _read_line(process.stdout)).split()[1] == "disconnect":
            pass
        assert line.split(None, 1)[1] == (
            "gone       GET AAAAAAAAAAAAAAA= -> 410 GoneException: no open connection with this id\n"
        )


def test_when_the_event_reader_goes_away_it_says_so_once_and_keeps_serving() -> None:
    with local_gateway() as process:
        assert process.stdout is not None and process.stderr is not None
        listening = _read_event(process.stdout)
        endpoint = str(listening["endpoint"])
        _banner(process.stderr)
        process.stdout.close()  # the reader of `wsconn local --json | ...` went away
        for _ in range(3):  # each answers 410 and emits an event nobody reads
            assert run_wsconn("status", "--endpoint", endpoint, "AAAAAAAAAAAAAAA=").code == 3
        with connect(str(listening["wsUrl"]), open_timeout=5) as ws:
            ws.send("still here")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        stderr = process.stderr.read().decode()
    assert stderr.splitlines() == [
        "wsconn local: events are no longer written to standard output (its reader went away); "
        "still serving (Ctrl-C stops)"
    ]


def test_ctrl_c_reaches_wsconn_local_even_when_the_suite_runs_ignoring_it() -> None:
    # `pytest &` from a script: the suite, and every child it starts, inherit an ignored SIGINT.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with local_gateway() as process:  # restores SIGINT's default in the child
            assert process.stdout is not None
            assert _read_event(process.stdout)["event"] == "listening"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_background_job_keeps_ignoring_ctrl_c_and_sigterm_stops_it_cleanly() -> None:
    def ignore_sigint() -> None:  # as a shell starts `wsconn local &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with local_gateway(preexec_fn=ignore_sigint) as process:
        assert process.stdout is not None
        listening = _read_event(process.stdout)
        endpoint = str(listening["endpoint"])
        with connect(str(listening["wsUrl"]), open_timeout=5) as ws:
            cid = str(_read_event(process.stdout)["connectionId"])
            process.send_signal(signal.SIGINT)
            # Still serving that client after the ignored Ctrl-C.
            assert run_wsconn("send", "--endpoint", endpoint, cid, "after ^C").code == 0
            assert ws.recv(timeout=5) == "after ^C"
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
        assert process.wait(timeout=10) == 0


def test_a_second_ctrl_c_quits_wsconn_local_at_once() -> None:
    import http.client
    import threading

    # A management request held by --latency keeps the shutdown waiting (up to 5 s) for it.
    with local_gateway("--latency", "30") as process:
        assert process.stdout is not None and process.stderr is not None
        listening = _read_event(process.stdout)
        port = int(str(listening["endpoint"]).split(":")[2].split("/")[0])

        def held_request() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn.request("GET", "/dev/@connections/AAAAAAAAAAAAAAA%3D")
                conn.getresponse()

        threading.Thread(target=held_request, daemon=True).start()
        time.sleep(0.5)  # the request is in, waiting out its latency
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)  # the shutdown has begun, waiting for that request
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130  # a shutdown left to finish would exit 0
        stderr = process.stderr.read().decode()
    assert stderr.splitlines()[-1] == "wsconn: interrupted"
    assert "Traceback" not in stderr
