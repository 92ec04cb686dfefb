"""The fan-out's own HTTP/1.1 exchange (wsconn/wire.py): over TLS, through proxies (plain and
CONNECT), and on every answer shape a server may give, each through `wsconn send --ids`."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import Run, run_wsconn
from tests.gateway_util import EventLog
from wsconn.local.gateway import GatewayConfig, GatewayThread

Wsconn = Callable[..., Run]


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext
    bundle: Path


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A throwaway CA, a certificate for 127.0.0.1, and the bundle a user would pass."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return Tls(server, client, bundle)


@contextmanager
def gateway_with_clients(
    count: int, tls: Tls | None = None
) -> Iterator[tuple[GatewayThread, list[str], dict[str, list[str | bytes]]]]:
    """A local gateway (https when `tls`) and `count` live WebSocket clients: their ids, and
    what each receives."""
    events = EventLog()
    config = GatewayConfig(port=0, tls=tls.server if tls else None)
    with GatewayThread(config, on_event=events.append) as gateway, ExitStack() as stack:
        received: dict[str, list[str | bytes]] = {}
        for number in range(count):
            agent = f"client-{number}"
            ws = stack.enter_context(
                connect(
                    gateway.ws_url,
                    ssl=tls.client if tls else None,
                    user_agent_header=agent,
                    open_timeout=10,
                )
            )
            cid = str(events.wait_for("connect", userAgent=agent)["connectionId"])
            received[cid] = []

            def drain(ws: Any = ws, cid: str = cid) -> None:
                with suppress(ConnectionClosed):
                    for message in ws:
                        received[cid].append(message)

            threading.Thread(target=drain, daemon=True).start()
        yield gateway, list(received), received


def wait_for(received: dict[str, list[str | bytes]], each: int) -> None:
    """Until every client has `each` messages (10 s at most)."""
    import time

    deadline = time.monotonic() + 10
    while any(len(got) < each for got in received.values()) and time.monotonic() < deadline:
        time.sleep(0.02)


def outcomes(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_fan_out_over_tls_delivers_each_once_and_refuses_an_untrusted_certificate(
    tls: Tls, tmp_path: Path, wsconn: Wsconn
) -> None:
    with gateway_with_clients(3, tls) as (gateway, ids, received):
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(ids * 4) + "\n")
        send = ["send", "--endpoint", gateway.endpoint, "--ids", str(ids_file), "-o", "json"]
        untrusted = wsconn(*send, "-d", "x", "-j", "2")
        assert untrusted.code == 7, untrusted.stderr
        assert {o["errorType"] for o in outcomes(untrusted)} == {"tls"}
        assert (
            "TLS: cannot verify the certificate of 127.0.0.1" in outcomes(untrusted)[0]["message"]
        )
        trusted = wsconn(*send, "-d", "hi", "-j", "4", "--ca-bundle", str(tls.bundle))
        assert trusted.code == 0, trusted.stderr
        assert [o["outcome"] for o in outcomes(trusted)] == ["sent"] * 12
        wait_for(received, 4)
        assert received == {cid: ["hi"] * 4 for cid in ids}  # the untrusted run sent nothing


class _Proxy(threading.Thread):
    """An HTTP proxy on loopback: absolute-form requests forwarded, CONNECT tunnelled.

    Records each request line and its Proxy-Authorization header.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _head(self, sock: socket.socket, data: bytes) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        data = b""
        try:
            while True:
                head, data = self._head(client, data)
                line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for header in header_lines:
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                with self.lock:
                    self.seen.append((line, headers.get("proxy-authorization")))
                method, target, _ = line.split(" ")
                if method == "CONNECT":
                    host, port = target.rsplit(":", 1)
                    upstream = socket.create_connection((host, int(port)))
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self._pipe(client, upstream, data)
                    return
                # Absolute form: forward as origin form, then relay exactly one answer.
                rest = target.split("://", 1)[1]
                hostport, _, path = rest.partition("/")
                if upstream is None:
                    host, port = hostport.rsplit(":", 1)
                    upstream = socket.create_connection((host, int(port)))
                size = int(headers.get("content-length", "0"))
                while len(data) < size:
                    data += client.recv(65536)
                body, data = data[:size], data[size:]
                kept = [h for h in header_lines if not h.lower().startswith("proxy-")]
                request = "\r\n".join([f"{method} /{path} HTTP/1.1", *kept, "", ""])
                upstream.sendall(request.encode("latin-1") + body)
                answer_head, answer_rest = self._head(upstream, b"")
                length = 0
                for header in answer_head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = header.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(answer_rest) < length:
                    answer_rest += upstream.recv(65536)
                client.sendall(answer_head + b"\r\n\r\n" + answer_rest)
        except (ConnectionError, OSError):
            pass
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    @staticmethod
    def _pipe(one: socket.socket, other: socket.socket, pending: bytes) -> None:
        if pending:
            other.sendall(pending)
        while True:
            ready, _, _ = select.select([one, other], [], [], 30)
            if not ready:
                return
            for sock in ready:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                (other if sock is one else one).sendall(chunk)

    def close(self) -> None:
        self.listener.close()


@contextmanager
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Proxy]:
    server = _Proxy()
    server.start()
    url = f"http://user:pa%20ss@127.0.0.1:{server.port}"
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.delenv("NO_PROXY")
    try:
        yield server
    finally:
        server.close()


BASIC = "Basic dXNlcjpwYSBzcw=="  # user:pa ss


