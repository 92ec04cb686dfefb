"""`wsconn listen` as a user runs it (its own process), against the project's local gateway.

Each test starts `wsconn listen` with subprocess, drives the other side with the gateway's
@connections API (wsconn send / disconnect) and checks what listen printed and its exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, run_wsconn
from tests.gateway_util import WAIT, EventLog, running_gateway
from tests.scripted_server import Step, scripted
from wsconn.errors import UsageError
from wsconn.local import GatewayConfig, GatewayThread, LocalCredentials
from wsconn.local.app import App

TOKEN = "listenTESTsessionToken//0123456789=="


def start(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Listener:
    return Listener(list(args), stdin, env)


class Listener:
    """One `wsconn listen` process; stdout read line by line as it comes."""

    def __init__(self, args: list[str], stdin: bytes | None, env: dict[str, str] | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wsconn", "listen", *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        if stdin is not None:
            assert self.process.stdin is not None
            self.process.stdin.write(stdin)
            self.process.stdin.close()
            self.process.stdin = None  # communicate() must not flush it

    def json_line(self) -> dict[str, object]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, self.finish()
        parsed: dict[str, object] = json.loads(line)
        return parsed

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=WAIT * 3)
        return self.process.returncode, out.decode(), err.decode()


def listen(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run `wsconn listen` to its end: exit code, stdout, stderr."""
    return Listener(list(args), stdin, env).finish()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def gw(events: EventLog) -> Iterator[GatewayThread]:
    with running_gateway(events) as gateway:
        yield gateway


def connected_id(events: EventLog) -> str:
    return str(events.wait_for("connect")["connectionId"])


def send(gw: GatewayThread, connection_id: str, message: str | bytes) -> None:
    data = message.encode() if isinstance(message, str) else message
    done = run_wsconn("send", "--endpoint", gw.endpoint, connection_id, input=data)
    assert done.code == 0, done.stderr


# -- what arrives ----------------------------------------------------------------------------


def test_text_and_binary_frames_are_printed_one_line_each_when_piped(
    gw: GatewayThread, events: EventLog
) -> None:
    listener = start(gw.ws_url, "--count", "2")
    connection_id = connected_id(events)
    send(gw, connection_id, "hello")
    send(gw, connection_id, b"\x00\xffbin")
    code, out, err = listener.finish()
    assert code == 0, err
    assert out == "hello\n[binary] AP9iaW4=\n"


def test_json_events_whoami_id_is_the_gateways_and_the_probe_answer_is_not_a_message(
    gw: GatewayThread, events: EventLog
) -> None:
    listener = start(gw.ws_url, "--whoami", "-o", "json", "--count", "2")
    first = listener.json_line()
    assert first["event"] == "connected"
    assert first["connectionId"] == connected_id(events)
    assert first["url"] == gw.ws_url
    # The probe reached the gateway and was answered with the Forbidden frame...
    events.wait_for("message", connectionId=first["connectionId"])
    send(gw, str(first["connectionId"]), "one")
    send(gw, str(first["connectionId"]), b"\x01\xfe")
    code, out, err = listener.finish()
    assert code == 0, err
    rest = json_lines(out)
    # ... which is not among the messages: exactly the two sent here.
    assert [(e["event"], e.get("data"), e.get("binary")) for e in rest] == [
        ("message", "one", False),
        ("message", "Af4=", True),
        ("closed", None, None),
    ]
    assert rest[-1]["code"] == 1000 and rest[-1]["by"] == "client"
    assert all(isinstance(e["time"], str) and e["time"].endswith("Z") for e in rest)


