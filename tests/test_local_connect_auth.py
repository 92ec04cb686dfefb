"""Frames with no backend, and `$connect` under AWS_IAM: real websockets clients, botocore signing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN
from tests.gateway_util import WAIT, EventLog, open_client, running_gateway
from wsconn.local import GatewayThread, LocalCredentials
from wsconn.local.app import App

ID = r"[A-Za-z0-9_-]{15}="


@pytest.fixture
def events() -> EventLog:
    return EventLog()


def test_no_backend_answers_each_frame_with_the_forbidden_frame(events: EventLog) -> None:
    with (
        running_gateway(events) as gateway,
        open_client(gateway, events, "ua-forbidden") as (client, connection_id),
    ):
        client.send('{"action": "sendmessage", "msg": "hi"}')
        first = client.recv(timeout=WAIT)
        client.send("not json at all")
        second = client.recv(timeout=WAIT)
        # Still connected: the gateway answers a third frame too.
        client.send("again")
        assert client.recv(timeout=WAIT)
    for frame in (first, second):
        assert isinstance(frame, str)
        match = re.fullmatch(
            r'\{"message": "Forbidden", "connectionId":"(.+)", "requestId":"(.+)"\}', frame
        )
        assert match, frame
        assert match.group(1) == connection_id
        assert re.fullmatch(ID, match.group(2))
    assert json.loads(first)["requestId"] != json.loads(second)["requestId"]


@pytest.fixture
def iam_gateway(events: EventLog) -> Iterator[GatewayThread]:
    with running_gateway(events, app=App(connect_auth="iam")) as gateway:
        yield gateway


def _signed_headers(gateway: GatewayThread, credentials: Credentials) -> dict[str, str]:
    request = AWSRequest(method="GET", url=gateway.ws_url.replace("ws://", "http://"))
    SigV4Auth(credentials, "execute-api", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items()}


def _presigned_url(gateway: GatewayThread, credentials: Credentials, query: str = "") -> str:
    request = AWSRequest(method="GET", url=gateway.ws_url.replace("ws://", "http://") + query)
    SigV4QueryAuth(credentials, "execute-api", "us-east-1", expires=60).add_auth(request)
    return request.url.replace("http://", "ws://")


def _expect_refused(url: str, status: int, **kwargs: object) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=WAIT, **kwargs)  # type: ignore[arg-type]
    assert refused.value.response.status_code == status


def test_iam_connect_accepts_a_header_signed_upgrade(
    iam_gateway: GatewayThread, events: EventLog
) -> None:
    headers = _signed_headers(iam_gateway, Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY))
    with connect(iam_gateway.ws_url, additional_headers=headers, open_timeout=WAIT) as client:
        client.send("hello")
        assert json.loads(client.recv(timeout=WAIT))["message"] == "Forbidden"
    assert events.named("connect")


def test_iam_connect_accepts_a_presigned_upgrade(
    iam_gateway: GatewayThread, events: EventLog
) -> None:
    url = _presigned_url(iam_gateway, Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY), "?name=al")
    assert "X-Amz-Signature=" in url
    with connect(url, open_timeout=WAIT) as client:
        client.send("hello")
        assert client.recv(timeout=WAIT)
    assert events.wait_for("connect")["query"]["name"] == "al"  # type: ignore[index]


def test_iam_connect_refuses_unsigned_and_wrongly_signed_upgrades_with_403(
    iam_gateway: GatewayThread, events: EventLog
) -> None:
    _expect_refused(iam_gateway.ws_url, 403)
    wrong = Credentials(FAKE_ACCESS_KEY, "not-the-secret")
    _expect_refused(iam_gateway.ws_url, 403, additional_headers=_signed_headers(iam_gateway, wrong))
    _expect_refused(_presigned_url(iam_gateway, wrong), 403)
    # A presigned URL altered after signing (another query value) no longer matches.
    good = _presigned_url(iam_gateway, Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY), "?name=al")
    _expect_refused(good.replace("name=al", "name=mallory"), 403)
    denied = events.named("denied")
    assert [event["status"] for event in denied] == [403, 403, 403, 403]
    assert denied[0]["errorType"] == "MissingAuthenticationTokenException"
    assert {event["reason"] for event in denied[1:]} == {"signature does not match"}
    assert not events.named("connect")


def test_iam_connect_with_a_session_token(events: EventLog) -> None:
    trusted = LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
    with running_gateway(events, app=App(connect_auth="iam"), credentials=trusted) as gateway:
        with_token = Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
        with connect(_presigned_url(gateway, with_token), open_timeout=WAIT):
            pass
        headers = _signed_headers(gateway, with_token)
        with connect(gateway.ws_url, additional_headers=headers, open_timeout=WAIT):
            pass
        without = Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY)
        _expect_refused(_presigned_url(gateway, without), 403)
    assert len(events.named("connect")) == 2


def test_open_gateway_ignores_signatures(events: EventLog) -> None:
    with running_gateway(events) as gateway, connect(gateway.ws_url, open_timeout=WAIT):
        pass
    assert events.named("connect")


def test_wsconn_local_connect_auth_iam_refuses_an_unsigned_upgrade() -> None:
    from tests.test_local_command import _read_event, local_gateway

    with local_gateway("--connect-auth", "iam") as process:
        assert process.stdout is not None
        listening = _read_event(process.stdout)
        assert listening["connectAuth"] == "iam"
        url = str(listening["wsUrl"])
        _expect_refused(url, 403)
        assert _read_event(process.stdout)["event"] == "denied"
        request = AWSRequest(method="GET", url=url.replace("ws://", "http://"))
        SigV4Auth(
            Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY), "execute-api", "us-east-1"
        ).add_auth(request)
        with connect(url, additional_headers=dict(request.headers.items()), open_timeout=WAIT):
            assert _read_event(process.stdout)["event"] == "connect"
