"""The local gateway, driven over loopback by real clients: boto3, http.client, websockets."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.exceptions import ClientError
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN
from tests.gateway_util import (
    WAIT,
    EventLog,
    connection_path,
    counting_ids,
    management_client,
    open_client,
    raw_request,
    running_gateway,
)
from wsconn.local import GatewayConfig, GatewayThread, LocalCredentials, resolve_credentials, serve

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
AMZ_DATE = r"\d{8}T\d{6}Z"
# Every id the counting factory makes has +, / and = in it, so they must survive encoding.
SPECIAL_ID = "ab-c_dEFg000001="


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def gateway(events: EventLog) -> Iterator[GatewayThread]:
    with running_gateway(events, id_factory=counting_ids()) as gw:
        yield gw


@pytest.fixture
def mgmt(gateway: GatewayThread) -> Any:
    return management_client(gateway.endpoint)


def error_of(info: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a botocore ClientError."""
    response: Any = info.value.response
    error = response["Error"]
    return error["Code"], error.get("Message", ""), response["ResponseMetadata"]["HTTPStatusCode"]


def close_code(info: pytest.ExceptionInfo[ConnectionClosed]) -> tuple[int, str]:
    received = info.value.rcvd
    assert received is not None, "the gateway sent no close frame"
    return received.code, received.reason


# -- POST / GET / DELETE with boto3 ------------------------------------------------------------


def test_post_valid_utf8_arrives_as_text_frame(
    gateway: GatewayThread, events: EventLog, mgmt: Any
) -> None:
    with open_client(gateway, events, "ua-text") as (client, connection_id):
        assert connection_id == SPECIAL_ID
        mgmt.post_to_connection(ConnectionId=connection_id, Data="héllo ✓".encode())
        assert client.recv(timeout=WAIT) == "héllo ✓"
    post = events.wait_for("post", connectionId=connection_id)
    assert post["frame"] == "text"
    assert post["bytes"] == len("héllo ✓".encode())
    assert post["status"] == 200


def test_post_other_bytes_arrive_as_binary_frame(
    gateway: GatewayThread, events: EventLog, mgmt: Any
) -> None:
    payload = bytes(range(256))
    with open_client(gateway, events, "ua-binary") as (client, connection_id):
        response = mgmt.post_to_connection(ConnectionId=connection_id, Data=payload)
        assert client.recv(timeout=WAIT) == payload
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-length"] == "0"
    assert events.wait_for("post", connectionId=connection_id)["frame"] == "binary"


def test_post_size_limit_is_131072_bytes(
    gateway: GatewayThread, events: EventLog, mgmt: Any
) -> None:
    with open_client(gateway, events, "ua-size") as (client, connection_id):
        mgmt.post_to_connection(ConnectionId=connection_id, Data=b"a" * 131072)
        assert client.recv(timeout=WAIT) == "a" * 131072
        with pytest.raises(ClientError) as info:
            mgmt.post_to_connection(ConnectionId=connection_id, Data=b"a" * 131073)
    assert error_of(info) == ("PayloadTooLargeException", "Request Too Long", 413)
    assert events.wait_for("denied", status=413)["errorType"] == "PayloadTooLargeException"


def test_a_huge_body_is_refused_unread(gateway: GatewayThread, events: EventLog) -> None:
    with open_client(gateway, events, "ua-huge") as (_client, connection_id):
        response = raw_request(
            gateway, "POST", connection_path("dev", connection_id), b"x" * (3 * 1024 * 1024)
        )
    assert response.status == 413
    assert response.headers["x-amzn-ErrorType"] == "PayloadTooLargeException"