def test_send_options_then_stdin_lines_are_delivered_in_order(
    gw: GatewayThread, events: EventLog, tmp_path: Path
) -> None:
    second = tmp_path / "second.json"
    second.write_text('{"n": 2}')
    # No backend: the gateway answers each frame with the Forbidden frame, so four frames sent
    # are four messages received.
    code, out, err = listen(
        gw.ws_url,
        "--send",
        '{"n": 1}',
        "--send",
        f"@{second}",
        "--count",
        "4",
        "-o",
        "json",
        stdin=b'{"n": 3}\n\n{"n": 4}\r\n',
    )
    assert code == 0, err
    assert [e["data"] for e in events.named("message")] == [
        '{"n": 1}',
        '{"n": 2}',
        '{"n": 3}',
        '{"n": 4}',
    ]
    lines = json_lines(out)
    assert [e["data"] for e in lines if e["event"] == "sent"] == [
        '{"n": 1}',
        '{"n": 2}',
        '{"n": 3}',
        '{"n": 4}',
    ]
    answers = [json.loads(str(e["data"])) for e in lines if e["event"] == "message"]
    assert [a["message"] for a in answers] == ["Forbidden"] * 4


# -- expectations and exit codes ---------------------------------------------------------------


def test_expect_met_exits_0_as_soon_as_it_is_seen(gw: GatewayThread) -> None:
    code, out, err = listen(
        gw.ws_url, "--send", "ping", "--expect", '"Forbidden"', "--timeout", "30"
    )
    assert code == 0, err
    assert '"message": "Forbidden"' in out


def test_expect_not_met_by_the_timeout_exits_11_saying_what_was_not_seen(
    gw: GatewayThread,
) -> None:
    code, _, err = listen(
        gw.ws_url, "--send", "ping", "--expect", "Forbidden", "--expect", "joined", "--timeout", "1"
    )
    assert code == 11
    assert "expectation not met: timed out after 1s" in err
    assert "seen: 'Forbidden'" in err and "not seen: 'joined'" in err


def test_the_whoami_probe_answer_does_not_meet_an_expectation(gw: GatewayThread) -> None:
    code, out, err = listen(gw.ws_url, "--whoami", "--expect", "Forbidden", "--timeout", "1.5")
    assert code == 11, err
    assert out == ""


def test_count_with_expect_is_the_budget_the_expectation_must_be_met_within(
    gw: GatewayThread,
) -> None:
    code, _, err = listen(gw.ws_url, "--send", "x", "--expect", "joined", "--count", "1")
    assert code == 11
    assert "within --count 1: received 1 of 1; not seen: 'joined'" in err


def test_timeout_alone_listens_that_long_and_exits_0(gw: GatewayThread, events: EventLog) -> None:
    code, _, err = listen(gw.ws_url, "--timeout", "0.5")
    assert code == 0, err
    assert events.wait_for("disconnect")["code"] == 1000  # closed properly


def test_server_closing_before_the_count_exits_11(events: EventLog) -> None:
    with running_gateway(events, idle_timeout=0.5) as gw:
        code, _, err = listen(gw.ws_url, "--count", "1")
    assert code == 11
    assert "the server closed the connection with 1001 Going Away" in err
    assert "received 0 of 1" in err


def test_idle_timeout_1001_is_reported_and_exits_0_when_nothing_was_asked(
    events: EventLog,
) -> None:
    with running_gateway(events, idle_timeout=0.5) as gw:
        code, out, err = listen(gw.ws_url, "-o", "json")
    assert code == 0, err
    closed = json_lines(out)[-1]
    assert closed["event"] == "closed"
    assert (closed["code"], closed["reason"], closed["by"]) == (1001, "Going Away", "server")
    assert "idle timeout" in str(closed["meaning"])


def test_delete_connection_1000_exits_0(gw: GatewayThread, events: EventLog) -> None:
    listener = start(gw.ws_url)
    connection_id = connected_id(events)
    assert run_wsconn("disconnect", "--endpoint", gw.endpoint, connection_id).code == 0
    code, _, err = listener.finish()
    assert code == 0
    assert "closed by the server: 1000" in err and "DeleteConnection" in err


