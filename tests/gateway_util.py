"""Helpers for tests that drive the local gateway with real clients over loopback.

Import it from a test module as ``from tests.gateway_util import ...``.
Signing here uses botocore's own signer: a third party to the gateway's verifier.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.sync.client import ClientConnection, connect

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
from wsconn.local import GatewayConfig, GatewayThread

# Generous: only reached when something is broken, never part of what a test asserts.
WAIT = 10.0

Event = dict[str, object]


class EventLog:
    """A thread-safe list of gateway events that a test can wait on."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._changed = threading.Condition()

    def append(self, event: Event) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    @property
    def all(self) -> list[Event]:
        with self._changed:
            return list(self._events)

    def named(self, name: str) -> list[Event]:
        return [event for event in self.all if event["event"] == name]

    def wait_for(self, name: str, **match: object) -> Event:
        """The first event called ``name`` whose fields equal ``match``; fails after WAIT seconds."""

        def find() -> Event | None:
            for event in self._events:
                if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
                    return event
            return None

        with self._changed:
            found = self._changed.wait_for(find, timeout=WAIT)
        assert found is not None, f"no {name} event matching {match}; got {self._events}"
        return found


def counting_ids(prefix: str = "ab-c_dEFg") -> Callable[[], str]:
    """An id_factory giving real-shaped ids (9 characters, a count, ``=``) with ``-``, ``_``, ``=``."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):06d}="


@contextmanager
def running_gateway(events: EventLog, **config: object) -> Iterator[GatewayThread]:
    """A started gateway on a free loopback port, stopped afterwards."""
    settings: dict[str, object] = {"port": 0, **config}
    with GatewayThread(GatewayConfig(**settings), on_event=events.append) as gateway:  # type: ignore[arg-type]
        yield gateway


def management_client(endpoint: str, **kwargs: object) -> Any:
    """boto3's apigatewaymanagementapi client for ``endpoint``, keys from the environment.

    boto3 ignores a lone ``aws_session_token``: when one is given, the test keys are passed with it.
    """
    settings: dict[str, object] = {"region_name": "us-east-1", **kwargs}
    if settings.get("aws_session_token") and "aws_access_key_id" not in settings:
        settings.update(aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY)
    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, **settings)


@contextmanager
def open_client(
    gateway: GatewayThread, events: EventLog, user_agent: str, query: str = ""
) -> Iterator[tuple[ClientConnection, str]]:
    """A connected WebSocket client and its connection id (read from the connect event)."""
    with connect(gateway.ws_url + query, user_agent_header=user_agent, open_timeout=WAIT) as client:
        event = events.wait_for("connect", userAgent=user_agent)
        yield client, str(event["connectionId"])


def connection_path(stage: str, connection_id: str, at: str = "@", encode_id: bool = True) -> str:
    """``/{stage}/@connections/{id}`` with the ``@`` as given and the id encoded like the SDKs."""
    wire_id = quote(connection_id, safe="") if encode_id else connection_id
    return f"/{stage}/{at}connections/{wire_id}"


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def raw_request(
    gateway: GatewayThread,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    sign: bool = True,
    access_key: str | None = None,
    secret_key: str | None = None,
    token: str | None = None,
    region: str = "us-east-1",
    service: str = "execute-api",
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """Send ``path`` exactly as given (no re-quoting), optionally signed by botocore's SigV4Auth."""
    host = f"127.0.0.1:{gateway.port}"
    send_headers: dict[str, str] = dict(headers or {})
    if sign:
        request = AWSRequest(method=method, url=f"http://{host}{path}", data=body)
        credentials = Credentials(
            access_key or FAKE_ACCESS_KEY, secret_key or FAKE_SECRET_KEY, token
        )
        SigV4Auth(credentials, service, region).add_auth(request)
        # botocore signed the path as written in the URL; make sure it will be sent the same.
        assert urlsplit(request.url).path == path.partition("?")[0]
        send_headers.update({k: v for k, v in request.headers.items()})
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=WAIT)
    try:
        connection.request(method, path, body=body, headers=send_headers)
        response = connection.getresponse()
        return RawResponse(response.status, response.headers, response.read())
    finally:
        connection.close()
