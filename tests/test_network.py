"""Retries, throttling, server errors, timeouts and Ctrl-C, against a scripted loopback server
(for the answers the local gateway does not give), and what goes on the wire."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, default_sigint, run_wsconn
from tests.scripted_server import Step, scripted

Wsconn = Callable[..., Run]
THROTTLED = Step(
    429,
    {"x-amzn-ErrorType": "LimitExceededException", "Retry-After": "0"},
    b'{"message":"Rate exceeded"}',
)
UNAVAILABLE = Step(503, {}, b'{"message":"Internal server error"}')


def test_wire_path_is_exactly_what_was_signed(wsconn: Wsconn) -> None:
    with scripted(Step(200)) as server:
        run = wsconn("send", "--endpoint", server.endpoint, "a+b/c=d", "x", "--region", "us-east-1")
        assert run.code == 0, run.stderr
        request = server.requests[0]
        assert request.target == "/dev/@connections/a%2Bb%2Fc%3Dd"
        assert request.body == b"x"
        assert request.headers["host"] == f"127.0.0.1:{server.server_address[1]}"
        assert "host;x-amz-date" in request.headers["authorization"]
        assert "/us-east-1/execute-api/aws4_request" in request.headers["authorization"]


def test_https_to_a_plain_http_server_says_it_does_not_speak_tls(wsconn: Wsconn) -> None:
    with scripted(Step(200)) as server:
        endpoint = server.endpoint.replace("http://", "https://")
        run = wsconn(
            "send", "--endpoint", endpoint, "--retries", "0", "--region", "us-east-1", "a=", "x"
        )
    assert run.code == 7, run.stderr
    assert "the server does not speak TLS there" in run.stderr and "use http://" in run.stderr
    assert "_ssl.c" not in run.stderr  # OpenSSL's source line does not leak


def test_delete_sends_content_length_zero(wsconn: Wsconn) -> None:
    with scripted(Step(204)) as server:
        assert wsconn("disconnect", "--endpoint", server.endpoint, "id=").code == 0
        assert server.requests[0].method == "DELETE"
        assert server.requests[0].headers["content-length"] == "0"


def test_exit_5_throttled_after_retries(wsconn: Wsconn) -> None:
    with scripted(THROTTLED) as server:
        run = wsconn("send", "--endpoint", server.endpoint, "-o", "json", "id=", "x")
        assert run.code == 5
        assert len(server.requests) == 4  # 1 + --retries 3 (default)
        assert "throttled" in run.stderr and "LimitExceededException" in run.stderr
        assert '"attempts": 4' in run.stdout  # gave up after the retries (a hang: pytest-timeout)


def test_throttled_then_accepted_succeeds(wsconn: Wsconn) -> None:
    with scripted(THROTTLED, Step(200)) as server:
        run = wsconn("send", "--endpoint", server.endpoint, "-o", "json", "id=", "x")
        assert run.code == 0, run.stderr
        assert len(server.requests) == 2 and '"attempts": 2' in run.stdout


def _client_with_a_clock(endpoint: str, retries: int) -> tuple[Any, list[float]]:
    """wsconn's client for ``endpoint`` whose waits between attempts are recorded, not slept."""
    from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
    from wsconn.auth import Credentials, Signer
    from wsconn.client import ManagementClient
    from wsconn.endpoint import parse_endpoint

    waits: list[float] = []
    client = ManagementClient(
        parse_endpoint(endpoint, "--endpoint"),
        Signer(Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, None, "test"), "us-east-1"),
        retries=retries,
        sleep=waits.append,
    )
    return client, waits


def test_retry_after_is_honoured() -> None:
    wait = Step(429, {"Retry-After": "3"}, b"")
    with scripted(wait, Step(200)) as server:
        client, waits = _client_with_a_clock(server.endpoint, retries=3)
        assert client.post_to_connection("id=", b"x").attempts == 2
    assert waits == [3.0]  # the back-off alone would be at most 0.25 s


def test_exit_10_server_error_after_retries(wsconn: Wsconn) -> None:
    with scripted(UNAVAILABLE) as server:
        run = wsconn("status", "--endpoint", server.endpoint, "--retries", "1", "id=")
        assert run.code == 10
        assert len(server.requests) == 2
        assert "503" in run.stderr and "after 2 attempts" in run.stderr


def test_410_403_400_are_never_retried(wsconn: Wsconn) -> None:
    for status, code in ((410, 3), (403, 4), (400, 9)):
        with scripted(Step(status)) as server:
            assert wsconn("send", "--endpoint", server.endpoint, "id=", "x").code == code
            assert len(server.requests) == 1


def test_exit_6_payload_too_large_from_the_service(wsconn: Wsconn) -> None:
    too_large = Step(
        413, {"x-amzn-ErrorType": "PayloadTooLargeException"}, b'{"message":"Too big"}'
    )
    with scripted(too_large) as server:
        run = wsconn("send", "--endpoint", server.endpoint, "id=", "x")
        assert run.code == 6
        assert "PayloadTooLargeException" in run.stderr


def test_error_type_read_from_body_when_no_header(wsconn: Wsconn) -> None:
    body = (
        b'{"__type":"com.amazon#AccessDeniedException","Message":"User: arn:x is not authorized"}'
    )
    with scripted(Step(403, {}, body)) as server:
        run = wsconn("send", "--endpoint", server.endpoint, "id=", "x")
        assert run.code == 4
        assert "AccessDeniedException: User: arn:x is not authorized" in run.stderr