def test_an_absurd_declared_size_is_refused_unread(gateway: GatewayThread) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=WAIT)
    try:
        connection.putrequest("POST", "/dev/@connections/abc%3D")
        connection.putheader("Content-Length", str(100 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert response.headers["x-amzn-ErrorType"] == "PayloadTooLargeException"
        assert response.headers["Connection"] == "close"
        assert json.loads(response.read()) == {"message": "Request Too Long"}
    finally:
        connection.close()


def test_get_connection_fields(gateway: GatewayThread, events: EventLog, mgmt: Any) -> None:
    with open_client(gateway, events, "wsconn-test/1.0 (loopback)") as (client, connection_id):
        client.send("touch")
        events.wait_for("message", connectionId=connection_id)
        result = mgmt.get_connection(ConnectionId=connection_id)
        raw = raw_request(gateway, "GET", connection_path("dev", connection_id))
    assert isinstance(result["ConnectedAt"], datetime)
    assert isinstance(result["LastActiveAt"], datetime)
    assert result["LastActiveAt"] >= result["ConnectedAt"]
    assert result["Identity"] == {
        "SourceIp": "127.0.0.1",
        "UserAgent": "wsconn-test/1.0 (loopback)",
    }
    body = json.loads(raw.body)
    assert list(body) == ["connectedAt", "identity", "lastActiveAt"]
    assert ISO_MS.match(body["connectedAt"]) and ISO_MS.match(body["lastActiveAt"])
    assert raw.headers["Content-Type"] == "application/json"
    assert events.wait_for("get", connectionId=connection_id)["status"] == 200


def test_delete_closes_the_client_then_everything_is_gone(
    gateway: GatewayThread, events: EventLog, mgmt: Any
) -> None:
    with open_client(gateway, events, "ua-delete") as (client, connection_id):
        response = mgmt.delete_connection(ConnectionId=connection_id)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=WAIT)
    assert close_code(closed) == (1000, "")
    for call in (
        lambda: mgmt.get_connection(ConnectionId=connection_id),
        lambda: mgmt.post_to_connection(ConnectionId=connection_id, Data=b"late"),
        lambda: mgmt.delete_connection(ConnectionId=connection_id),
    ):
        with pytest.raises(mgmt.exceptions.GoneException) as info:
            call()
        assert error_of(info)[0] == "GoneException"
        assert error_of(info)[2] == 410
    disconnect = events.wait_for("disconnect", connectionId=connection_id)
    assert (disconnect["code"], disconnect["by"]) == (1000, "api")


def test_unknown_id_is_gone_with_an_empty_body(
    gateway: GatewayThread, events: EventLog, mgmt: Any
) -> None:
    with pytest.raises(ClientError) as info:
        mgmt.post_to_connection(ConnectionId="R0oXAdfD0kwCH6w=", Data=b"x")
    assert error_of(info)[0] == "GoneException"
    raw = raw_request(gateway, "GET", connection_path("dev", "R0oXAdfD0kwCH6w="))
    assert raw.status == 410
    assert raw.body == b""
    assert raw.headers["x-amzn-ErrorType"] == "GoneException"
    assert raw.headers["x-amzn-RequestId"]
    gone = events.wait_for("gone", method="GET")
    assert gone["connectionId"] == "R0oXAdfD0kwCH6w=" and gone["status"] == 410
    assert set(gone) == {
        "event", "time", "method", "path", "connectionId", "status", "errorType", "reason"
    }  # fmt: skip
    assert not events.named("denied")  # a connection that is not there was not refused


def test_wrong_stage_is_forbidden(gateway: GatewayThread) -> None:
    other_stage = management_client(gateway.endpoint.replace("/dev", "/prod"))
    with pytest.raises(ClientError) as info:
        other_stage.get_connection(ConnectionId="R0oXAdfD0kwCH6w=")
    assert error_of(info) == ("ForbiddenException", "Forbidden", 403)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/prod/@connections/abc%3D"),
        ("GET", "/dev/connections/abc%3D"),
        ("GET", "/dev/@connections/"),
        ("GET", "/dev/@connections/abc%3D/"),
        ("GET", "/dev/@connections/abc/extra"),
        ("GET", "/dev/@connections"),
        ("GET", "/dev"),
        ("GET", "/"),
        ("PUT", "/dev/@connections/abc%3D"),
        ("PATCH", "/dev/@connections/abc%3D"),
    ],
)
def test_routes_other_than_a_connection_are_forbidden(
    gateway: GatewayThread, events: EventLog, method: str, path: str
) -> None:
    response = raw_request(gateway, method, path)
    assert response.status == 403
    assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {"message": "Forbidden"}
    denied = events.wait_for("denied", path=path, method=method)
    assert (denied["status"], denied["errorType"]) == (403, "ForbiddenException")