def test_binary_frame_refused_with_1003_exits_9(gw: GatewayThread, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\xff\xfe\x00")
    code, _, err = listen(gw.ws_url, "--send", f"@{blob}")
    assert code == 9
    assert "1003 Binary frames are not supported" in err
    assert "API Gateway accepts text frames only" in err


def test_message_over_32_kib_closed_with_1009_exits_6(gw: GatewayThread) -> None:
    code, _, err = listen(gw.ws_url, "--send", "a" * 40000)
    assert code == 6
    assert "1009" in err and "too big" in err


def test_keepalive_data_frames_hold_the_connection_past_the_idle_timeout(
    events: EventLog,
) -> None:
    with running_gateway(events, idle_timeout=1.0) as gw:
        code, out, err = listen(gw.ws_url, "--keepalive", "0.3", "--timeout", "2.5", "-o", "json")
    assert code == 0, err
    lines = json_lines(out)
    keepalives = [e for e in lines if e["event"] == "sent"]
    assert len(keepalives) >= 3
    assert all(e["keepalive"] is True and e["data"] == "{}" for e in keepalives)
    # The gateway saw data frames and never closed for idleness; the Forbidden answers to the
    # keep-alives are not the API's messages, so none is printed.
    assert all(e["data"] == "{}" for e in events.named("message"))
    assert [e["by"] for e in events.named("disconnect")] == ["client"]
    assert not [e for e in lines if e["event"] == "message"]


def test_ctrl_c_closes_the_connection_and_exits_130(gw: GatewayThread, events: EventLog) -> None:
    listener = start(gw.ws_url)
    connected_id(events)
    listener.process.send_signal(signal.SIGINT)
    code, _, err = listener.finish()
    assert code == 130
    assert "interrupted" in err
    assert events.wait_for("disconnect")["code"] == 1000


# -- the handshake ---------------------------------------------------------------------------


def test_https_stage_url_is_converted_and_the_query_string_kept(
    gw: GatewayThread, events: EventLog
) -> None:
    code, out, err = listen(
        gw.endpoint + "?name=ci&room=a%20b", "--whoami", "-o", "json", "--timeout", "1"
    )
    assert code == 0, err
    assert json_lines(out)[0]["url"] == gw.ws_url + "?name=ci&room=a%20b"
    assert events.wait_for("connect")["query"] == {"name": "ci", "room": "a b"}


def iam_gateway(events: EventLog, token: str | None) -> GatewayThread:
    return GatewayThread(
        GatewayConfig(
            port=0,
            app=App(connect_auth="iam"),
            credentials=LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, token),
        ),
        on_event=events.append,
    )


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize("form", ["--sign", "--presign"])
def test_signed_upgrade_is_accepted_by_connect_auth_iam(
    events: EventLog, form: str, token: str | None
) -> None:
    env = {"AWS_SESSION_TOKEN": token} if token else {}
    with iam_gateway(events, token) as gw:
        code, out, err = listen(
            gw.ws_url + "?name=ci", form, "--whoami", "-o", "json", "--timeout", "1", env=env
        )
    assert code == 0, err
    connect = events.wait_for("connect")
    assert json_lines(out)[0]["connectionId"] == connect["connectionId"]
    assert connect["query"]["name"] == "ci"  # type: ignore[index]
    assert not events.named("denied")
    if token:
        assert TOKEN not in out + err
        # Nor in the gateway's events (a presigned upgrade carries it in the query string).
        assert TOKEN not in json.dumps(events.all)


def test_a_refused_presigned_upgrade_shows_no_token_in_the_gateways_events(
    events: EventLog,
) -> None:
    with iam_gateway(events, None) as gw:  # it trusts no session token: this one is refused
        code, _, err = listen(gw.ws_url, "--presign", env={"AWS_SESSION_TOKEN": TOKEN})
    assert code == 4, err
    denied = events.wait_for("denied")
    assert "X-Amz-Security-Token=<redacted>" in str(denied["path"])
    assert TOKEN not in json.dumps(events.all)


def test_unsigned_upgrade_is_refused_with_403_exit_4(events: EventLog) -> None:
    with iam_gateway(events, None) as gw:
        code, out, err = listen(gw.ws_url, "-o", "json")
    assert code == 4
    assert "handshake with 127.0.0.1" in err and "refused: 403 Forbidden" in err
    assert "add --sign" in err
    error = json_lines(out)[-1]
    assert (error["event"], error["outcome"], error["httpStatus"]) == ("error", "forbidden", 403)


