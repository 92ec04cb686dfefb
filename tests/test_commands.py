"""`wsconn send/status/disconnect` end to end against the project's local gateway.

A real WebSocket client (the `websockets` library) receives what wsconn sends; the gateway
verifies every SigV4 signature from the raw request target, independently of wsconn's signer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import Run

Wsconn = Callable[..., Run]


@contextmanager
def client(
    gateway: Any, user_agent: str = "wsconn-tests/1.0"
) -> Iterator[tuple[ClientConnection, str]]:
    """A connected WebSocket client and the id the gateway gave it."""
    before = {e.get("connectionId") for e in gateway.events if e["event"] == "connect"}
    with connect(gateway.ws_url, user_agent_header=user_agent, open_timeout=5) as ws:
        connection_id = _wait_for_connect(gateway, before)
        yield ws, connection_id


def _wait_for_connect(gateway: Any, before: set[object]) -> str:
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for event in gateway.events:
            if event["event"] == "connect" and event["connectionId"] not in before:
                return str(event["connectionId"])
        time.sleep(0.01)
    raise AssertionError("the gateway reported no connect event")


def received(ws: ClientConnection) -> str | bytes:
    return ws.recv(timeout=5)


# -- send: exactly the bytes given ----------------------------------------------------------


def test_send_message_argument_is_delivered_as_text(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway) as (ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, cid, "hello world")
        assert run.code == 0, run.stderr
        assert received(ws) == "hello world"
        assert run.stdout == ""  # quiet on success when piped: scripts test $?


def test_send_data_option_and_options_before_the_subcommand(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway) as (ws, cid):
        run = wsconn(
            "--endpoint", gateway.endpoint, "--region", "us-east-1", "send", "-d", "ünïcode ✓", cid
        )
        assert run.code == 0, run.stderr
        assert received(ws) == "ünïcode ✓"


def test_send_binary_file_arrives_as_a_binary_frame(
    gateway: Any, wsconn: Wsconn, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 4
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)
    with client(gateway) as (ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, "-d", f"@{path}", cid)
        assert run.code == 0, run.stderr
        assert received(ws) == payload


def test_send_stdin_bytes_without_added_newline(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway) as (ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, cid, input=b'{"a":1}')
        assert run.code == 0, run.stderr
        assert received(ws) == '{"a":1}'
        run = wsconn(
            "send", "--endpoint", gateway.endpoint, "-d", "@-", cid, input=b"\xff\x00line\n"
        )
        assert run.code == 0, run.stderr
        assert received(ws) == b"\xff\x00line\n"


@pytest.mark.parametrize("data", [[], ["-d", "@-"]])
def test_an_empty_standard_input_is_refused_not_sent(gateway: Any, data: list[str]) -> None:
    """`wsconn send ID </dev/null` (cron, CI, ssh without a tty) sends nothing and says why."""
    with client(gateway) as (ws, cid):
        posts = sum(e["event"] == "post" for e in gateway.events)
        done = subprocess.run(
            [sys.executable, "-m", "wsconn", "send", "--endpoint", gateway.endpoint, *data, cid],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            "wsconn: usage: no message on standard input; pass '' to send an empty message\n"
        )
        assert sum(e["event"] == "post" for e in gateway.events) == posts
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)  # nothing arrived


@pytest.mark.parametrize("typed", [[""], ["-d", ""]])
def test_an_empty_message_typed_as_such_is_sent(gateway: Any, typed: list[str]) -> None:
    with client(gateway) as (ws, cid):
        done = subprocess.run(
            [sys.executable, "-m", "wsconn", "send", "--endpoint", gateway.endpoint, cid, *typed],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert received(ws) == ""


def test_send_largest_allowed_message(gateway: Any, wsconn: Wsconn, tmp_path: Path) -> None:
    path = tmp_path / "max.txt"
    path.write_bytes(b"x" * 131072)
    with client(gateway) as (ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, "-d", f"@{path}", cid)
        assert run.code == 0, run.stderr
        assert received(ws) == "x" * 131072


@pytest.mark.parametrize(
    "odd_id",
    [
        "R0oXAdfD0kwCH6w=",
        "___-___-___-__-=",
        "-R0oXAdfD0kwCH6=",
        "--oXAdfD0kwCH6w=",
    ],
)
def test_ids_with_reserved_characters(odd_id: str, wsconn: Wsconn) -> None:
    from wsconn.local.gateway import GatewayConfig, GatewayThread

    events: list[dict[str, object]] = []
    with GatewayThread(
        GatewayConfig(port=0, id_factory=lambda: odd_id), on_event=events.append
    ) as gw:
        gw.events = events
        with client(gw) as (ws, cid):
            assert cid == odd_id
            run = wsconn("send", "--endpoint", gw.endpoint, cid, "to an odd id")
            assert run.code == 0, run.stderr
            assert received(ws) == "to an odd id"
            # An id-shaped message given with -d stays the message, unmarked.
            run = wsconn("send", cid, "-d", "-R0oXAdfD0kwCH6=", "--endpoint", gw.endpoint)
            assert run.code == 0, run.stderr
            assert received(ws) == "-R0oXAdfD0kwCH6="
            run = wsconn("status", "--endpoint", gw.endpoint, "-o", "json", cid)
            assert run.code == 0, run.stderr
            assert json.loads(run.stdout)["connectionId"] == odd_id


@pytest.mark.parametrize("marker", ["@connections", "%40connections"])
def test_connection_url_typed_encoded_or_not(gateway: Any, wsconn: Wsconn, marker: str) -> None:
    with client(gateway) as (ws, cid):
        encoded = cid.replace("=", "%3D").replace("-", "%2D")  # over-encoded by hand: still one id
        for typed in (cid, encoded):
            url = gateway.endpoint + f"/{marker}/{typed}"
            run = wsconn("send", url, f"via {typed}")
            assert run.code == 0, run.stderr
            assert received(ws) == f"via {typed}"


def test_ws_url_as_endpoint_and_env_endpoint(
    gateway: Any, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with client(gateway) as (ws, cid):
        assert wsconn("send", "--endpoint", gateway.ws_url, cid, "ws").code == 0
        assert received(ws) == "ws"
        monkeypatch.setenv("WSCONN_ENDPOINT", gateway.endpoint + "/")
        assert wsconn("send", cid, "env").code == 0
        assert received(ws) == "env"
        monkeypatch.delenv("WSCONN_ENDPOINT")
        monkeypatch.setenv(
            "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", gateway.endpoint + "/@connections"
        )
        assert wsconn("send", cid, "sdk env").code == 0
        assert received(ws) == "sdk env"


# -- status and disconnect --------------------------------------------------------------------


def test_status_json_has_the_service_fields(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway, user_agent="status-test/2.0") as (_ws, cid):
        run = wsconn("status", "--endpoint", gateway.endpoint, "-o", "json", cid)
        assert run.code == 0, run.stderr
        body = json.loads(run.stdout)
        assert body["connectionId"] == cid
        assert body["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "status-test/2.0"}
        assert body["connectedAt"].endswith("Z") and body["lastActiveAt"].endswith("Z")
        assert body["outcome"] == "connected" and body["httpStatus"] == 200
        assert set(body) >= {"attempts", "latencyMs", "errorType"}


def test_status_text_when_piped(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway, user_agent="piped/1") as (_ws, cid):
        run = wsconn("status", "--endpoint", gateway.endpoint, cid)
        assert run.code == 0, run.stderr
        lines = dict(
            line.split(None, 1) if "  " not in line else line.split("  ", 1)
            for line in run.stdout.splitlines()
        )
        text = run.stdout
        assert cid in text and "127.0.0.1" in text and "piped/1" in text
        assert "idle timeout in" in text and "2-hour limit in" in text
        assert "\x1b[" not in text  # no colours when piped
        assert lines


def test_disconnect_closes_the_client_then_gone(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway) as (ws, cid):
        run = wsconn("disconnect", "--endpoint", gateway.endpoint, "-o", "json", cid)
        assert run.code == 0, run.stderr
        assert json.loads(run.stdout) == {
            "connectionId": cid,
            "outcome": "disconnected",
            "httpStatus": 204,
            "errorType": None,
            "attempts": 1,
            "latencyMs": json.loads(run.stdout)["latencyMs"],
        }
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        gone = wsconn("status", "--endpoint", gateway.endpoint, cid)
        assert gone.code == 3
        first, *why = gone.stderr.splitlines()
        assert first == f"wsconn: gone: {cid} is not connected (410 GoneException)"
        assert any("$connect" in line for line in why)  # the three meanings of 410


def test_send_json_output(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway) as (ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, "-o", "json", cid, "x")
        assert run.code == 0
        body = json.loads(run.stdout)
        assert body["outcome"] == "sent" and body["httpStatus"] == 200 and body["attempts"] == 1
        assert isinstance(body["latencyMs"], float)
        assert received(ws) == "x"


def test_json_output_on_failure_is_one_object(gateway: Any, wsconn: Wsconn) -> None:
    run = wsconn("send", "--endpoint", gateway.endpoint, "-o", "json", "AAAAAAAAAAAAAAA=", "x")
    assert run.code == 3
    body = json.loads(run.stdout)
    assert body["outcome"] == "gone" and body["httpStatus"] == 410
    assert body["errorType"] == "GoneException" and body["connectionId"] == "AAAAAAAAAAAAAAA="


# -- verbose ----------------------------------------------------------------------------------


def test_verbose_shows_request_and_response_without_secrets(gateway: Any, wsconn: Wsconn) -> None:
    from tests.conftest import FAKE_SECRET_KEY

    with client(gateway) as (ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, cid, "v", "-vv")
        assert run.code == 0, run.stderr
        assert f"> POST {gateway.endpoint}/@connections/" in run.stderr
        assert "< 200" in run.stderr and "Signature=<redacted>" in run.stderr
        assert "canonical request" in run.stderr
        assert FAKE_SECRET_KEY not in run.stderr + run.stdout
        assert received(ws) == "v"


def test_session_token_is_signed_sent_and_never_shown(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN
    from wsconn.local.credentials import LocalCredentials
    from wsconn.local.gateway import GatewayConfig, GatewayThread

    monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_SESSION_TOKEN)
    creds = LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
    events: list[dict[str, object]] = []
    with GatewayThread(GatewayConfig(port=0, credentials=creds), on_event=events.append) as gw:
        gw.events = events
        with client(gw) as (ws, cid):
            run = wsconn("send", "--endpoint", gw.endpoint, cid, "tok", "-vv", "-o", "json")
            assert run.code == 0, run.stderr
            assert received(ws) == "tok"
            assert FAKE_SESSION_TOKEN not in run.stderr + run.stdout
            assert "x-amz-security-token: <redacted>" in run.stderr
            monkeypatch.delenv("AWS_SESSION_TOKEN")
            run = wsconn("send", "--endpoint", gw.endpoint, cid, "no token")
            assert run.code == 4
            assert "UnrecognizedClientException" in run.stderr


def test_a_session_token_with_runs_of_spaces_is_signed_as_sigv4_says(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SigV4 collapses runs of spaces in a header value; the gateway (like AWS) checks that."""
    from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
    from wsconn.local.credentials import LocalCredentials
    from wsconn.local.gateway import GatewayConfig, GatewayThread

    token = "FQoG  spaced   session  token=="
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    creds = LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, token)
    events: list[dict[str, object]] = []
    with GatewayThread(GatewayConfig(port=0, credentials=creds), on_event=events.append) as gw:
        gw.events = events
        with client(gw) as (ws, cid):
            run = wsconn("send", "--endpoint", gw.endpoint, cid, "spaced")
            assert run.code == 0, run.stderr
            assert received(ws) == "spaced"