@pytest.mark.parametrize(
    ("wire_id", "decoded"),
    [
        ("abc%20def%3D", "abc def="),
        ("abc!def%3D", "abc!def="),
        ("cjy8i76bx002884le6n17d49b", "cjy8i76bx002884le6n17d49b"),
        ("ab%2Bc%2Fd%3D_-000001%3D", "ab+c/d=_-000001="),  # base64's + and / are never issued
        ("R0oXAdfD0kwCH6w", "R0oXAdfD0kwCH6w"),  # the '=' cut off
        ("R0oXAdfD0kwCH6wx%3D", "R0oXAdfD0kwCH6wx="),  # one too many
        ("a" * 129, "a" * 129),
        ("tab%09", "tab\t"),
    ],
)
def test_an_id_not_of_the_issued_shape_is_a_bad_request(
    gateway: GatewayThread, wire_id: str, decoded: str
) -> None:
    response = raw_request(gateway, "GET", f"/dev/@connections/{wire_id}")
    assert response.status == 400
    assert response.headers["x-amzn-ErrorType"] == "BadRequestException"
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {"message": f"Invalid connectionId: {decoded}"}


def test_a_well_formed_unknown_id_is_gone(gateway: GatewayThread) -> None:
    response = raw_request(gateway, "POST", "/dev/@connections/R0oXAdfD0kwCH6w%3D", b"x")
    assert (response.status, response.body) == (410, b"")
    assert response.headers["x-amzn-ErrorType"] == "GoneException"


@pytest.mark.parametrize("bad_id", ["abc def=", "abc!def=", "cjy8i76bx002884le6n17d49b"])
@pytest.mark.parametrize("operation", ["post", "get", "delete"])
def test_boto3_sees_400_for_a_malformed_id(mgmt: Any, bad_id: str, operation: str) -> None:
    calls = {
        "post": lambda: mgmt.post_to_connection(ConnectionId=bad_id, Data=b"x"),
        "get": lambda: mgmt.get_connection(ConnectionId=bad_id),
        "delete": lambda: mgmt.delete_connection(ConnectionId=bad_id),
    }
    with pytest.raises(ClientError) as info:
        calls[operation]()
    assert error_of(info) == ("BadRequestException", f"Invalid connectionId: {bad_id}", 400)


# -- the wire forms of the path ----------------------------------------------------------------


@pytest.mark.parametrize("at", ["@", "%40"])
def test_literal_and_encoded_at_are_both_accepted(
    gateway: GatewayThread, events: EventLog, at: str
) -> None:
    with open_client(gateway, events, f"ua-at-{at}") as (client, connection_id):
        path = connection_path("dev", connection_id, at=at)
        assert path.endswith("%3D")
        posted = raw_request(gateway, "POST", path, b"via " + at.encode())
        assert (posted.status, posted.body) == (200, b"")
        assert client.recv(timeout=WAIT) == "via " + at
        got = raw_request(gateway, "GET", path)
        assert got.status == 200
        deleted = raw_request(gateway, "DELETE", path)
        assert (deleted.status, deleted.body) == (204, b"")
        assert raw_request(gateway, "GET", path).status == 410