def test_a_url_without_a_stage_is_refused_and_the_message_says_the_stage_is_missing(
    gw: GatewayThread,
) -> None:
    base = gw.ws_url.rsplit("/", 1)[0]  # ws://127.0.0.1:PORT, the stage left out
    code, _, err = listen(base, "--timeout", "5")
    assert code == 4, err
    assert f"the URL has no stage: it goes first in the path ({base}/{{stage}})" in err
    assert "add --sign" not in err  # not the likely cause here
    assert len(err.strip().splitlines()) == 1


def test_wrong_secret_is_refused_exit_4_naming_the_error_type(events: EventLog) -> None:
    with iam_gateway(events, None) as gw:
        code, _, err = listen(gw.ws_url, "--sign", env={"AWS_SECRET_ACCESS_KEY": "wrong"})
    assert code == 4
    assert "InvalidSignatureException" in err


@pytest.mark.parametrize(
    ("status", "exit_code"), [(401, 4), (404, 9), (426, 9), (500, 10), (503, 10)]
)
def test_refused_handshake_maps_like_the_other_commands(status: int, exit_code: int) -> None:
    with scripted(Step(status, body=b"no")) as server:
        code, _, err = listen(server.endpoint.replace("http", "ws"))
    assert code == exit_code, err
    assert f"refused: {status} " in err


def test_wss_to_a_plain_gateway_says_it_does_not_speak_tls(gw: GatewayThread) -> None:
    code, _, err = listen(gw.ws_url.replace("ws://", "wss://"), "--timeout", "5")
    assert code == 7, err
    assert "does not speak TLS there" in err and "use ws://" in err
    assert "_ssl.c" not in err


def test_a_502_handshake_names_the_connect_integration_as_the_cause() -> None:
    # API Gateway (and wsconn local) answer 502 when $connect's function raised or timed out.
    with scripted(Step(502, body=b"")) as server:
        code, _, err = listen(server.endpoint.replace("http", "ws"), "--timeout", "5")
    assert code == 10, err
    assert "refused: 502 Bad Gateway; $connect's integration failed" in err


def test_connection_refused_exits_7() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = listen(f"ws://127.0.0.1:{port}/dev")
    assert code == 7
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in err
    assert "('127.0.0.1'" not in err  # asyncio's "Connect call failed (addr)" repr does not leak


def test_wss_verifies_with_ca_bundle_and_an_unknown_ca_exits_7(
    events: EventLog, tmp_path: Path
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with running_gateway(events, tls=context) as gw:
        untrusted = listen(gw.ws_url, "--timeout", "2")
        trusted = listen(
            gw.ws_url, "--whoami", "-o", "json", "--timeout", "1", "--ca-bundle", str(bundle)
        )
    assert untrusted[0] == 7 and "TLS" in untrusted[2]
    assert trusted[0] == 0, trusted[2]
    assert json_lines(trusted[1])[0]["connectionId"] == events.wait_for("connect")["connectionId"]


def test_sign_without_a_region_for_a_loopback_host_is_a_configuration_error(
    gw: GatewayThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    code, _, err = listen(gw.ws_url, "--sign")
    assert code == 8
    assert "no region for 127.0.0.1" in err and "--region" in err


def test_sign_without_credentials_is_a_configuration_error(
    gw: GatewayThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, _, err = listen(gw.ws_url, "--sign")
    assert code == 8
    assert "no AWS credentials found" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["ftp://x/dev"], "must start with wss://"),
        (["ws://127.0.0.1:1/dev", "-H", "no colon"], "'Name: value'"),
        (["ws://127.0.0.1:1/dev", "--expect", "("], "not a regular expression"),
        (["ws://127.0.0.1:1/dev", "--keepalive-data", "x"], "goes with --keepalive"),
        (["ws://127.0.0.1:1/dev", "--count", "0"], "--count"),
    ],
)
def test_bad_usage_exits_2_before_connecting(args: list[str], words: str) -> None:
    code, _, err = listen(*args)
    assert code == 2
    assert words in err
    assert len(err.strip().splitlines()) == 1


