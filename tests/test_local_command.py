"""`wsconn local` and `wsconn demo` as a user runs them: real processes, signals and pipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, run_wsconn


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
    *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "wsconn", "local", "--port", "0", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
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
        hint = process.stderr.readline().decode() + process.stderr.readline().decode()
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
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr.decode()
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
    started = time.monotonic()
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
    assert time.monotonic() - started < 120
    # The gateway's port is closed again.
    port = int(out.split("ws://127.0.0.1:", 1)[1].split("/", 1)[0])
    import socket

    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