def test_an_id_sent_unencoded_is_accepted(events: EventLog) -> None:
    with (
        running_gateway(events, id_factory=counting_ids("Ab-c_dEFg")) as gateway,
        open_client(gateway, events, "ua-raw-id") as (client, connection_id),
    ):
        assert connection_id == "Ab-c_dEFg000001="
        path = connection_path("dev", connection_id, encode_id=False)
        assert path == "/dev/@connections/Ab-c_dEFg000001="
        assert raw_request(gateway, "POST", path, b"raw id").status == 200
        assert client.recv(timeout=WAIT) == "raw id"


def test_default_ids_look_real_and_are_unique(events: EventLog) -> None:
    with running_gateway(events) as gateway:
        ids = []
        for n in range(3):
            with open_client(gateway, events, f"ua-default-{n}") as (_client, connection_id):
                ids.append(connection_id)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{15}=", cid) for cid in ids), ids
    assert len(set(ids)) == 3


# -- signature checks --------------------------------------------------------------------------


def test_wrong_secret_shows_the_expected_canonical_request(
    gateway: GatewayThread, events: EventLog
) -> None:
    liar = management_client(
        gateway.endpoint,
        aws_access_key_id=FAKE_ACCESS_KEY,
        aws_secret_access_key="not-the-secret-0000000000000000000000000",
    )
    with pytest.raises(ClientError) as info:
        # Not an issued shape, but the signature is checked first: '+', '/', '=' double-encoded.
        liar.get_connection(ConnectionId="ab+c/d=_-000001=")
    code, message, status = error_of(info)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith(
        "The request signature we calculated does not match the signature you provided. "
    )
    assert "The Canonical String for this request should have been\n'GET\n" in message
    assert "/dev/%40connections/ab%252Bc%252Fd%253D_-000001%253D\n" in message
    assert "\n\nThe String-to-Sign should have been\n'AWS4-HMAC-SHA256\n" in message
    assert FAKE_SECRET_KEY not in message
    assert events.wait_for("denied", errorType="InvalidSignatureException")["status"] == 403


def test_auth_comes_before_existence(gateway: GatewayThread) -> None:
    response = raw_request(gateway, "GET", connection_path("dev", "R0oXAdfD0kwCH6w="), sign=False)
    assert response.status == 403
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(response.body) == {"message": "Missing Authentication Token"}


def test_malformed_authorization_is_an_incomplete_signature(gateway: GatewayThread) -> None:
    response = raw_request(
        gateway,
        "GET",
        connection_path("dev", SPECIAL_ID),
        sign=False,
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
            "execute-api/aws4_request, SignedHeaders=host;x-amz-date",
            "X-Amz-Date": "20150830T123600Z",
        },
    )
    assert response.status == 403
    assert response.headers["x-amzn-ErrorType"] == "IncompleteSignatureException"
    assert "'Signature'" in json.loads(response.body)["message"]


def test_wrong_region_in_the_scope(gateway: GatewayThread) -> None:
    elsewhere = management_client(gateway.endpoint, region_name="eu-west-1")
    with pytest.raises(ClientError) as info:
        elsewhere.get_connection(ConnectionId=SPECIAL_ID)
    assert error_of(info) == (
        "InvalidSignatureException",
        "Credential should be scoped to a valid region. ",
        403,
    )


def test_wrong_service_in_the_scope(gateway: GatewayThread) -> None:
    response = raw_request(gateway, "GET", connection_path("dev", SPECIAL_ID), service="apigateway")
    assert response.status == 403
    assert response.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert json.loads(response.body) == {
        "message": "Credential should be scoped to correct service: 'execute-api'. "
    }


def test_unknown_access_key(gateway: GatewayThread) -> None:
    stranger = management_client(
        gateway.endpoint,
        aws_access_key_id="AKIAUNKNOWNKEY000000",
        aws_secret_access_key=FAKE_SECRET_KEY,
    )
    with pytest.raises(ClientError) as info:
        stranger.get_connection(ConnectionId=SPECIAL_ID)
    assert error_of(info) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
        403,
    )


