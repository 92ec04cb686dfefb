"""The local gateway under abuse: it answers or drops the abuser, and keeps serving everyone else.

Each test abuses a fresh gateway while a ``bystander`` WebSocket client stays connected, then checks
that the gateway still works for others: a signed POST (``wsconn send``) reaches the bystander and
nothing else did, a signed GET answers, a new client can connect and be sent to, the gateway's thread
is alive and no ``error`` event was emitted. Raw sockets make the malformed traffic; botocore signs
what must be valid. Timeouts only bound waits for something broken; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection, connect

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, default_sigint, run_wsconn
from tests.gateway_util import (
    WAIT,
    EventLog,
    connection_path,
    open_client,
    raw_request,
    running_gateway,
)
from wsconn.local import GatewayThread

pytestmark = pytest.mark.timeout(60)

Bystander = tuple[ClientConnection, str]
_serial = itertools.count(1)


@pytest.fixture
def events() -> EventLog:
    return EventLog()


# For the tests that wait out a client that does not read: the gateway's bounds, shortened.
IMPATIENT = {"send_timeout": 1.0, "close_timeout": 1.0}


@pytest.fixture
def gateway(events: EventLog, request: pytest.FixtureRequest) -> Iterator[GatewayThread]:
    """A gateway; ``@pytest.mark.parametrize("gateway", [settings], indirect=True)`` configures it."""
    with running_gateway(events, **getattr(request, "param", {})) as gw:
        yield gw


@pytest.fixture
def bystander(gateway: GatewayThread, events: EventLog) -> Iterator[Bystander]:
    with open_client(gateway, events, "bystander") as pair:
        yield pair


# -- helpers ------------------------------------------------------------------------------------


def raw_socket(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed client or a dropped network would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the gateway will take: it may answer 400 and close before reading it all."""
    with contextlib.suppress(ConnectionError):
        sock.sendall(data)


_readers: weakref.WeakKeyDictionary[socket.socket, BinaryIO] = weakref.WeakKeyDictionary()


def read_status(sock: socket.socket) -> int | None:
    """The status of the next response on ``sock``; None if it was closed without one.

    One buffered reader per socket, so that pipelined responses read ahead are not lost.
    """
    reader = _readers.setdefault(sock, sock.makefile("rb"))
    try:
        line = reader.readline(65537)
        if not line:
            return None
        status = int(line.split()[1])
        length = 0
        while (header := reader.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        reader.read(length)
    except ConnectionError:
        return None
    return status


def signed_request(
    port: int, method: str, path: str, body: bytes = b"", *, content_length: int | None = None
) -> bytes:
    """A whole request, signed by botocore, as bytes; Content-Length may lie about the body."""
    request = AWSRequest(method=method, url=f"http://127.0.0.1:{port}{path}", data=body)
    SigV4Auth(Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY), "execute-api", "us-east-1").add_auth(
        request
    )
    headers = {"Host": f"127.0.0.1:{port}"}
    headers.update({k: v for k, v in request.headers.items() if k.lower() != "host"})
    headers["Content-Length"] = str(len(body) if content_length is None else content_length)
    head = f"{method} {path} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    return head.encode() + body


def upgrade_request(port: int, user_agent: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /dev HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"User-Agent: {user_agent}\r\n\r\n"
    ).encode()


def raw_websocket(
    gateway: GatewayThread, events: EventLog, user_agent: str, rcvbuf: int | None = None
) -> tuple[socket.socket, str]:
    """A WebSocket client on a bare socket (handshake by hand) and its connection id."""
    sock = raw_socket(gateway.port, rcvbuf)
    sock.sendall(upgrade_request(gateway.port, user_agent))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)  # one at a time: nothing after the handshake is consumed
        assert byte, f"closed during the handshake: {head!r}"
        head += byte
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock, str(events.wait_for("connect", userAgent=user_agent)["connectionId"])


