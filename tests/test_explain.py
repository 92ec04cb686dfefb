"""Every refusal explained, each produced by the local gateway (and a rewriting proxy)."""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN, Run
from wsconn.local.credentials import LocalCredentials
from wsconn.local.gateway import GatewayConfig, GatewayThread

Wsconn = Callable[..., Run]
CID = "R0oXAdfD0kwCH6w="


@contextmanager
def started(**options: Any) -> Iterator[GatewayThread]:
    with GatewayThread(GatewayConfig(port=0, **options)) as gateway:
        yield gateway


def test_wrong_secret_is_named_with_the_diff(
    gateway: Any, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-secret-that-the-gateway-does-not-trust")
    run = wsconn("send", "--endpoint", gateway.endpoint, CID, "x")
    assert run.code == 4
    assert (
        f"Wrong secret key: the service built the same canonical request and string-to-sign, so the secret used does not belong to access key {FAKE_ACCESS_KEY} (credentials from env)."
        in run.stderr
    )
    assert "(canonical request: identical)" in run.stderr
    assert "a-secret-that" not in run.stderr


def test_the_session_token_never_shows_in_an_explanation(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
    monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_SESSION_TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with started(credentials=creds) as gw:
        run = wsconn("send", "--endpoint", gw.endpoint, CID, "x", "-v", "-o", "json")
        assert run.code == 4 and "Wrong secret key" in run.stderr
        assert FAKE_SESSION_TOKEN not in run.stderr + run.stdout
        assert FAKE_SECRET_KEY not in run.stderr + run.stdout


class _RewritingProxy(BaseHTTPRequestHandler):
    """An HTTP proxy that forwards to the gateway with '%3D' turned back into '=' (as some do)."""

    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        target = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        upstream.request(self.command, target.path.replace("%3D", "="), body=body, headers=headers)
        answer = upstream.getresponse()
        content = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_path_rewritten_on_the_way_is_named(
    gateway: Any, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _RewritingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY")
        run = wsconn("status", "--endpoint", gateway.endpoint, CID)
        assert run.code == 4, run.stderr
        assert "Path encoding: the service canonicalised the path differently" in run.stderr
        assert "-/dev/%40connections/R0oXAdfD0kwCH6w%253D" in run.stderr  # what wsconn signed
        assert "+/dev/%40connections/R0oXAdfD0kwCH6w%3D" in run.stderr  # what arrived
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_wrong_region_is_named(gateway: Any, wsconn: Wsconn) -> None:
    run = wsconn("send", "--endpoint", gateway.endpoint, "--region", "eu-west-1", CID, "x")
    assert run.code == 4
    assert "Wrong region: wsconn signed for eu-west-1 (from --region)" in run.stderr


def test_clock_skew_is_measured_from_the_date_header(wsconn: Wsconn) -> None:
    with started(clock_skew=-600) as gw:
        run = wsconn("send", "--endpoint", gw.endpoint, CID, "x")
        assert run.code == 4
        assert "Signature not yet current" in run.stderr
        assert re.search(
            r"Clock: this machine is (9m 5\ds|10m \ds) ahead of the service", run.stderr
        )
        assert "more than the 5 minutes SigV4 allows" in run.stderr


def test_small_skew_is_reported_as_within_the_limit(wsconn: Wsconn) -> None:
    with started(clock_skew=120) as gw:
        run = wsconn("send", "--endpoint", gw.endpoint, CID, "x")
        assert run.code == 3  # accepted: 2 minutes is within SigV4's 5
        assert re.search(r"Clock: this machine is (1m 5\ds|2m \ds) behind the service", run.stderr)
        assert "within the 5 minutes" in run.stderr


def test_access_denied_prints_the_resource_and_a_policy(wsconn: Wsconn) -> None:
    with started(deny_methods=("POST",)) as gw:
        run = wsconn("send", "--endpoint", gw.endpoint, CID, "x")
        assert run.code == 4
        assert "IAM refused arn:aws:iam::123456789012:user/wsconn-local" in run.stderr
        policy_start = run.stderr.index("A policy statement that allows it:")
        policy = json.loads(
            "\n".join(line[4:] for line in run.stderr[policy_start:].splitlines()[1:])
        )
        assert policy == {
            "Effect": "Allow",
            "Action": "execute-api:ManageConnections",
            "Resource": "arn:aws:execute-api:us-east-1:123456789012:local/dev/POST/@connections/*",
        }
        assert wsconn("status", "--endpoint", gw.endpoint, CID).code == 3  # GET is allowed


def test_forbidden_shows_the_url_and_where_the_endpoint_came_from(
    gateway: Any, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSCONN_ENDPOINT", gateway.endpoint.rsplit("/", 1)[0] + "/prod")
    run = wsconn("status", CID)
    assert run.code == 4
    first, *why = run.stderr.splitlines()
    assert "wrong stage, path or api-id" in first
    assert why[:2] == [
        f"  URL used: {gateway.endpoint.rsplit('/', 1)[0]}/prod/@connections/R0oXAdfD0kwCH6w%3D",
        "  Endpoint from: WSCONN_ENDPOINT",
    ]
    assert "if /prod ends with the stage, leave the stage out" in why[2]
    assert_no_sentence_repeated(run.stderr)


def assert_no_sentence_repeated(text: str) -> None:
    sentences = [s.strip() for s in re.split(r"[.;:(),]\s|\n", text) if len(s.strip()) > 12]
    repeated = {s for s in sentences if sentences.count(s) > 1}
    assert not repeated, text
    # The one line's list of causes is not said again below it in other words.
    assert text.count("api-id") <= 1 and text.count("stage, path") <= 1, text


def test_forbidden_on_an_endpoint_without_a_stage_says_the_stage_is_missing(
    gateway: Any, wsconn: Wsconn
) -> None:
    """Not "do not add the stage again": there is none."""
    no_stage = gateway.endpoint.rsplit("/", 1)[0]
    run = wsconn("send", "--endpoint", no_stage, CID, "x")
    assert run.code == 4
    assert f"  The URL has no stage: it goes first in the path ({no_stage}/{{stage}})" in run.stderr
    assert "again" not in run.stderr and "leave the stage out" not in run.stderr
    assert_no_sentence_repeated(run.stderr)


def test_forbidden_on_an_execute_api_host_names_the_api_and_stage() -> None:
    from wsconn.errors import Forbidden, SentRequest
    from wsconn.explain import explain

    error = Forbidden("ForbiddenException: Forbidden", http_status=403)
    error.error_type = "ForbiddenException"
    error.sent = SentRequest(
        method="POST",
        url="https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w%3D",
        endpoint_source="--endpoint",
        region="us-east-1",
        region_source="the host",
        access_key=FAKE_ACCESS_KEY,
        credential_source="env",
        has_token=False,
        canonical_request="",
        string_to_sign="",
        resource_pattern="",
    )
    assert explain(error)[2] == (
        "Check that API abc123 has a stage named 'prod' (the first path segment), "
        "and that its default endpoint is enabled."
    )


def test_expired_token_names_the_source_and_the_refresh(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
    monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_SESSION_TOKEN)
    with started(credentials=creds, expired_token=True) as gw:
        run = wsconn("send", "--endpoint", gw.endpoint, CID, "x")
        assert run.code == 4
        assert "ExpiredTokenException" in run.stderr
        assert (
            f"The session token of access key {FAKE_ACCESS_KEY} (credentials from env) has expired"
            in run.stderr
        )
        assert "export fresh AWS_ACCESS_KEY_ID" in run.stderr


def test_unknown_access_key_is_named(
    gateway: Any, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000001")
    run = wsconn("send", "--endpoint", gateway.endpoint, CID, "x", "-o", "json")
    assert run.code == 4
    assert "AWS does not know access key AKIAUNKNOWN000000001 (credentials from env)" in run.stderr
    assert json.loads(run.stdout)["explanation"][0].startswith("AWS does not know")


def test_a_temporary_key_without_its_session_token_is_named(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = "ASIAWSCONNTEST000001"
    creds = LocalCredentials(temporary, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", temporary)
    with started(credentials=creds) as gw:
        run = wsconn("send", "--endpoint", gw.endpoint, CID, "x")
        assert run.code == 4
        first, *why = run.stderr.splitlines()
        assert "UnrecognizedClientException" in first
        assert why == [
            f"  Access key {temporary} (credentials from env) is a temporary key (ASIA...) sent "
            "without its session token: set AWS_SESSION_TOKEN (or the profile's "
            "aws_session_token) to the token issued with it."
        ]
        monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_SESSION_TOKEN)
        # With its token the request is accepted (and the unknown id answered 410).
        assert wsconn("send", "--endpoint", gw.endpoint, CID, "x").code == 3