def test_unexpected_session_token(gateway: GatewayThread) -> None:
    with_token = management_client(gateway.endpoint, aws_session_token=FAKE_SESSION_TOKEN)
    with pytest.raises(ClientError) as info:
        with_token.get_connection(ConnectionId=SPECIAL_ID)
    assert error_of(info)[0] == "UnrecognizedClientException"


def test_session_token_must_match(events: EventLog) -> None:
    trusted = LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
    with (
        running_gateway(events, credentials=trusted) as gateway,
        open_client(gateway, events, "ua-token") as (_client, connection_id),
    ):
        for token in (None, "wrong-token"):
            client = management_client(gateway.endpoint, aws_session_token=token)
            with pytest.raises(ClientError) as info:
                client.get_connection(ConnectionId=connection_id)
            assert error_of(info) == (
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                403,
            )
        right = management_client(gateway.endpoint, aws_session_token=FAKE_SESSION_TOKEN)
        result = right.get_connection(ConnectionId=connection_id)
        assert result["Identity"]["UserAgent"] == "ua-token"
    reasons = {event["reason"] for event in events.named("denied")}
    assert reasons == {"missing session token", "wrong session token"}


@pytest.mark.parametrize(
    ("offset", "pattern"),
    [
        (
            timedelta(minutes=-6),
            rf"Signature expired: ({AMZ_DATE}) is now earlier than ({AMZ_DATE}) "
            rf"\(({AMZ_DATE}) - 5 min\.\)",
        ),
        (
            timedelta(minutes=6),
            rf"Signature not yet current: ({AMZ_DATE}) is still later than ({AMZ_DATE}) "
            rf"\(({AMZ_DATE}) \+ 5 min\.\)",
        ),
    ],
)
def test_clock_skew_over_five_minutes(
    gateway: GatewayThread, monkeypatch: pytest.MonkeyPatch, offset: timedelta, pattern: str
) -> None:
    signing_time = datetime.now(timezone.utc).replace(tzinfo=None) + offset
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: signing_time)
    response = raw_request(gateway, "GET", connection_path("dev", SPECIAL_ID))
    assert response.status == 403
    assert response.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    match = re.fullmatch(pattern, json.loads(response.body)["message"])
    assert match, response.body
    _sent, bound, now = (datetime.strptime(g, "%Y%m%dT%H%M%SZ") for g in match.groups())
    assert match.group(1) == signing_time.strftime("%Y%m%dT%H%M%SZ")
    assert bound - now == (timedelta(minutes=-5) if offset < timedelta(0) else timedelta(minutes=5))
    assert response.headers["Date"]


def test_clock_skew_under_five_minutes_is_accepted(
    gateway: GatewayThread, events: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_client(gateway, events, "ua-skew") as (_client, connection_id):
        signing_time = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=4)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: signing_time)
        assert raw_request(gateway, "GET", connection_path("dev", connection_id)).status == 200


def test_no_auth_accepts_unsigned_requests(events: EventLog) -> None:
    with (
        running_gateway(events, auth=False) as gateway,
        open_client(gateway, events, "ua-noauth") as (client, connection_id),
    ):
        path = connection_path("dev", connection_id)
        assert raw_request(gateway, "POST", path, b"open", sign=False).status == 200
        assert client.recv(timeout=WAIT) == "open"
        forged = raw_request(gateway, "GET", path, secret_key="anything-at-all")
        assert forged.status == 200
    assert events.all[0]["auth"] is False


# -- the client side ---------------------------------------------------------------------------


def test_binary_frame_from_client_closes_with_1003(
    gateway: GatewayThread, events: EventLog
) -> None:
    with open_client(gateway, events, "ua-1003") as (client, connection_id):
        client.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=WAIT)
    assert close_code(closed)[0] == 1003
    message = events.wait_for("message", connectionId=connection_id)
    assert (message["type"], message["bytes"]) == ("binary", 2)
    assert "data" not in message
    disconnect = events.wait_for("disconnect", connectionId=connection_id)
    assert (disconnect["code"], disconnect["by"]) == (1003, "protocol")