def test_exit_7_timeout(wsconn: Wsconn) -> None:
    with scripted(Step(200, delay=3)) as server:
        run = wsconn(
            "send", "--endpoint", server.endpoint, "--timeout", "0.3", "--retries", "0", "id=", "x"
        )
        assert run.code == 7
        assert "timed out after 0.3s" in run.stderr


def test_exit_130_on_ctrl_c_without_traceback(tmp_path: object) -> None:
    with scripted(Step(200, delay=10)) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "wsconn", "send", "--endpoint", server.endpoint, "id=", "x"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
            preexec_fn=default_sigint,
        )
        deadline = time.monotonic() + 20
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.requests, "the request never arrived"
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=20)
        assert process.returncode == 130
        assert b"Traceback" not in err
        assert err.decode().strip() == "wsconn: interrupted"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_then_success_is_retried(wsconn: Wsconn, status: int) -> None:
    with scripted(Step(status), Step(200)) as server:
        assert wsconn("send", "--endpoint", server.endpoint, "id=", "x").code == 0
        assert len(server.requests) == 2


def test_tls_is_verified_and_ca_bundle_trusts_a_private_ca(
    wsconn: Wsconn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with scripted(Step(200), tls=server_context) as server:
        untrusted = wsconn("send", "--endpoint", server.endpoint, "--retries", "3", "id=", "x")
        assert untrusted.code == 7
        assert "TLS: cannot verify the certificate of 127.0.0.1" in untrusted.stderr
        assert "--ca-bundle" in untrusted.stderr
        assert not server.requests  # nothing was sent
        trusted = wsconn(
            "send", "--endpoint", server.endpoint, "--ca-bundle", str(bundle), "id=", "x"
        )
        assert trusted.code == 0, trusted.stderr
        monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
        assert wsconn("send", "--endpoint", server.endpoint, "id=", "x").code == 0
        assert len(server.requests) == 2


def test_missing_ca_bundle_is_a_config_error(wsconn: Wsconn, tmp_path: Path) -> None:
    run = wsconn(
        "send",
        "--endpoint",
        "https://127.0.0.1:9/dev",
        "--ca-bundle",
        str(tmp_path / "no.pem"),
        "id=",
        "x",
    )
    assert run.code == 8
    assert "no.pem is not a readable file" in run.stderr


def test_a_long_retry_after_is_capped() -> None:
    """Retry-After: 30 would make 3 retries take 90 s; each wait is capped at 8 s (README)."""
    from wsconn.errors import Throttled

    wait = Step(429, {"Retry-After": "30", "x-amzn-ErrorType": "LimitExceededException"})
    with scripted(wait) as server:
        client, waits = _client_with_a_clock(server.endpoint, retries=3)
        with pytest.raises(Throttled):
            client.post_to_connection("id=", b"x")
        assert len(server.requests) == 4
    assert waits == [8.0, 8.0, 8.0]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            b'{"connectedAt":"2020-04-30T20:10:33.236Z","identity":"x"}',
            "unexpected GetConnection answer",
        ),
        (b"not json", "unexpected GetConnection answer"),
    ],
)
def test_a_malformed_get_connection_answer_is_a_server_error(body: bytes, words: str) -> None:
    with scripted(Step(200, {"Content-Type": "application/json"}, body)) as server:
        run = run_wsconn("status", "--endpoint", server.endpoint, "id=", "-o", "json")
        assert run.code == 10 and words in run.stderr
        assert json.loads(run.stdout)["attempts"] == 1


def test_timestamps_without_an_offset_are_read_as_utc() -> None:
    body = b'{"connectedAt":"2020-04-30T20:10:33.236","identity":{},"lastActiveAt":"2020-04-30T20:10:34"}'
    with scripted(Step(200, {"Content-Type": "application/json"}, body)) as server:
        run = run_wsconn("status", "--endpoint", server.endpoint, "id=")
        assert run.code == 0, run.stderr
        assert "2020-04-30T20:10:33.236Z" in run.stdout


def test_a_redirect_is_named() -> None:
    with scripted(Step(302, {"Location": "https://elsewhere/"})) as server:
        run = run_wsconn("send", "--endpoint", server.endpoint, "id=", "x")
        assert run.code == 9
        assert "redirected (302) to https://elsewhere/" in run.stderr


@contextmanager
def refusing_proxy(answer: bytes) -> Iterator[int]:
    """A proxy on loopback that answers every request (a CONNECT included) with `answer`."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("refusal", ["tunnel", "connection"])
def test_a_proxy_that_refuses_is_one_readable_line(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    """No Python repr of urllib3's nested exceptions; the proxy's password never shown."""
    answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    with refusing_proxy(answer) as port:
        proxy_port = port if refusal == "tunnel" else _closed_port()
        monkeypatch.setenv("HTTPS_PROXY", f"http://user:proxySecret@127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", "")
        run = wsconn(
            "send", "--endpoint", "https://127.0.0.1:9/dev", "--region", "us-east-1",
            "--retries", "0", "R0oXAdfD0kwCH6w=", "hi",
        )  # fmt: skip
    assert run.code == 7, run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert "proxySecret" not in run.stderr
    for python in ("Error(", "('", "object at"):
        assert python not in run.stderr, run.stderr
    if refusal == "tunnel":
        assert run.stderr == (
            f"wsconn: network: the proxy 127.0.0.1:{proxy_port} refused the tunnel to "
            "127.0.0.1:9: 407 Proxy Authentication Required; check HTTPS_PROXY / HTTP_PROXY "
            "(NO_PROXY lists hosts that bypass it)\n"
        )
    else:
        assert f"cannot reach the proxy 127.0.0.1:{proxy_port} (for 127.0.0.1:9): " in run.stderr
        assert "connection refused" in run.stderr