def test_listen_without_aiohttp_is_one_line_naming_the_install_command(tmp_path: Path) -> None:
    blocker = tmp_path / "aiohttp.py"
    blocker.write_text("raise ModuleNotFoundError(\"No module named 'aiohttp'\", name='aiohttp')\n")
    code, _, err = listen("ws://127.0.0.1:1/dev", env={"PYTHONPATH": str(tmp_path)})
    assert code == 8
    assert err.strip().splitlines() == [
        'wsconn: configuration: wsconn listen needs the "local" extra (aiohttp is not '
        'installed): pip install "wsconn[local]"'
    ]


# -- the smoke test as a user writes it ------------------------------------------------------


def test_the_readme_smoke_test_runs_as_written_against_wsconn_local(
    gw: GatewayThread, events: EventLog, tmp_path: Path
) -> None:
    """The README's shell lines, verbatim but for the URL: listen --whoami in the background,
    its id read from the first line, wsconn send to it, and listen exits 0 having printed it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Smoke-test a deployed API", 1)[1]
    lines = section.split("```", 2)[1].strip("\n").splitlines()
    assert lines[0].startswith("export WS_URL=")
    script = tmp_path / "smoke.sh"
    script.write_text("set -u\n" + "\n".join([f"export WS_URL={gw.ws_url}", *lines[1:]]) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if shutil.which("jq") is None:  # the machine has no jq: a stand-in for `jq -r .KEY`
        (bin_dir / "jq").write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            "print(json.loads(sys.stdin.readline())[sys.argv[-1].lstrip('.')])\n"
        )
        (bin_dir / "jq").chmod(0o755)
    done = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": os.pathsep.join(
                [str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]
            ),
        },
        capture_output=True,
        timeout=WAIT * 3,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines()[-1] == "the API delivered it"
    lines_out = json_lines((tmp_path / "listen.jsonl").read_text())
    assert lines_out[0]["event"] == "connected"
    assert lines_out[0]["connectionId"] == connected_id(events)
    assert lines_out[1]["event"] == "message" and lines_out[1]["data"] == '{"smoke":"ok"}'


# -- with a backend ------------------------------------------------------------------------------

GATE = """
def handler(event, context):
    ctx = event["requestContext"]
    if ctx["routeKey"] == "$connect":
        seen = (event["headers"].get("X-Team"), (event.get("queryStringParameters") or {}).get("name"))
        return {"statusCode": 200 if seen == ("blue", "ci") else 401}
    return {"statusCode": 200}