@pytest.mark.parametrize(
    "oversize",
    [
        pytest.param("b" * 32769, id="32769-bytes"),
        pytest.param("b" * 40000, id="40000-bytes"),
        # A documented deviation: aiohttp limits messages, so 32 KiB in two frames is refused too.
        pytest.param(["b" * 20000, "b" * 20000], id="fragmented-40000-bytes"),
    ],
)
def test_message_over_32_kib_closes_with_1009(
    gateway: GatewayThread, events: EventLog, oversize: str | list[str]
) -> None:
    with open_client(gateway, events, "ua-1009") as (client, connection_id):
        client.send("a" * 32768)
        assert events.wait_for("message", connectionId=connection_id)["bytes"] == 32768
        # No backend: the 32 KiB message is accepted and answered with the Forbidden frame.
        assert json.loads(client.recv(timeout=WAIT))["message"] == "Forbidden"
        with pytest.raises(ConnectionClosed) as closed:
            # The gateway may close before the client has sent the last fragment.
            client.send(oversize)
            client.recv(timeout=WAIT)
    assert close_code(closed)[0] == 1009
    disconnect = events.wait_for("disconnect", connectionId=connection_id)
    assert (disconnect["code"], disconnect["by"]) == (1009, "protocol")
    assert type(disconnect["code"]) is int
    assert disconnect["reason"] == "message over 32768 bytes"


def test_client_close_is_reported(gateway: GatewayThread, events: EventLog) -> None:
    with open_client(gateway, events, "ua-bye") as (client, connection_id):
        client.close(code=1000, reason="bye")
    disconnect = events.wait_for("disconnect", connectionId=connection_id)
    assert (disconnect["code"], disconnect["reason"], disconnect["by"]) == (1000, "bye", "client")


def test_idle_timeout_closes_with_1001(events: EventLog) -> None:
    with (
        running_gateway(events, idle_timeout=0.5) as gateway,
        open_client(gateway, events, "ua-idle") as (client, connection_id),
        pytest.raises(ConnectionClosed) as closed,
    ):
        client.recv(timeout=WAIT)
    assert close_code(closed) == (1001, "Going Away")
    disconnect = events.wait_for("disconnect", connectionId=connection_id)
    assert (disconnect["code"], disconnect["by"]) == (1001, "idle-timeout")


def test_max_duration_closes_a_busy_client_with_1001(events: EventLog) -> None:
    with (
        running_gateway(events, max_duration=0.7) as gateway,
        open_client(gateway, events, "ua-busy") as (client, connection_id),
        pytest.raises(ConnectionClosed) as closed,
    ):
        for _ in range(int(WAIT / 0.02)):
            client.send("still here")
            # Read each answer (the Forbidden frame: no backend), as a client that keeps up does.
            client.recv(timeout=WAIT)
            time.sleep(0.02)
        client.recv(timeout=WAIT)
    assert close_code(closed) == (1001, "Going Away")
    disconnect = events.wait_for("disconnect", connectionId=connection_id)
    assert (disconnect["code"], disconnect["by"]) == (1001, "max-duration")
    assert len(events.named("message")) >= 1


def test_stop_closes_every_client_with_1001(events: EventLog) -> None:
    gateway = GatewayThread(GatewayConfig(port=0), on_event=events.append).start()
    try:
        with (
            open_client(gateway, events, "ua-stop-1") as (first, first_id),
            open_client(gateway, events, "ua-stop-2") as (second, second_id),
        ):
            gateway.stop()
            for client in (first, second):
                with pytest.raises(ConnectionClosed) as closed:
                    client.recv(timeout=WAIT)
                assert close_code(closed) == (1001, "Going Away")
    finally:
        gateway.stop()
    for connection_id in (first_id, second_id):
        disconnect = events.wait_for("disconnect", connectionId=connection_id)
        assert (disconnect["code"], disconnect["by"]) == (1001, "gateway")