def test_fan_out_through_an_http_proxy_sends_absolute_urls_with_proxy_credentials(
    tmp_path: Path, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gateway_with_clients(2) as (gateway, ids, received), proxy(monkeypatch) as seen_by:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(ids * 3) + "\n")
        run = wsconn("send", "--endpoint", gateway.endpoint, "--ids", str(ids_file), "-d", "p")
        assert run.code == 0, run.stderr
        wait_for(received, 3)
        assert received == {cid: ["p"] * 3 for cid in ids}
        assert len(seen_by.seen) == 6
        for line, authorization in seen_by.seen:
            assert line.startswith(f"POST {gateway.endpoint}/@connections/"), line
            assert authorization == BASIC


def test_fan_out_over_tls_through_a_connect_proxy(
    tls: Tls, tmp_path: Path, wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gateway_with_clients(2, tls) as (gateway, ids, received), proxy(monkeypatch) as seen_by:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(ids * 3) + "\n")
        run = wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids_file), "-d", "t",
            "--ca-bundle", str(tls.bundle), "-j", "2",
        )  # fmt: skip
        assert run.code == 0, run.stderr
        wait_for(received, 3)
        assert received == {cid: ["t"] * 3 for cid in ids}
        port = gateway.endpoint.split(":")[2].split("/")[0]
        assert seen_by.seen  # one CONNECT per pooled connection, at most -j of them
        assert len(seen_by.seen) <= 2
        for line, authorization in seen_by.seen:
            assert line.startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.")
            assert authorization == BASIC


@dataclass
class RawServer:
    """A loopback server answering each request with the next raw bytes of a script (the last
    repeats); `close` after an answer hangs up. Counts connections and requests."""

    answers: list[tuple[bytes, bool]]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}/dev"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        data = b""
        with client:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                size = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        size = int(value)
                while len(data) < size:
                    data += client.recv(65536)
                data = data[size:]
                with self.lock:
                    self.requests.append(head)
                    answer, close = self.answers[min(len(self.requests), len(self.answers)) - 1]
                for byte in range(0, len(answer), 7):  # in small pieces, as a slow network would
                    client.sendall(answer[byte : byte + 7])
                if close:
                    return

    def close(self) -> None:
        self.listener.close()


@contextmanager
def raw_server(*answers: tuple[bytes, bool]) -> Iterator[RawServer]:
    server = RawServer(list(answers))
    try:
        yield server
    finally:
        server.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def fan_out(server: RawServer, tmp_path: Path, count: int, *extra: str) -> Run:
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"id{n}=\n" for n in range(count)))
    return run_wsconn(
        "send", "--endpoint", server.endpoint, "--ids", str(ids), "-d", "x", "-o", "json",
        "-j", "1", *extra,
    )  # fmt: skip


def test_one_connection_carries_every_request_while_the_server_keeps_it(tmp_path: Path) -> None:
    with raw_server((OK, False)) as server:
        run = fan_out(server, tmp_path, 5)
        assert run.code == 0, run.stderr
        assert server.connections == 1
        assert len(server.requests) == 5


def test_a_closed_or_undelimited_answer_is_read_to_its_end_and_not_reused(tmp_path: Path) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    to_eof = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    with raw_server((closing, True), (to_eof, True), (OK, False)) as server:
        run = fan_out(server, tmp_path, 4)
        assert run.code == 0, run.stderr
        assert [o["outcome"] for o in outcomes(run)] == ["sent"] * 4
        assert server.connections == 3  # a new one after each close, then kept


def test_a_chunked_error_answer_is_read_whole_and_the_connection_kept(tmp_path: Path) -> None:
    body = b'{"message":"Forbidden"}'
    chunked = (
        b"HTTP/1.1 403 Forbidden\r\nx-amzn-ErrorType: ForbiddenException:extra\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:]))
        + b"0\r\nx-trailer: 1\r\n\r\n"
    )
    with raw_server((chunked, False), (OK, False)) as server:
        run = fan_out(server, tmp_path, 2)
        assert run.code == 4, run.stderr
        first, second = outcomes(run)
        assert (first["httpStatus"], first["errorType"]) == (403, "ForbiddenException")
        assert "Forbidden" in first["message"]
        assert second["outcome"] == "sent"
        assert server.connections == 1


def test_interim_1xx_answers_are_skipped(tmp_path: Path) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    with raw_server((answer, False)) as server:
        run = fan_out(server, tmp_path, 2)
        assert run.code == 0, run.stderr
        assert server.connections == 1


def test_repeated_headers_and_retry_after_are_read(tmp_path: Path) -> None:
    throttled = (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nx-amzn-ErrorType: "
        b"LimitExceededException\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"
    )
    with raw_server((throttled, False), (OK, False)) as server:
        run = fan_out(server, tmp_path, 1)
        assert run.code == 0, run.stderr
        assert outcomes(run)[0]["attempts"] == 2


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "5 bytes short"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"", "closed the connection without answering"),
    ],
)
def test_a_broken_answer_is_a_network_error_of_that_id(
    tmp_path: Path, answer: bytes, words: str
) -> None:
    with raw_server((answer, True)) as server:
        run = fan_out(server, tmp_path, 1, "--retries", "1")
        assert run.code == 7, run.stderr
        (outcome,) = outcomes(run)
        assert outcome["errorType"] == "connection"
        assert outcome["attempts"] == 2  # a connection error is retried, as before
        assert words in outcome["message"]