"""


def gate_gateway(events: EventLog, code_dir: Path) -> Any:
    from wsconn.local.flags import app_from_flags

    (code_dir / "gate.py").write_text(GATE)
    return running_gateway(
        events, app=app_from_flags(handler="gate:handler", code_dir=str(code_dir))
    )


def test_headers_and_query_string_reach_the_connect_handler(
    events: EventLog, tmp_path: Path
) -> None:
    with gate_gateway(events, tmp_path) as gw:
        admitted = listen(gw.ws_url + "?name=ci", "-H", "X-Team: blue", "--timeout", "0.5")
        no_header = listen(gw.ws_url + "?name=ci", "--timeout", "0.5")
        no_query = listen(gw.ws_url, "-H", "X-Team: blue", "--timeout", "0.5")
    assert admitted[0] == 0, admitted[2]
    for refused in (no_header, no_query):
        assert refused[0] == 4
        assert "refused: 401 Unauthorized" in refused[2]


def test_whoami_on_an_api_with_default_says_so_and_goes_on(
    events: EventLog, tmp_path: Path
) -> None:
    with gate_gateway(events, tmp_path) as gw:
        listener = start(
            gw.ws_url + "?name=ci", "-H", "X-Team: blue", "--whoami", "-o", "json", "--count", "1"
        )
        first = listener.json_line()
        assert first["event"] == "connected" and first["connectionId"] is None
        send(gw, str(events.wait_for("connect")["connectionId"]), "still listening")
        code, out, err = listener.finish()
    assert code == 0, err
    assert "the API probably has a $default route" in err
    assert json_lines(out)[0]["data"] == "still listening"
    # The probe went to $default, as a message of this connection.
    assert events.wait_for("invoke", route="$default")


# -- the upgrade request, without a network ------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "wire"),
    [
        (
            "https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
            "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod",
        ),
        (
            "wss://ABC.example.com:443/chat/?token=a%2Fb c",
            "wss://abc.example.com/chat/?token=a%2Fb%20c",
        ),
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/"),
        ("ws://[::1]:9000/$default", "ws://[::1]:9000/$default"),
    ],
)
def test_url_forms(given: str, wire: str) -> None:
    from wsconn.listen import parse_url

    assert parse_url(given).url == wire


def test_sign_uses_the_hosts_region_and_presign_keeps_the_query_first() -> None:
    from wsconn.listen import ListenRequest, prepare

    url = "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod?name=ci"
    signed = prepare(ListenRequest(url=url, sign="headers"))
    headers = dict(signed.headers)
    assert "/eu-west-1/execute-api/aws4_request" in headers["authorization"]
    assert signed.target == url  # the query string goes as typed
    presigned = prepare(ListenRequest(url=url, sign="query", region="eu-west-1"))
    assert presigned.target.startswith(url + "&X-Amz-Algorithm=AWS4-HMAC-SHA256&")
    assert "authorization" not in {name.lower() for name, _ in presigned.headers}
    assert presigned.url.url == url  # what is shown holds no signature
    with pytest.raises(UsageError, match="--region us-west-2 contradicts the host"):
        prepare(ListenRequest(url=url, sign="headers", region="us-west-2"))
    loopback = prepare(
        ListenRequest(url="ws://127.0.0.1:1/dev", sign="headers", region="ca-central-1")
    )
    assert "/ca-central-1/execute-api/" in dict(loopback.headers)["authorization"]


def test_sigterm_closes_the_connection_and_exits_143(gw: GatewayThread, events: EventLog) -> None:
    listener = start(gw.ws_url, "-o", "json")
    connected_id(events)
    listener.process.send_signal(signal.SIGTERM)
    code, out, err = listener.finish()
    assert code == 143
    assert "wsconn: terminated: terminated (SIGTERM)" in err
    assert [e["event"] for e in json_lines(out)] == ["connected", "closed", "error"]
    assert events.wait_for("disconnect")["code"] == 1000


def test_ctrl_c_while_connecting_exits_130_at_once() -> None:
    import time

    # A server that accepts the TCP connection and never answers the upgrade.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        listener = start(f"ws://127.0.0.1:{server.getsockname()[1]}/dev")
        conn, _ = server.accept()
        with conn:
            time.sleep(0.5)  # let it reach the handshake wait (no assertion depends on timing)
            listener.process.send_signal(signal.SIGINT)
            code, _, err = listener.finish()
    assert code == 130
    assert "interrupted" in err


# -- the interactive prompt, in a real terminal (a pty) ------------------------------------------


def test_prompt_on_a_terminal_sends_typed_lines_and_prints_arrivals_above_it(
    gw: GatewayThread, events: EventLog
) -> None:
    import pty
    import select
    import termios
    import time

    def plain(data: bytearray) -> bytes:
        """What a person sees: styles (SGR escapes) dropped, the cursor controls kept."""
        return re.sub(rb"\x1b\[[0-9;]*m", b"", bytes(data))

    pid, terminal = pty.fork()
    if pid == 0:  # the child: wsconn listen on the terminal, as a person runs it
        os.execv(sys.executable, [sys.executable, "-m", "wsconn", "listen", gw.ws_url])
    before = termios.tcgetattr(terminal)
    seen = bytearray()

    cursor = [0]  # where the next search starts: what earlier matches passed is not seen again

    def read_until(text: bytes) -> bytes:
        """Read the terminal until `text` shows (styles stripped) after the last match; what
        was shown from there to the end of `text`."""
        start = cursor[0]
        deadline = time.monotonic() + WAIT
        while text not in plain(seen)[start:]:
            assert time.monotonic() < deadline, bytes(seen)
            ready, _, _ = select.select([terminal], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen.extend(chunk)
        shown = plain(seen)
        assert text in shown[start:], bytes(seen)
        cursor[0] = shown.index(text, start) + len(text)
        return shown[start : cursor[0]]

    try:
        read_until(b"Ctrl-D closes")
        read_until(b"> ")
        connection_id = connected_id(events)
        os.write(terminal, b"half")
        read_until(b"half")
        send(gw, connection_id, '{"from": "server"}')
        # The prompt's line is cleared, the frame printed, then the prompt and what was typed
        # come back below it.
        shown = read_until(b"> half")
        assert (
            shown.index(b"\r\x1b[2K") < shown.index(b'{"from": "server"}') < shown.index(b"> half")
        )
        os.write(terminal, b" typed\r")
        assert events.wait_for("message", data="half typed")
        read_until(b"\xe2\x86\x92 half typed")  # the sent row replaces the echoed line
        # The next prompt is drawn once readline has the terminal in raw mode: a Ctrl-D typed
        # before that lands in the cooked line discipline and reaches readline as a NUL byte.
        read_until(b"> ")
        os.write(terminal, b"\x04")  # Ctrl-D closes, exit 0
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert events.wait_for("disconnect")["code"] == 1000
        # The terminal is as it was before (readline's raw mode undone).
        after = termios.tcgetattr(terminal)
        assert after[3] & termios.ECHO == before[3] & termios.ECHO
        assert after[3] & termios.ICANON == before[3] & termios.ICANON
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)


def test_subprotocols_are_offered_and_the_one_connect_chose_is_reported(
    events: EventLog, tmp_path: Path
) -> None:
    from wsconn.local.flags import app_from_flags

    (tmp_path / "proto.py").write_text(
        "def handler(event, context):\n"
        "    if event['requestContext']['routeKey'] != '$connect':\n"
        "        return {'statusCode': 200}\n"
        "    offered = event['headers'].get('Sec-WebSocket-Protocol', '')\n"
        "    chosen = offered.split(',')[-1].strip()\n"
        "    return {'statusCode': 200, 'headers': {'Sec-WebSocket-Protocol': chosen}}\n"
    )
    app = app_from_flags(handler="proto:handler", code_dir=str(tmp_path))
    with running_gateway(events, app=app) as gw:
        code, out, err = listen(
            gw.ws_url,
            "--subprotocol",
            "chat.v1",
            "--subprotocol",
            "chat.v2",
            "-o",
            "json",
            "--timeout",
            "0.5",
        )
    assert code == 0, err
    assert json_lines(out)[0]["subprotocol"] == "chat.v2"


def test_a_terminal_transcript_explains_close_codes_and_pretty_prints_json() -> None:
    import io

    from wsconn.render import ListenOutput
    from wsconn.streams import Streams

    screen = io.StringIO()
    out = ListenOutput("auto", Streams(None, screen, io.StringIO(), False, True, False))
    assert out.mode == "rich"
    out.connected("R0oXAdfD0kwCH6w=", "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod", None)
    out.received('{"type": "chat", "text": "' + "x" * 80 + '"}')
    out.received(b"\x00\xff")
    out.sent("hello", keepalive=False)
    for code, words in [
        (1001, "idle timeout (10 minutes without data frames), the 2-hour limit"),
        (1003, "binary frame refused"),
        (1009, "over 32 KB"),
        (1006, "dropped"),
    ]:
        out.closed(code, "", "server")
        assert words in " ".join(screen.getvalue().split()), code
    shown = screen.getvalue()
    flat = " ".join(shown.split())
    assert (
        "connected wss://abc123.execute-api.eu-west-1.amazonaws.com/prod as R0oXAdfD0kwCH6w="
        in flat
    )
    # A JSON body too long for one line is indented under its row, a key a line.
    assert any(
        line.startswith(" " * 15) and '"type": "chat",' in line for line in shown.splitlines()
    )
    assert "[binary, 2 bytes] AP8=" in flat
    assert "→ hello" in flat