def assert_still_serving(gateway: GatewayThread, events: EventLog, bystander: Bystander) -> None:
    """Everyone else is still served: POST to the bystander, GET, a newcomer; no error event."""
    client, connection_id = bystander
    message = f"still serving {next(_serial)}"
    run = run_wsconn("send", "--endpoint", gateway.endpoint, connection_id, message)
    assert run.code == 0, run.stderr
    # The next frame the bystander gets is this one: nothing from the abuse reached it.
    assert client.recv(timeout=WAIT) == message
    got = raw_request(gateway, "GET", connection_path("dev", connection_id))
    assert got.status == 200, got.body
    assert json.loads(got.body)["identity"]["userAgent"] == "bystander"
    with open_client(gateway, events, f"newcomer-{next(_serial)}") as (newcomer, newcomer_id):
        assert run_wsconn("send", "--endpoint", gateway.endpoint, newcomer_id, "hi").code == 0
        assert newcomer.recv(timeout=WAIT) == "hi"
    thread = gateway._thread
    assert thread is not None and thread.is_alive()
    assert events.named("error") == []


def wait_until_stalled(events: EventLog, poster: threading.Thread) -> None:
    """Wait until POSTs stop completing while ``poster`` still runs (a POST is held).

    Each 128 KiB POST to a reading socket completes in milliseconds; 0.3 s without one means held.
    """
    deadline = time.monotonic() + 2 * WAIT
    seen, since = -1, time.monotonic()
    while poster.is_alive() and time.monotonic() < deadline:
        count = len(events.named("post"))
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since > 0.3:
            return
        time.sleep(0.02)


class Poster(threading.Thread):
    """POSTs 128 KiB messages to one connection until one is not answered 200."""

    def __init__(self, gateway: GatewayThread, connection_id: str, limit: int = 120) -> None:
        super().__init__(daemon=True)
        self.gateway, self.connection_id, self.limit = gateway, connection_id, limit
        self.statuses: list[int] = []
        self.error_types: list[str | None] = []
        self.failure: BaseException | None = None

    def run(self) -> None:
        path = connection_path("dev", self.connection_id)
        try:
            for _ in range(self.limit):
                response = raw_request(self.gateway, "POST", path, b"x" * 131072)
                self.statuses.append(response.status)
                self.error_types.append(response.headers.get("x-amzn-ErrorType"))
                if response.status != 200:
                    return
        except BaseException as error:  # a timeout here means a POST hung
            self.failure = error


def _disconnect_of(events: EventLog, connection_id: str) -> dict[str, object]:
    return events.wait_for("disconnect", connectionId=connection_id)


# -- malformed requests --------------------------------------------------------------------------

_RNG = random.Random(6)
_UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
MALFORMED: dict[str, bytes] = {
    "random-bytes": bytes(_RNG.randrange(256) for _ in range(4096)),
    "bare-method": b"GET\r\n\r\n",
    "no-version": b"GET /dev\r\n\r\n",
    "nul-bytes": b"\x00" * 64 + b"\r\n\r\n",
    "tls-client-hello": bytes.fromhex("16030100c8010000c40303") + bytes(200),
    "bad-version": b"GET /dev/@connections/x HTTP/9.9\r\nHost: x\r\n\r\n",
    "space-in-target": b"GET /dev/@conn ections/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "control-char-in-header": b"GET /dev HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n",
    "header-without-colon": b"GET /dev HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    "bad-content-length": b"POST /dev/@connections/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "negative-content-length": b"POST /dev/@connections/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "length-and-chunked": (
        b"POST /dev/@connections/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "bad-chunk-size": (
        b"POST /dev/@connections/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n"
    ),
    "lf-only-unsigned": b"GET /dev/@connections/x HTTP/1.1\nHost: x\n\n",
    "websocket-bad-key": b"GET /dev HTTP/1.1\r\nHost: x\r\n"
    + _UPGRADE
    + b"Sec-WebSocket-Key: x\r\n\r\n",
    "websocket-post": b"POST /dev HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    + _UPGRADE
    + b"\r\n",
    "huge-target": b"GET /dev/@connections/" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