def test_stop_does_not_wait_out_a_management_request_in_flight(events: EventLog) -> None:
    """A request held by --latency 60 at shutdown gets close_timeout, then is cut off."""
    import threading

    with running_gateway(events, latency=60.0, close_timeout=0.2) as gateway:
        answered: list[int | BaseException] = []

        def request() -> None:
            try:
                answered.append(
                    raw_request(gateway, "GET", connection_path("dev", "A" * 15 + "=")).status
                )
            except Exception as error:  # the gateway went away without answering
                answered.append(error)

        held = threading.Thread(target=request, daemon=True)
        held.start()
        held.join(0.5)  # the request is now waiting out its latency
        stopper = threading.Thread(target=gateway.stop, daemon=True)
        stopper.start()
        stopper.join(3 * WAIT)  # a hang bound, far below the 60 s latency
        assert not stopper.is_alive(), "stop() waited for the held request"
        held.join(WAIT)
    assert len(answered) == 1 and not isinstance(answered[0], int), answered


def test_websocket_on_another_stage_is_refused(gateway: GatewayThread, events: EventLog) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(gateway.ws_url.replace("/dev", "/prod"), open_timeout=WAIT)
    assert info.value.response.status_code == 403
    assert events.wait_for("denied", path="/prod")["errorType"] == "ForbiddenException"


def test_connect_and_message_events(gateway: GatewayThread, events: EventLog) -> None:
    with open_client(gateway, events, "ua-events", "?token=abc&room=1") as (client, connection_id):
        client.send("x" * 300)
        message = events.wait_for("message", connectionId=connection_id)
    connect_event = events.wait_for("connect", connectionId=connection_id)
    assert connect_event == {
        "event": "connect",
        "time": connect_event["time"],
        "connectionId": connection_id,
        "sourceIp": "127.0.0.1",
        "userAgent": "ua-events",
        "query": {"token": "abc", "room": "1"},
    }
    assert ISO_MS.match(str(connect_event["time"]))
    assert message == {
        "event": "message",
        "time": message["time"],
        "connectionId": connection_id,
        "type": "text",
        "bytes": 300,
        "data": "x" * 200,
    }


# -- the event stream and the gateway's life ---------------------------------------------------


def test_listening_comes_first_and_no_event_leaks_secrets(events: EventLog) -> None:
    trusted = LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
    with running_gateway(events, credentials=trusted, credential_source="test") as gateway:
        with open_client(gateway, events, "ua-leak") as (client, connection_id):
            right = management_client(gateway.endpoint, aws_session_token=FAKE_SESSION_TOKEN)
            right.post_to_connection(ConnectionId=connection_id, Data=b"hello")
            client.recv(timeout=WAIT)
            client.send("bye")
            events.wait_for("message", connectionId=connection_id)
            right.get_connection(ConnectionId=connection_id)
            with pytest.raises(ClientError):
                management_client(gateway.endpoint).get_connection(ConnectionId=connection_id)
        events.wait_for("disconnect", connectionId=connection_id)
    listening = events.all[0]
    assert listening == {
        "event": "listening",
        "time": listening["time"],
        "endpoint": gateway.endpoint,
        "wsUrl": gateway.ws_url,
        "stage": "dev",
        "region": "us-east-1",
        "auth": True,
        "accessKeyId": FAKE_ACCESS_KEY,
        "credentialSource": "test",
        "connectAuth": "none",
        "routes": [],
        "callbackEndpoint": None,
    }
    assert len(events.named("listening")) == 1
    names = {event["event"] for event in events.all}
    assert {"listening", "connect", "post", "message", "get", "denied", "disconnect"} <= names
    assert all(ISO_MS.match(str(event["time"])) for event in events.all)
    dumped = json.dumps(events.all)
    assert FAKE_SECRET_KEY not in dumped
    assert FAKE_SESSION_TOKEN not in dumped


