"""One HTTP/1.1 exchange on a connection of a configured urllib3 pool: the fan-out's hot path.

requests configures the pool (proxies from the environment, CA bundle, TLS) and urllib3's own
connections connect, through the proxy's CONNECT tunnel when there is one, and verify the
certificate. Here a request goes out as one buffer and the answer is read straight from the
socket: no URL parsing, header objects, email-parser header reading or response wrapping per
request, which together cost more than signing and sending.
"""

from __future__ import annotations

import errno
import ssl
from dataclasses import dataclass
from http.client import RemoteDisconnected
from typing import TYPE_CHECKING, cast

from urllib3.exceptions import ProtocolError, ProxyError, SSLError

if TYPE_CHECKING:
    import socket

    import urllib3

MAX_HEAD = 65536  # bytes of status line and headers, as http.client allows
_READ = 65536


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: header names lower-cased, a repeated header's values joined by ", "."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


class Wire:
    """Exchanges on the connections of one urllib3 pool (thread-safe: the pool is)."""

    def __init__(self, pool: urllib3.HTTPConnectionPool, *, tunnel: bool, timeout: float) -> None:
        self._pool = pool
        self._tunnel = tunnel  # https through a proxy: CONNECT first, as urllib3 would
        self._timeout = timeout  # seconds, for connecting and for each read

    def exchange(self, request: bytes, *, bodiless: bool = False) -> Answer:
        """Send `request` (a whole HTTP/1.1 message) and read the answer.

        `bodiless`: the answer has no body whatever its headers say (HEAD). Raises urllib3's
        exceptions or OSError, as urllib3's own urlopen would.
        """
        pool = self._pool
        # A pooled connection (one the server dropped comes back closed), or a new one.
        conn = cast("urllib3.connection.HTTPConnection", pool._get_conn())
        reusable = False
        try:
            if conn.is_closed:
                self._connect(conn)
            sock: socket.socket = conn.sock
            try:
                sock.sendall(request)
            except OSError as exc:
                # The server may have answered and closed before reading it all (a 413):
                # read that answer, as urllib3 does.
                if not isinstance(exc, BrokenPipeError) and exc.errno not in (
                    errno.ECONNRESET,
                    errno.EPROTOTYPE,
                ):
                    raise
            answer, reusable = _Reader(sock).answer(bodiless)
            return answer
        finally:
            if not reusable:
                conn.close()
            pool._put_conn(conn)  # a closed connection reconnects when next taken

    def _connect(self, conn: urllib3.connection.HTTPConnection) -> None:
        """Connect (and verify) as urllib3's urlopen does, mapping failures the same way."""
        conn.timeout = self._timeout  # the socket keeps it: every later read waits as long
        try:
            if self._tunnel:
                self._pool._prepare_proxy(conn)
            else:
                conn.connect()
        except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
            error: Exception = exc
            if isinstance(exc, ssl.SSLError | ssl.CertificateError):
                error = SSLError(exc)
            if conn.proxy is not None and not conn.has_connected_to_proxy:
                raise ProxyError("Unable to connect to proxy", error) from exc
            raise error from exc


class _Reader:
    """Reads one answer from a socket: status line, headers, then a delimited body."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._data = b""

    def _more(self) -> bytes:
        chunk = self._sock.recv(_READ)
        if chunk:
            self._data += chunk
        return chunk

    def answer(self, bodiless: bool) -> tuple[Answer, bool]:
        """The answer, and whether the connection may carry another request."""
        while True:
            version, status, reason, headers = self._head()
            if not 100 <= status < 200 or status == 101:
                break  # 1xx interim answers (100 Continue) precede the real one
        connection = headers.get("connection", "").lower()
        reusable = version == "HTTP/1.1" and "close" not in connection
        coding = headers.get("transfer-encoding")
        if bodiless or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif coding is not None:
            if coding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                body, reusable = self._to_close(), False
            else:
                body = self._chunked()
        elif "content-length" in headers:
            body = self._exactly(_content_length(headers["content-length"]))
        else:
            body, reusable = self._to_close(), False
        return Answer(status, reason, headers, body), reusable and not self._data

    def _head(self) -> tuple[str, int, str, dict[str, str]]:
        while (end := self._data.find(b"\r\n\r\n")) < 0:
            if len(self._data) > MAX_HEAD:
                raise ProtocolError(f"the answer's headers are over {MAX_HEAD} bytes")
            if not self._more():
                if self._data:
                    raise ProtocolError("the server closed the connection mid-answer")
                raise ProtocolError(
                    "Connection aborted.",
                    RemoteDisconnected("Remote end closed connection without response"),
                )
        head, self._data = self._data[:end].decode("latin-1"), self._data[end + 4 :]
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        name = ""
        for line in lines:
            if line[:1] in (" ", "\t") and name:  # obsolete line folding
                headers[name] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise ProtocolError(f"a malformed header line in the answer: {line[:80]!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return version, int(code), reason.strip(), headers

    def _exactly(self, size: int) -> bytes:
        while len(self._data) < size:
            if not self._more():
                raise ProtocolError(
                    f"the server closed the connection {size - len(self._data)} bytes short"
                )
        body, self._data = self._data[:size], self._data[size:]
        return body

    def _line(self) -> bytes:
        while (end := self._data.find(b"\r\n")) < 0:
            if len(self._data) > MAX_HEAD:
                raise ProtocolError("a chunk header line is too long")
            if not self._more():
                raise ProtocolError("the server closed the connection mid-chunk")
        line, self._data = self._data[:end], self._data[end + 2 :]
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"a bad chunk size in the answer: {size_text[:20]!r}") from None
            if size == 0:
                while self._line():  # trailer fields, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            if self._exactly(2) != b"\r\n":
                raise ProtocolError("a chunk of the answer is longer than its size")

    def _to_close(self) -> bytes:
        while self._more():
            pass
        body, self._data = self._data, b""
        return body


def _content_length(value: str) -> int:
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1 or not (text := values.pop()).isdigit():
        raise ProtocolError(f"a bad Content-Length in the answer: {value[:40]!r}")
    return int(text)