def test_garbage_bytes_cut_a_request_short(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    """Half a request line, then FIN; half a request line, then a reset; bytes after a reset."""
    for ending in ("close", "reset"):
        for _ in range(10):
            sock = raw_socket(gateway.port)
            sock.sendall(b"POST /dev/@connec")
            sock.close() if ending == "close" else reset(sock)
    assert_still_serving(gateway, events, bystander)


def test_garbage_on_an_open_websocket_closes_only_that_client(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    sock, connection_id = raw_websocket(gateway, events, "garbage-frames")
    with sock:
        send_quietly(sock, b"\xff" * 64)  # reserved opcode, unmasked: a protocol error
        assert sock.recv(1) == b"\x88"  # the gateway answered with a close frame
    disconnect = _disconnect_of(events, connection_id)
    assert (disconnect["code"], disconnect["by"]) == (1002, "protocol")
    assert_still_serving(gateway, events, bystander)


# -- huge headers --------------------------------------------------------------------------------

_HUGE = "a" * 65536
HUGE_HEADERS: dict[str, bytes] = {
    "one-64KiB-header": f"GET /dev/@connections/x HTTP/1.1\r\nHost: x\r\nX-Big: {_HUGE}\r\n\r\n".encode(),
    "64KiB-header-on-upgrade": b"GET /dev HTTP/1.1\r\nHost: x\r\n"
    + _UPGRADE
    + f"Sec-WebSocket-Key: {base64.b64encode(bytes(16)).decode()}\r\nX-Big: {_HUGE}\r\n\r\n".encode(),
    "64KiB-header-name": f"GET /dev HTTP/1.1\r\nHost: x\r\n{_HUGE}: v\r\n\r\n".encode(),
    "1000-headers": b"GET /dev/@connections/x HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    + b"\r\n",
    "120-headers-of-8000-bytes": b"GET /dev/@connections/x HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 8000) for i in range(120))
    + b"\r\n",
}


BAD_REQUESTS = {**MALFORMED, **HUGE_HEADERS}


@pytest.mark.parametrize("payload", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_malformed_requests_and_huge_headers_are_refused_and_others_still_served(
    gateway: GatewayThread, events: EventLog, bystander: Bystander, payload: bytes
) -> None:
    with raw_socket(gateway.port) as sock:
        send_quietly(sock, payload)
        status = read_status(sock)
    assert status is None or 400 <= status < 500, status
    assert_still_serving(gateway, events, bystander)


def test_a_signed_post_with_large_extra_headers_is_delivered(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    client, connection_id = bystander
    request = signed_request(gateway.port, "POST", connection_path("dev", connection_id), b"big")
    head, _, body = request.partition(b"\r\n\r\n")
    extra = b"".join(b"\r\nX-Pad-%d: %s" % (i, b"p" * 4000) for i in range(100))
    with raw_socket(gateway.port) as sock:
        sock.sendall(head + extra + b"\r\n\r\n" + body)
        assert read_status(sock) == 200
    assert client.recv(timeout=WAIT) == "big"
    assert_still_serving(gateway, events, bystander)


# -- bodies that do not match their Content-Length -----------------------------------------------


def test_a_body_longer_than_declared_delivers_only_the_declared_bytes(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    client, connection_id = bystander
    path = connection_path("dev", connection_id)
    first = signed_request(gateway.port, "POST", path, b"hello")
    with raw_socket(gateway.port) as sock:
        # The surplus is read as the next request on the connection: garbage, so 400 (or closed).
        # aiohttp parses what arrived together at once: garbage in the same segment makes it
        # refuse the whole segment with 400. Either way only "hello" may ever be delivered.
        sock.sendall(first + b"SURPLUS BYTES \x00\x01 not a request\r\n\r\n")
        status = read_status(sock)
        second = read_status(sock) if status == 200 else None
    assert status in (200, 400) and second in (None, 400), (status, second)
    if status == 200:
        assert client.recv(timeout=WAIT) == "hello"
    assert_still_serving(gateway, events, bystander)  # and nothing else arrived
    # A surplus that is itself a whole signed request is answered too (pipelining).
    with raw_socket(gateway.port) as sock:
        sock.sendall(first + signed_request(gateway.port, "POST", path, b"world"))
        assert (read_status(sock), read_status(sock)) == (200, 200)
    assert (client.recv(timeout=WAIT), client.recv(timeout=WAIT)) == ("hello", "world")
    assert_still_serving(gateway, events, bystander)


@pytest.mark.parametrize("ending", ["close", "reset", "stall"])
def test_a_body_shorter_than_declared_delivers_nothing(
    gateway: GatewayThread, events: EventLog, bystander: Bystander, ending: str
) -> None:
    _client, connection_id = bystander
    body = b"0123456789" * 100
    request = signed_request(gateway.port, "POST", connection_path("dev", connection_id), body)
    sock = raw_socket(gateway.port)
    sock.sendall(request[: -len(body) + 10])  # headers and 10 of the 1000 bytes declared
    if ending == "stall":
        # While it stalls, everyone else is served (and it delivers nothing meanwhile).
        assert_still_serving(gateway, events, bystander)
        sock.close()
    elif ending == "close":
        sock.close()
    else:
        reset(sock)
    # A client leaving mid-body is not a gateway error; and nothing partial was delivered.
    assert_still_serving(gateway, events, bystander)
    assert all(event["bytes"] not in (10, len(body)) for event in events.named("post"))


# -- slow senders --------------------------------------------------------------------------------


def test_slow_senders_do_not_hold_up_anyone_else(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    client, connection_id = bystander
    stop, halfway, go = threading.Event(), threading.Event(), threading.Event()
    slow_status: list[int | None] = []

    def slowloris(sock: socket.socket) -> None:
        """Headers that never end, a byte at a time."""
        send_quietly(sock, b"GET /dev/@connections/x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while not stop.wait(0.05):
            send_quietly(sock, b"z")

    def slow_post() -> None:
        """A whole signed POST, trickled a byte at a time, held halfway until told to go on."""
        request = signed_request(
            gateway.port, "POST", connection_path("dev", connection_id), b"slow but whole"
        )
        with raw_socket(gateway.port) as sock:
            for index, byte in enumerate(request):
                if index == len(request) // 2:
                    halfway.set()
                    go.wait(2 * WAIT)
                sock.sendall(bytes([byte]))
                time.sleep(0.001)
            slow_status.append(read_status(sock))

    lorises = [raw_socket(gateway.port) for _ in range(20)]
    threads = [threading.Thread(target=slowloris, args=(s,), daemon=True) for s in lorises]
    threads.append(threading.Thread(target=slow_post, daemon=True))
    for thread in threads:
        thread.start()
    try:
        assert halfway.wait(WAIT)
        assert_still_serving(gateway, events, bystander)
        go.set()
        threads[-1].join(2 * WAIT)
        assert slow_status == [200]
        assert client.recv(timeout=WAIT) == "slow but whole"
        assert_still_serving(gateway, events, bystander)
    finally:
        go.set()
        stop.set()
        for thread in threads:
            thread.join(WAIT)
        for sock in lorises:
            sock.close()
    assert_still_serving(gateway, events, bystander)


# -- abrupt disconnects --------------------------------------------------------------------------


def test_a_reset_during_a_post_to_that_client_answers_410(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    """The client stops reading, a POST to it waits for room, then the client resets."""
    victim, connection_id = raw_websocket(gateway, events, "victim", rcvbuf=4096)
    poster = Poster(gateway, connection_id)
    poster.start()
    wait_until_stalled(events, poster)
    reset(victim)
    poster.join(3 * WAIT)
    assert not poster.is_alive() and poster.failure is None, poster.failure
    assert poster.statuses[-1] == 410 and set(poster.statuses[:-1]) <= {200}
    assert poster.error_types[-1] == "GoneException"
    assert _disconnect_of(events, connection_id)["code"] == 1006
    assert_still_serving(gateway, events, bystander)


def test_a_reset_in_the_middle_of_a_burst_of_posts(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    """A reading client resets after 10 of 50 messages: every POST answers 200 or 410."""
    victim, connection_id = raw_websocket(gateway, events, "burst-victim")
    statuses: list[int] = []

    def burst() -> None:
        path = connection_path("dev", connection_id)
        for index in range(50):
            statuses.append(raw_request(gateway, "POST", path, b"m%d" % index).status)

    poster = threading.Thread(target=burst, daemon=True)
    poster.start()
    received = b""
    while received.count(b"\x81") < 10:  # text frames: 0x81, 2-3 byte payloads
        chunk = victim.recv(4096)
        assert chunk
        received += chunk
    reset(victim)
    poster.join(3 * WAIT)
    assert not poster.is_alive() and len(statuses) == 50
    first_gone = statuses.index(410) if 410 in statuses else len(statuses)
    assert set(statuses[:first_gone]) <= {200} and set(statuses[first_gone:]) <= {410}
    assert first_gone >= 10
    _disconnect_of(events, connection_id)
    assert_still_serving(gateway, events, bystander)


def test_resets_during_websocket_handshakes_leave_nothing_behind(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    sockets: list[socket.socket] = []
    for index in range(30):
        sock = raw_socket(gateway.port)
        request = upgrade_request(gateway.port, f"handshake-{index}")
        if index % 3 == 0:
            sock.sendall(request[: len(request) // 2])  # reset mid-request
            reset(sock)
        elif index % 3 == 1:
            sock.sendall(request)  # reset before the 101 could be read
            reset(sock)
        else:
            sock.sendall(request)  # reset later, unread
            sockets.append(sock)
    for sock in sockets:
        reset(sock)
    assert_still_serving(gateway, events, bystander)
    # Every session that started has ended: only the bystander is still connected.
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if len(events.named("connect")) - len(events.named("disconnect")) == 1:
            break
        time.sleep(0.05)
    assert len(events.named("connect")) - len(events.named("disconnect")) == 1
    assert len(cast(Any, gateway)._gateway._sessions) == 1


@pytest.mark.parametrize("gateway", [IMPATIENT], ids=["impatient"], indirect=True)
def test_a_post_to_a_client_that_does_not_read_is_bounded(
    gateway: GatewayThread, events: EventLog, bystander: Bystander
) -> None:
    """Its buffers full, the client is dropped (1006) and the held POST answers 410."""
    victim, connection_id = raw_websocket(gateway, events, "not-reading", rcvbuf=4096)
    with victim:
        poster = Poster(gateway, connection_id)
        poster.start()
        wait_until_stalled(events, poster)
        # A POST is held by the client that does not read: everyone else is still served.
        assert poster.is_alive()
        assert_still_serving(gateway, events, bystander)
        poster.join(3 * WAIT)
        assert not poster.is_alive() and poster.failure is None, poster.failure
        assert poster.statuses[-1] == 410 and set(poster.statuses[:-1]) <= {200}
        disconnect = _disconnect_of(events, connection_id)
        assert (disconnect["code"], disconnect["reason"], disconnect["by"]) == (
            1006,
            "client not reading",
            "gateway",
        )
        assert raw_request(gateway, "GET", connection_path("dev", connection_id)).status == 410
    assert_still_serving(gateway, events, bystander)


def test_the_gateway_stops_while_a_client_does_not_read(events: EventLog) -> None:
    with running_gateway(events, **IMPATIENT) as gateway:
        victim, connection_id = raw_websocket(gateway, events, "not-reading", rcvbuf=4096)
        with victim:
            poster = Poster(gateway, connection_id)
            poster.start()
            wait_until_stalled(events, poster)
            stopper = threading.Thread(target=gateway.stop, daemon=True)
            stopper.start()
            stopper.join(4 * WAIT)  # a hang bound, far above a normal close handshake
            assert not stopper.is_alive(), "stop() hung on a client that does not read"
            poster.join(WAIT)
            assert not poster.is_alive()
    assert _disconnect_of(events, connection_id)["code"] in (1001, 1006)


# -- many clients --------------------------------------------------------------------------------


def test_a_broadcast_reaches_each_of_300_clients_exactly_once(
    gateway: GatewayThread, events: EventLog, bystander: Bystander, tmp_path: Path
) -> None:
    count = 300
    counts = [0] * count
    ready, done = threading.Event(), threading.Event()

    async def clients() -> None:
        sockets = [
            await async_connect(gateway.ws_url, user_agent_header=f"crowd-{i}", open_timeout=WAIT)
            for i in range(count)
        ]

        async def drain(index: int) -> None:
            with contextlib.suppress(Exception):
                async for message in sockets[index]:
                    counts[index] += 1 if message == "to everyone" else 1000

        drains = [asyncio.create_task(drain(i)) for i in range(count)]
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 4 * WAIT)
        await asyncio.gather(*(ws.close() for ws in sockets))
        await asyncio.wait(drains, timeout=WAIT)

    crowd = threading.Thread(target=asyncio.run, args=(clients(),), daemon=True)
    crowd.start()
    try:
        assert ready.wait(4 * WAIT)

        def crowd_ids() -> dict[str, str]:
            connects = events.named("connect")
            return {str(e["userAgent"]): str(e["connectionId"]) for e in connects}

        # The gateway emits connect just after sending the 101: it may trail the clients a little.
        deadline = time.monotonic() + WAIT
        while len(ids := crowd_ids()) < count + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        ids.pop("bystander", None)
        assert len(ids) == count
        id_file = tmp_path / "ids.txt"
        id_file.write_text("".join(f"{ids[f'crowd-{i}']}\n" for i in range(count)))
        run = run_wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(id_file), "-d", "to everyone"
        )
        assert run.code == 0, run.stderr
        deadline = time.monotonic() + WAIT
        while min(counts) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert_still_serving(gateway, events, bystander)  # a round trip: late extras show up
    finally:
        done.set()
        crowd.join(2 * WAIT)
    assert counts == [1] * count
    assert len([e for e in events.named("post") if e["bytes"] == len("to everyone")]) == count


# -- the `wsconn local` process --------------------------------------------------------------------


def test_the_wsconn_local_process_survives_the_abuse_mix() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "wsconn", "local", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    events = EventLog()
    stderr: list[bytes] = []

    def drain_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            events.append(dict(json.loads(line)))

    def drain_stderr() -> None:
        assert process.stderr is not None
        stderr.extend(process.stderr)

    readers = [threading.Thread(target=f, daemon=True) for f in (drain_stdout, drain_stderr)]
    for reader in readers:
        reader.start()
    try:
        listening = events.wait_for("listening")
        port = int(str(listening["endpoint"]).rsplit(":", 1)[1].split("/")[0])
        target = cast(GatewayThread, type("Target", (), {"port": port})())
        for payload in list(MALFORMED.values()) + list(HUGE_HEADERS.values()):
            with raw_socket(port) as sock:
                send_quietly(sock, payload)
                read_status(sock)
        for index in range(10):
            sock = raw_socket(port)
            sock.sendall(upgrade_request(port, f"reset-{index}"))
            reset(sock)
            sock = raw_socket(port)
            sock.sendall(b"POST /dev/@connections/x HTTP/1.1\r\nContent-Length: 99\r\n\r\nabc")
            reset(sock)
        with connect(str(listening["wsUrl"]), user_agent_header="survivor") as client:
            connection_id = str(events.wait_for("connect", userAgent="survivor")["connectionId"])
            run = run_wsconn("send", "--endpoint", str(listening["endpoint"]), connection_id, "ok")
            assert run.code == 0, run.stderr
            assert client.recv(timeout=WAIT) == "ok"
            got = raw_request(target, "GET", connection_path("dev", connection_id))
            assert got.status == 200
        assert process.poll() is None
        assert events.named("error") == []
    finally:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(WAIT)
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
        for reader in readers:
            reader.join(WAIT)
    assert process.returncode == 0
    # Malformed requests are answered 400 by aiohttp; nothing reaches the user's terminal as a
    # traceback, from aiohttp's log or from the gateway's own code.
    assert b"Traceback" not in b"".join(stderr)