# -- credentials, profiles and region ---------------------------------------------------------


def test_profile_really_selects_the_profile(
    wsconn: Wsconn, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsconn.local.credentials import LocalCredentials
    from wsconn.local.gateway import GatewayConfig, GatewayThread

    (hermetic_env / "credentials").write_text(
        "[ops]\naws_access_key_id = AKIAOPSPROFILE000001\naws_secret_access_key = opsSecret\n"
    )
    trusted = LocalCredentials("AKIAOPSPROFILE000001", "opsSecret")
    events: list[dict[str, object]] = []
    with GatewayThread(GatewayConfig(port=0, credentials=trusted), on_event=events.append) as gw:
        gw.events = events
        with client(gw) as (ws, cid):
            # The environment's keys are not the profile's: the gateway refuses them.
            assert wsconn("send", "--endpoint", gw.endpoint, cid, "env keys").code == 4
            run = wsconn("send", "--endpoint", gw.endpoint, "--profile", "ops", cid, "profile keys")
            assert run.code == 0, run.stderr
            assert received(ws) == "profile keys"
            monkeypatch.setenv("AWS_PROFILE", "ops")
            monkeypatch.delenv("AWS_ACCESS_KEY_ID")
            monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
            assert wsconn("send", "--endpoint", gw.endpoint, cid, "AWS_PROFILE").code == 0
            assert received(ws) == "AWS_PROFILE"


def test_credential_process_profile(
    wsconn: Wsconn, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    from wsconn.local.credentials import LocalCredentials
    from wsconn.local.gateway import GatewayConfig, GatewayThread

    script = tmp_path / "creds.py"
    script.write_text(
        "import json\nprint(json.dumps({'Version': 1, 'AccessKeyId': 'AKIAPROCESS000000001', "
        "'SecretAccessKey': 'processSecret', 'SessionToken': 'processToken'}))\n"
    )
    (hermetic_env / "config").write_text(
        f"[profile proc]\ncredential_process = {sys.executable} {script}\nregion = us-east-1\n"
    )
    trusted = LocalCredentials("AKIAPROCESS000000001", "processSecret", "processToken")
    events: list[dict[str, object]] = []
    with GatewayThread(GatewayConfig(port=0, credentials=trusted), on_event=events.append) as gw:
        gw.events = events
        with client(gw) as (ws, cid):
            run = wsconn("send", "--profile", "proc", "--endpoint", gw.endpoint, cid, "process")
            assert run.code == 0, run.stderr
            assert received(ws) == "process"


def test_region_must_match_and_comes_from_option(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway) as (_ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, "--region", "eu-west-1", cid, "x")
        assert run.code == 4
        assert "InvalidSignatureException" in run.stderr and "region" in run.stderr


# -- one test per exit code -------------------------------------------------------------------


def test_exit_3_gone(gateway: Any, wsconn: Wsconn) -> None:
    run = wsconn("send", "--endpoint", gateway.endpoint, "R0oXAdfD0kwCH6w=", "x")
    assert run.code == 3
    first, *why = run.stderr.splitlines()
    assert first == "wsconn: gone: R0oXAdfD0kwCH6w= is not connected (410 GoneException)"
    assert "410 means one of three things:" in why[0]
    assert len(why) == 4


def test_exit_4_wrong_stage_names_forbidden(gateway: Any, wsconn: Wsconn) -> None:
    wrong = gateway.endpoint.rsplit("/", 1)[0] + "/prod"
    run = wsconn("status", "--endpoint", wrong, "R0oXAdfD0kwCH6w=")
    assert run.code == 4
    first = run.stderr.splitlines()[0]
    assert "ForbiddenException" in first and "wrong stage" in first


def test_exit_4_wrong_secret_names_the_signature(
    gateway: Any, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-the-gateway-trusts")
    run = wsconn("send", "--endpoint", gateway.endpoint, "R0oXAdfD0kwCH6w=", "x")
    assert run.code == 4
    assert run.stderr.startswith(
        "wsconn: forbidden: InvalidSignatureException: The request signature"
    )
    assert "not-the-secret" not in run.stderr


def test_exit_6_refused_locally_before_sending(gateway: Any, wsconn: Wsconn) -> None:
    before = len(gateway.events)
    run = wsconn("send", "--endpoint", gateway.endpoint, "R0oXAdfD0kwCH6w=", input=b"y" * 131073)
    assert run.code == 6
    assert "131072" in run.stderr
    assert len(gateway.events) == before  # nothing reached the gateway


def test_exit_7_connection_refused(wsconn: Wsconn) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = wsconn("send", "--endpoint", f"http://127.0.0.1:{port}/dev", "--retries", "0", "id=", "x")
    assert run.code == 7
    assert run.stderr == f"wsconn: network: cannot reach 127.0.0.1:{port}: connection refused\n"


def test_exit_8_no_credentials(
    gateway: Any, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    run = wsconn("send", "--endpoint", gateway.endpoint, "R0oXAdfD0kwCH6w=", "x")
    assert run.code == 8
    assert "no AWS credentials found" in run.stderr


def test_exit_8_no_endpoint(wsconn: Wsconn) -> None:
    run = wsconn("send", "R0oXAdfD0kwCH6w=", "x")
    assert run.code == 8
    assert "no endpoint" in run.stderr and "--endpoint" in run.stderr


def test_exit_8_no_region_for_a_custom_domain(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    run = wsconn("send", "--endpoint", "http://127.0.0.1:9/x", "id=", "x")
    assert run.code == 8
    assert "pass --region" in run.stderr


def test_exit_8_unknown_profile(wsconn: Wsconn) -> None:
    run = wsconn("send", "--endpoint", "http://127.0.0.1:9/x", "--profile", "nope", "id=", "x")
    assert run.code == 8
    assert "nope" in run.stderr


def test_exit_8_unreadable_file(wsconn: Wsconn, tmp_path: Path) -> None:
    run = wsconn("send", "--endpoint", "http://127.0.0.1:9/x", "-d", f"@{tmp_path}/missing", "id=")
    assert run.code == 8
    assert "missing" in run.stderr and "No such file" in run.stderr


def test_exit_9_other_4xx(wsconn: Wsconn) -> None:
    from tests.scripted_server import Step, scripted

    bad = Step(400, {"x-amzn-ErrorType": "BadRequestException"}, b'{"message":"Invalid id"}')
    with scripted(bad) as server:
        run = wsconn("send", "--endpoint", server.endpoint, "R0oXAdfD0kwCH6w=", "x")
        assert run.code == 9
        assert "400 BadRequestException" in run.stderr and "Invalid id" in run.stderr


def test_malformed_id_is_refused_before_sending(gateway: Any, wsconn: Wsconn) -> None:
    before = len(gateway.events)
    run = wsconn("send", "--endpoint", gateway.endpoint, "bad\x01id", "x")
    assert run.code == 2
    assert "holds '\\x01'" in run.stderr
    assert len(gateway.events) == before


def test_an_id_that_is_not_utf8_is_named_so(gateway: Any) -> None:
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"wsconn", b"status", b"--endpoint",
         gateway.endpoint.encode(), b"R0oX\xffdfD0kwCH6w="],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        b"wsconn: usage: the connection id 'R0oX\\xffdfD0kwCH6w=' is not valid UTF-8 "
        b"(ids are A-Z a-z 0-9 _ - + / =)\n"
    )
    assert not [e for e in gateway.events if e["event"] in ("get", "denied")]


def test_exit_2_usage(wsconn: Wsconn) -> None:
    assert wsconn("send", "--no-such-option").code == 2
    run = wsconn("send", "--endpoint", "http://127.0.0.1:9/x", "id=", "msg", "-d", "also")
    assert run.code == 2
    assert "not both" in run.stderr


def test_exit_1_internal_error_is_reported_without_traceback(
    gateway: Any, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsconn import render

    def broken(self: object, result: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(render.Output, "sent", broken)
    with client(gateway) as (_ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, cid, "x")
        assert run.code == 1
        assert "internal error: RuntimeError: simulated bug" in run.stderr
        assert "please report it" in run.stderr and "Traceback" not in run.stderr
        debug = wsconn("send", "--endpoint", gateway.endpoint, cid, "x", "--debug")
        assert debug.code == 1 and "Traceback" in debug.stderr


def test_version(wsconn: Wsconn) -> None:
    from wsconn import __version__

    run = wsconn("--version")
    assert run.code == 0 and __version__ in run.stdout


def test_usage_errors_are_one_line(wsconn: Wsconn) -> None:
    run = wsconn("send", "--endpont", "x", "id=", "msg")
    assert run.code == 2
    assert run.stderr.startswith("wsconn: usage: No such option '--endpont'")
    assert run.stderr.count("\n") == 1
    bare = wsconn()
    assert bare.code == 2 and "Usage: wsconn" in bare.stderr