def test_endpoint_urls_and_port(gateway: GatewayThread, events: EventLog) -> None:
    assert gateway.port > 0
    assert gateway.endpoint == f"http://127.0.0.1:{gateway.port}/dev"
    assert gateway.ws_url == f"ws://127.0.0.1:{gateway.port}/dev"
    assert gateway.credential_source == "env"
    assert gateway.credentials.access_key == FAKE_ACCESS_KEY


def test_port_in_use_raises_in_the_caller(gateway: GatewayThread) -> None:
    with pytest.raises(OSError):
        GatewayThread(GatewayConfig(port=gateway.port)).start()


def test_a_failing_request_does_not_kill_the_server(events: EventLog) -> None:
    calls = iter(range(100))

    def flaky_ids() -> str:
        if next(calls) == 0:
            raise ValueError("id source broke")
        return "survivor000000A="

    with running_gateway(events, id_factory=flaky_ids) as gateway:
        with pytest.raises(InvalidStatus) as info:
            connect(gateway.ws_url, open_timeout=WAIT)
        assert info.value.response.status_code == 500
        assert events.wait_for("error")["error"] == "ValueError: id source broke"
        with open_client(gateway, events, "ua-after") as (_client, connection_id):
            assert connection_id == "survivor000000A="
            assert raw_request(gateway, "GET", connection_path("dev", connection_id)).status == 200


def test_serve_returns_after_cancellation_and_closes_clients_with_1001() -> None:
    async def scenario() -> tuple[int, str]:
        listening: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        task = asyncio.create_task(serve(GatewayConfig(port=0), listening.put_nowait))
        event = await asyncio.wait_for(listening.get(), WAIT)
        assert event["event"] == "listening"
        async with async_connect(str(event["wsUrl"]), open_timeout=WAIT) as client:
            await asyncio.wait_for(listening.get(), WAIT)  # the connect event
            task.cancel()
            assert await asyncio.wait_for(task, WAIT) is None
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(client.recv(), WAIT)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason

    assert asyncio.run(scenario()) == (1001, "Going Away")


# -- credentials -------------------------------------------------------------------------------


def test_resolve_credentials_uses_the_environment() -> None:
    credentials, source = resolve_credentials()
    assert source == "env"
    assert credentials == LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, None)
    assert FAKE_SECRET_KEY not in repr(credentials)


def test_resolve_credentials_honours_a_profile(
    hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (hermetic_env / "credentials").write_text(
        "[other]\naws_access_key_id = AKIAPROFILE000000001\n"
        "aws_secret_access_key = profileSecret\naws_session_token = profileToken\n"
    )
    credentials, source = resolve_credentials("other")
    assert source == "shared-credentials-file"
    assert credentials == LocalCredentials("AKIAPROFILE000000001", "profileSecret", "profileToken")


def test_without_credentials_a_local_pair_is_generated(
    monkeypatch: pytest.MonkeyPatch, events: EventLog
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials, source = resolve_credentials()
    assert source == "generated"
    assert re.fullmatch(r"AKIALOCAL[A-Z0-9]{11}", credentials.access_key)
    assert len(credentials.secret_key) == 40
    assert credentials.token is None
    with (
        running_gateway(events) as gateway,
        open_client(gateway, events, "ua-generated") as (_client, connection_id),
    ):
        assert gateway.credential_source == "generated"
        assert events.all[0]["accessKeyId"] == gateway.credentials.access_key
        local = management_client(
            gateway.endpoint,
            aws_access_key_id=gateway.credentials.access_key,
            aws_secret_access_key=gateway.credentials.secret_key,
        )
        assert local.get_connection(ConnectionId=connection_id)["Identity"]["SourceIp"]
    assert gateway.credentials.secret_key not in json.dumps(events.all)


def test_importing_wsconn_local_imports_neither_click_nor_rich() -> None:
    """The gateway is a library (the pytest plugin, other tools): its terminal lives in console.py."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import wsconn.local, wsconn.local.gateway, wsconn.local.events, wsconn.local.sigv4\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'click', 'rich'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.decode().strip() == "[]"
