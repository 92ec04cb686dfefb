"""The WebSocket client side (`wsconn listen`): connect (signed if asked), learn this connection's
id, send, report what arrives, stop when the expectation is met.

The stack is aiohttp, from the `local` extra: the local gateway already speaks WebSocket with it
(one stack to know), and its client does all `listen` needs (handshake headers, subprotocols, the
refused handshake's status and headers, TLS contexts, proxies from the environment). It is imported
only when `listen` runs; without it, one line names the install command.

Flow: `prepare()` (URL, headers, SigV4 in headers or the query string) → `listen()` (an asyncio
session) → events to a `ListenSink` (render.py draws them) → a normal return (exit 0) or a
`WsconnError` carrying its exit code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, urlsplit

from wsconn import __version__
from wsconn.endpoint import Endpoint
from wsconn.errors import (
    ClientError,
    ConfigError,
    ExpectationNotMet,
    Forbidden,
    NetworkError,
    PayloadTooLarge,
    ServerError,
    Terminated,
    UsageError,
    WsconnError,
)

if TYPE_CHECKING:
    import ssl

    import aiohttp

    from wsconn.calls import Resolver
    from wsconn.streams import Streams

# Sent by --whoami: not JSON, so on an API without `$default` no route matches and the service
# answers with the Forbidden frame, which carries this connection's id.
WHOAMI_PROBE = "wsconn listen --whoami"
WHOAMI_WAIT = 3.0  # seconds to wait for that answer before saying the API has `$default`
CONNECT_TIMEOUT = 10.0  # seconds for TCP, TLS and the upgrade
CLOSE_TIMEOUT = 5.0  # seconds for our close handshake
USER_AGENT = f"wsconn/{__version__} (listen)"

# What a close code means on API Gateway (and wsconn local).
CLOSE_MEANINGS: dict[int, str] = {
    1000: "normal closure",
    1001: "going away: the idle timeout (10 minutes without data frames), the 2-hour limit, "
    "or the server shutting down",
    1002: "protocol error",
    1003: "binary frame refused: API Gateway accepts text frames only",
    1005: "closed without a status code",
    1006: "dropped: the connection ended without a close frame (network, or the server aborted it)",
    1007: "invalid text: a text frame that is not UTF-8",
    1008: "policy violation",
    1009: "message too big: over 32 KB in one frame",
    1011: "server error",
}
# Error frames are AWS's own answers to a frame (LOCAL-BACKEND.md §4), not the API's messages.
_ERROR_FRAME_KEYS = {"message", "connectionId", "requestId"}
_ERROR_FRAME_MESSAGES = {"Forbidden", "Internal server error"}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

Frame = str | bytes  # a text frame's text, or a binary frame's bytes
StdinMode = Literal["none", "lines", "prompt"]


class ListenSink(Protocol):
    """Where a session's events go (render.ListenOutput draws them in the chosen output mode)."""

    def connected(self, connection_id: str | None, url: str, subprotocol: str | None) -> None: ...
    def received(self, data: Frame) -> None: ...
    def sent(self, data: Frame, keepalive: bool) -> None: ...
    def closed(self, code: int, reason: str, by: str) -> None: ...
    def note(self, text: str) -> None: ...
    def read_line(self) -> str | None:
        """One line typed at the interactive prompt (blocking), None at end of input."""
        ...


def describe_close(code: int, by: str = "server") -> str:
    """What a close code means, in a few words."""
    if code == 1000 and by == "server":
        return "normal closure: the API deleted the connection (DeleteConnection, e.g. `wsconn disconnect`)"
    if code in CLOSE_MEANINGS:
        return CLOSE_MEANINGS[code]
    if 4000 <= code <= 4999:
        return "an application's own code"
    return "no standard meaning"


@dataclass(frozen=True)
class WsUrl:
    """A WebSocket URL as it goes on the wire: scheme ws/wss, Host header, path, raw query."""

    scheme: str
    host: str  # the Host header: lower-case host, a non-default port kept
    path: str  # wire path, "/" at least
    query: str  # as sent, without '?'; "" when none

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}" + (f"?{self.query}" if self.query else "")


def parse_url(text: str) -> WsUrl:
    """wss:// or ws:// as given; https:// and http:// (a stage URL) converted; the query kept."""
    from wsconn.endpoint import _wire_path

    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"URL {text!r} is not a valid URL: {exc}") from None
    scheme = {"wss": "wss", "ws": "ws", "https": "wss", "http": "ws"}.get(parts.scheme.lower())
    if scheme is None:
        raise UsageError(f"URL {text!r} must start with wss://, ws://, https:// or http://")
    if not parts.hostname:
        raise UsageError(f"URL {text!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"URL {text!r} must not contain a user name or password")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default_port = 443 if scheme == "wss" else 80
    if port not in (None, default_port):
        host = f"{host}:{port}"
    query = re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", parts.query)
    query = quote(query, safe="!$&'()*+,;=:@/?%-._~")
    return WsUrl(scheme, host, _wire_path(parts.path) or "/", query)


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` (as curl's -H) → (name, value)."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _HEADER_NAME.fullmatch(name):
        raise UsageError(f"-H {text!r} is not a header: write it as 'Name: value'")
    if any(ch in value for ch in "\r\n\0"):
        raise UsageError(f"-H {name}: a header value cannot hold a line break")
    return name, value.strip()


def read_send(value: str) -> Frame:
    """A --send value: TEXT, or @FILE (its bytes: a text frame if UTF-8, else a binary frame)."""
    if not value.startswith("@"):
        return value
    path = value[1:]
    if path == "-":
        raise UsageError("--send @-: lines piped on standard input are sent anyway; pipe them")
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def frame_text(data: Frame) -> str:
    """What --expect matches and what is printed: the text, or base64 of binary bytes."""
    return data if isinstance(data, str) else base64.b64encode(data).decode("ascii")


def error_frame_id(data: Frame) -> str | None:
    """The connectionId of AWS's Forbidden / Internal server error frame, else None."""
    if not isinstance(data, str) or not data.startswith("{"):
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    if (
        isinstance(parsed, dict)
        and set(parsed) == _ERROR_FRAME_KEYS
        and parsed["message"] in _ERROR_FRAME_MESSAGES
        and isinstance(parsed["connectionId"], str)
    ):
        return parsed["connectionId"]
    return None


@dataclass(frozen=True)
class ListenRequest:
    """What the user asked `wsconn listen` to do."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    subprotocols: tuple[str, ...] = ()
    sign: Literal["none", "headers", "query"] = "none"
    profile: str | None = None
    region: str | None = None
    ca_bundle: str | None = None
    whoami: bool = False
    sends: tuple[Frame, ...] = ()
    stdin: StdinMode = "none"
    expects: tuple[re.Pattern[str], ...] = ()
    count: int | None = None
    timeout: float | None = None
    keepalive: float | None = None
    keepalive_data: str = "{}"

    @property
    def asked(self) -> bool:
        """Whether an expectation was given (then the run ends when it is met, or fails)."""
        return bool(self.expects) or self.count is not None


def listen_request(
    *,
    url: str,
    headers: Sequence[str] = (),
    subprotocols: Sequence[str] = (),
    sign: bool = False,
    presign: bool = False,
    profile: str | None = None,
    region: str | None = None,
    ca_bundle: str | None = None,
    whoami: bool = False,
    sends: Sequence[str] = (),
    expects: Sequence[str] = (),
    count: int | None = None,
    timeout: float | None = None,
    keepalive: float | None = None,
    keepalive_data: str | None = None,
    output_mode: str,
    streams: Streams,
) -> ListenRequest:
    """The request `wsconn listen`'s options describe (a UsageError for a mistake in them)."""
    if keepalive_data is not None and keepalive is None:
        raise UsageError("--keepalive-data goes with --keepalive SECONDS")
    return ListenRequest(
        url=url,
        headers=tuple(parse_header(header) for header in headers),
        subprotocols=tuple(subprotocols),
        sign="query" if presign else "headers" if sign else "none",
        profile=profile,
        region=region,
        ca_bundle=ca_bundle,
        whoami=whoami,
        sends=tuple(read_send(value) for value in sends),
        stdin=stdin_mode(output_mode, streams),
        expects=tuple(_pattern(text) for text in expects),
        count=count,
        timeout=timeout,
        keepalive=keepalive,
        keepalive_data="{}" if keepalive_data is None else keepalive_data,
    )


def stdin_mode(output_mode: str, streams: Streams) -> StdinMode:
    """Piped stdin: its lines are sent. A terminal: the prompt (rich output) or its lines; none
    when this process runs in the background (reading the terminal would stop it)."""
    stdin = streams.stdin
    if stdin is None or stdin.closed:
        return "none"
    if not streams.stdin_is_terminal:
        return "lines"
    try:
        foreground = os.tcgetpgrp(stdin.fileno()) == os.getpgrp()
    except OSError:
        foreground = True
    if not foreground:
        return "none"
    return "prompt" if output_mode == "rich" else "lines"


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise UsageError(f"--expect {text!r} is not a regular expression: {exc}") from None


@dataclass(frozen=True)
class Handshake:
    """The upgrade request to make."""

    url: WsUrl  # as the user gave it (converted): shown, never holds a signature
    target: str  # what is requested: the URL, plus the presigned query when --presign
    headers: tuple[tuple[str, str], ...]
    signed: Literal["none", "headers", "query"]


def prepare(request: ListenRequest) -> Handshake:
    """The upgrade request: URL on the wire, headers, and SigV4 (in headers or the query)."""
    url = parse_url(request.url)
    headers = list(request.headers)
    names = {name.lower() for name, _ in headers}
    host = next((value for name, value in headers if name.lower() == "host"), url.host)
    if "user-agent" not in names:
        headers.append(("User-Agent", USER_AGENT))
    target = url.url
    if request.sign != "none":
        from wsconn.auth import Signer

        clash = names & {"authorization", "x-amz-date", "x-amz-security-token"}
        if clash:
            raise UsageError(f"-H {sorted(clash)[0]} and --sign both set it: give one")
        resolver = _resolver(request)
        # The region as the other commands find it: --region, the execute-api host's, the config's.
        endpoint = Endpoint("https", host, url.path, "URL")
        if request.region and endpoint.host_region not in (None, request.region):
            raise UsageError(
                f"--region {request.region} contradicts the host {host}, which is in "
                f"{endpoint.host_region}: drop --region or fix the URL"
            )
        region, _ = resolver.region(endpoint)
        signer = Signer(resolver.credentials(), region)
        if request.sign == "query":
            target = f"{url.scheme}://{url.host}{url.path}?" + signer.presign(
                "GET", host, url.path, url.query
            )
        else:
            signed = signer.sign("GET", host, url.path, b"", query=url.query)
            headers += [(name, value) for name, value in signed.headers.items() if name != "host"]
    if "host" not in names and host != url.host:
        headers.append(("Host", host))
    return Handshake(url, target, tuple(headers), request.sign)


def _resolver(request: ListenRequest) -> Resolver:
    from wsconn.calls import Resolver, Settings

    return Resolver(
        Settings(region=request.region, profile=request.profile, ca_bundle=request.ca_bundle)
    )


def listen(
    request: ListenRequest, handshake: Handshake, out: ListenSink, stdin: IO[str] | None = None
) -> None:
    """Connect, then run until the expectation is met, the server closes, the timeout, or Ctrl-C.

    Returns normally for exit 0; raises a WsconnError for every other outcome (KeyboardInterrupt
    for Ctrl-C and Terminated for SIGTERM, each after closing the connection).
    """
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f'wsconn listen needs the "local" extra ({exc.name} is not installed): '
            'pip install "wsconn[local]"'
        ) from None
    session = _Session(request, handshake, out, stdin)
    asyncio.run(session.run())


@dataclass
class _Progress:
    """What has arrived, against what was asked."""

    request: ListenRequest
    received: int = 0
    seen: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen = [False] * len(self.request.expects)

    def add(self, data: Frame) -> None:
        self.received += 1
        text = frame_text(data)
        for i, pattern in enumerate(self.request.expects):
            if not self.seen[i] and pattern.search(text):
                self.seen[i] = True

    @property
    def met(self) -> bool:
        if self.request.expects:
            return all(self.seen)
        return self.request.count is not None and self.received >= self.request.count

    @property
    def exhausted(self) -> bool:
        """--count with --expect: that many messages came and the expectations were not met."""
        return (
            bool(self.request.expects)
            and self.request.count is not None
            and self.received >= self.request.count
            and not self.met
        )

    def summary(self) -> str:
        count = self.request.count
        messages = f"{self.received} message{'s' if self.received != 1 else ''}"
        parts = [f"received {self.received} of {count}" if count is not None else messages]
        if self.request.expects:
            missing = [
                p.pattern
                for p, seen in zip(self.request.expects, self.seen, strict=True)
                if not seen
            ]
            found = [
                p.pattern for p, seen in zip(self.request.expects, self.seen, strict=True) if seen
            ]
            if found:
                parts.append("seen: " + ", ".join(repr(p) for p in found))
            parts.append("not seen: " + ", ".join(repr(p) for p in missing))
        return "; ".join(parts)


class _Stop(Exception):
    """Ends the receive loop: the expectation was met or failed, or the server closed."""


class _Session:
    def __init__(
        self,
        request: ListenRequest,
        handshake: Handshake,
        out: ListenSink,
        stdin: IO[str] | None,
    ) -> None:
        self.request = request
        self.stdin = stdin
        self.handshake = handshake
        self.out = out
        self.progress = _Progress(request)
        self.connection_id: str | None = None
        # Error frames still to come in answer to our own probe and keep-alives: not messages.
        self.silent_answers = 0
        self.last_sent = 0.0
        self.lines: asyncio.Queue[str | WsconnError | None] = asyncio.Queue()
        self._closed_reported = False

    # -- the whole run -----------------------------------------------------------------------

    async def run(self) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        deadline = None if self.request.timeout is None else loop.time() + self.request.timeout
        stop: asyncio.Future[int] = loop.create_future()
        handled: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Ctrl-C and SIGTERM close the connection properly before exiting (main thread only).
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._interrupt, stop, signum)
                handled.append(signum)
        try:
            async with aiohttp.ClientSession(trust_env=True) as session:
                connecting = asyncio.ensure_future(self._connect(session, deadline))
                racing: set[asyncio.Future[Any]] = {connecting, stop}
                await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                if not connecting.done():
                    connecting.cancel()
                    with contextlib.suppress(asyncio.CancelledError, WsconnError):
                        await connecting
                else:
                    ws = connecting.result()
                    try:
                        await self._converse(ws, deadline, stop)
                    finally:
                        if not ws.closed:
                            with contextlib.suppress(Exception):
                                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
                            if stop.done() or not self._closed_reported:
                                self.out.closed(1000, "", "client")
        finally:
            for number in handled:
                loop.remove_signal_handler(number)
        if stop.done():
            if stop.result() == signal.SIGTERM:
                raise Terminated("terminated (SIGTERM): the connection was closed first")
            raise KeyboardInterrupt

    def _interrupt(self, stop: asyncio.Future[int], signum: int) -> None:
        if not stop.done():
            stop.set_result(signum)

    async def _connect(
        self, session: aiohttp.ClientSession, deadline: float | None
    ) -> aiohttp.ClientWebSocketResponse:
        import aiohttp
        from yarl import URL

        wait = CONNECT_TIMEOUT
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - asyncio.get_running_loop().time()))
        where = self.handshake.url.host
        try:
            return await asyncio.wait_for(
                session.ws_connect(
                    URL(self.handshake.target, encoded=True),
                    headers=list(self.handshake.headers),
                    protocols=self.request.subprotocols,
                    ssl=_ssl_context(self.request, self.handshake.url),
                    autoping=True,
                    max_msg_size=0,
                ),
                wait,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise self._refused(exc) from None
        except aiohttp.ClientSSLError as exc:
            reason = _reason(exc)
            if "WRONG_VERSION_NUMBER" in reason:  # OpenSSL's words for an answer in plain HTTP
                reason = (
                    "the server does not speak TLS there "
                    "(a plain-HTTP server, such as wsconn local: use ws://)"
                )
            raise NetworkError(f"TLS with {where} failed: {reason}", error_type="tls") from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise NetworkError(
                f"cannot reach the proxy: {_reason(exc)}", error_type="proxy"
            ) from None
        except aiohttp.ClientHttpProxyError as exc:
            raise NetworkError(
                f"the proxy refused the connection to {where}: {exc.status} {exc.message}",
                error_type="proxy",
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise NetworkError(
                f"cannot connect to {where}: {_reason(exc)}", error_type="connection"
            ) from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise NetworkError(
                f"the connection to {where} failed during the handshake: {_reason(exc)}",
                error_type="connection",
            ) from None
        except asyncio.TimeoutError:
            raise NetworkError(
                f"no WebSocket connection to {where} within {wait:g}s", error_type="timeout"
            ) from None
        except aiohttp.InvalidURL:
            # Not aiohttp's text: it is the request URL, presigned (token, signature) with --presign.
            raise UsageError(f"URL {self.handshake.url.url!r} is not valid") from None

    def _refused(self, exc: aiohttp.WSServerHandshakeError) -> WsconnError:
        """A handshake answered with a status other than 101, mapped as the other commands map it."""
        status = exc.status
        error_type = None
        if exc.headers is not None:
            error_type = exc.headers.get("x-amzn-ErrorType", "").split(":")[0] or None
        what = f"{status} {_phrase(status)}"
        if error_type:
            what += f" ({error_type})"
        message = f"the WebSocket handshake with {self.handshake.url.host} was refused: {what}"
        if status in (401, 403):
            url = self.handshake.url
            hint = (
                # API Gateway answers a stage it does not have with 403 too: the likeliest
                # cause when the URL names none at all
                f"; the URL has no stage: it goes first in the path ({url.scheme}://{url.host}/"
                "{stage}), unless a custom domain's API mapping has an empty base path"
                if status == 403 and url.path == "/"
                else "; the signature or the caller's IAM permissions were refused"
                if self.handshake.signed != "none"
                else "; if $connect uses IAM authorization, add --sign"
                if status == 403
                else "; $connect's authorizer wants a token (-H or the query string)"
            )
            return Forbidden(message + hint, http_status=status, error_type=error_type)
        if 500 <= status <= 599:
            if status == 502:  # API Gateway's answer when the $connect integration fails
                message += (
                    "; $connect's integration failed (its function raised, timed out or "
                    "answered wrongly): see its logs"
                )
            return ServerError(message, http_status=status, error_type=error_type)
        if status == 101:
            return ClientError(
                f"the server at {self.handshake.url.host} answered the upgrade wrongly: {exc.message}",
                http_status=status,
            )
        if 200 <= status <= 299:
            message += ": not a WebSocket endpoint"
        return ClientError(message, http_status=status, error_type=error_type)

    async def _converse(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        deadline: float | None,
        stop: asyncio.Future[int],
    ) -> None:
        loop = asyncio.get_running_loop()
        early: list[aiohttp.WSMessage] = []
        if self.request.whoami:
            early = await self._whoami(ws, deadline, stop)
        self.out.connected(self.connection_id, self.handshake.url.url, ws.protocol)
        tasks = [asyncio.ensure_future(self._send_all(ws))]
        if self.request.keepalive:
            tasks.append(asyncio.ensure_future(self._keepalive(ws, self.request.keepalive)))
        try:
            for message in early:
                self._on_message(ws, message)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return self._timed_out()
                receive = asyncio.ensure_future(ws.receive())
                waiting: set[asyncio.Future[Any]] = {receive, stop, *tasks}
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in tasks:
                    if task in done:
                        task.result()  # a failed sender ends the run with its error
                        tasks.remove(task)
                if receive not in done:
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receive
                    if stop.done():
                        return
                    continue
                self._on_message(ws, receive.result())
        except _Stop:
            return
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _whoami(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        deadline: float | None,
        stop: asyncio.Future[int],
    ) -> list[aiohttp.WSMessage]:
        """Send the probe and read the id from its Forbidden answer; frames meanwhile are kept."""
        import aiohttp

        loop = asyncio.get_running_loop()
        await ws.send_str(WHOAMI_PROBE)
        self.silent_answers += 1
        until = loop.time() + WHOAMI_WAIT
        if deadline is not None:
            until = min(until, deadline)
        kept: list[aiohttp.WSMessage] = []
        while loop.time() < until and not stop.done():
            receive = asyncio.ensure_future(ws.receive())
            waiting: set[asyncio.Future[Any]] = {receive, stop}
            done, _ = await asyncio.wait(
                waiting, timeout=until - loop.time(), return_when=asyncio.FIRST_COMPLETED
            )
            if receive not in done:
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receive
                break
            message = receive.result()
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                answer = error_frame_id(message.data)
                if answer is not None:
                    self.silent_answers -= 1
                    self.connection_id = answer
                    return kept
            kept.append(message)
            if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                return kept  # closed (or failed) before the answer came
        if not stop.done():
            self.out.note(
                "--whoami: the probe got no Forbidden answer: the API probably has a $default "
                "route (which received the probe), so this connection's id is unknown"
            )
        return kept

    def _on_message(self, ws: aiohttp.ClientWebSocketResponse, message: aiohttp.WSMessage) -> None:
        import aiohttp

        if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            data: Frame = message.data
            if self.silent_answers and error_frame_id(data) is not None:
                self.silent_answers -= 1  # the answer to our keep-alive: not the API's message
                return
            self.out.received(data)
            self.progress.add(data)
            if self.progress.met:
                raise _Stop
            if self.progress.exhausted:
                raise ExpectationNotMet(
                    f"the expectation was not met within --count {self.request.count}: "
                    + self.progress.summary()
                )
            return
        if message.type == aiohttp.WSMsgType.ERROR:
            code = int(ws.close_code or 1006)
            reason = str(message.data)
        else:  # CLOSE, CLOSING, CLOSED: the server ended it (aiohttp answered its close frame)
            code = int(ws.close_code) if ws.close_code is not None else 1006
            reason = str(message.extra or "") if message.type == aiohttp.WSMsgType.CLOSE else ""
        self._closed_reported = True
        self.out.closed(code, reason, "server")
        self._server_closed(code, reason)

    def _server_closed(self, code: int, reason: str) -> None:
        what = f"the server closed the connection with {code}" + (f" {reason}" if reason else "")
        what += f" ({describe_close(code)})"
        if self.request.asked:
            raise ExpectationNotMet(
                f"{what} before the expectation was met: {self.progress.summary()}"
            )
        if code in (1000, 1001):
            raise _Stop
        if code == 1006:
            raise NetworkError(what, error_type="connection")
        if code == 1009:
            raise PayloadTooLarge(what)
        if code in (1011, 1012, 1013, 1014):
            raise ServerError(what)
        raise ClientError(what)

    def _timed_out(self) -> None:
        if self.request.asked:
            raise ExpectationNotMet(
                f"timed out after {self.request.timeout:g}s: {self.progress.summary()}"
            )
        # --timeout alone: listen that long, then close (exit 0).

    # -- sending -------------------------------------------------------------------------------

    async def _send(
        self, ws: aiohttp.ClientWebSocketResponse, data: Frame, keepalive: bool = False
    ) -> None:
        if isinstance(data, str):
            await ws.send_str(data)
        else:
            await ws.send_bytes(data)
        self.last_sent = asyncio.get_running_loop().time()
        self.out.sent(data, keepalive)

    async def _send_all(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """--send frames in order, then each line of stdin (piped, or typed at the prompt)."""
        for data in self.request.sends:
            await self._send(ws, data)
        if self.request.stdin == "none":
            return
        reader = self.out.read_line if self.request.stdin == "prompt" else _stdin_lines(self.stdin)
        _feed_from_thread(reader, self.lines, asyncio.get_running_loop())
        while True:
            line = await self.lines.get()
            if isinstance(line, WsconnError):
                raise line
            if line is None:
                if self.request.stdin == "prompt":
                    raise _Stop  # Ctrl-D at the prompt: close and exit 0
                return  # piped input ended: keep listening
            if line:  # blank lines are skipped
                await self._send(ws, line)

    async def _keepalive(self, ws: aiohttp.ClientWebSocketResponse, every: float) -> None:
        """A data frame when nothing was sent for `every` seconds (pings do not reset the
        service's idle timer)."""
        loop = asyncio.get_running_loop()
        self.last_sent = loop.time()
        while True:
            await asyncio.sleep(max(0.0, self.last_sent + every - loop.time()))
            if loop.time() >= self.last_sent + every:
                self.silent_answers += 1
                await self._send(ws, self.request.keepalive_data, keepalive=True)


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _reason(exc: BaseException) -> str:
    """The OS's words for a connection failure, without aiohttp's repetition."""
    inner = getattr(exc, "os_error", None) or exc.__cause__ or exc
    import ssl

    number = getattr(inner, "errno", None)
    if isinstance(number, int) and number > 0 and not isinstance(inner, ssl.SSLError):
        # asyncio's strerror holds a Python repr ("Connect call failed ('127.0.0.1', 8089)");
        # the OS's words for the errno are what a person reads (an SSLError's errno is not one)
        words = os.strerror(number)
        return words[:1].lower() + words[1:]
    return getattr(inner, "strerror", None) or str(inner) or type(inner).__name__


def _ssl_context(request: ListenRequest, url: WsUrl) -> ssl.SSLContext | bool:
    """For wss: verify with --ca-bundle, AWS_CA_BUNDLE or the profile's, else certifi's CAs."""
    if url.scheme != "wss":
        return True
    import ssl

    bundle, _ = _resolver(request).ca_bundle()
    if bundle is None:
        with contextlib.suppress(ImportError):
            import certifi

            bundle = certifi.where()
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the CA bundle {bundle}: {exc}") from None


def _stdin_lines(stream: IO[str] | None) -> Callable[[], str | None]:
    """A blocking reader of stdin's lines (without line ends); None at the end.

    Reads the file descriptor itself when there is one: a thread blocked in sys.stdin's buffered
    reader would hold its lock at interpreter exit (and Python aborts).
    """
    if stream is None:
        return lambda: None
    try:
        fd: int | None = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    pending = bytearray()
    finished = False
    number = 0

    def chunk() -> bytes:
        if fd is not None:
            return os.read(fd, 65536)
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            return stream.read(65536).encode("utf-8")
        return bytes(buffer.read1(65536) if hasattr(buffer, "read1") else buffer.read())

    def read_line() -> str | None:
        nonlocal finished, number
        while b"\n" not in pending and not finished:
            data = chunk()
            if data:
                pending.extend(data)
            else:
                finished = True
        if not pending:
            return None
        end = pending.find(b"\n")
        raw = bytes(pending[: end if end >= 0 else len(pending)])
        del pending[: end + 1 if end >= 0 else len(pending)]
        number += 1
        try:
            return raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"line {number} of standard input is not UTF-8 text") from None

    return read_line


def _feed_from_thread(
    read_line: Callable[[], str | None],
    queue: asyncio.Queue[str | WsconnError | None],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Read lines in a daemon thread (stdin blocks) and hand each to the loop, None last (or
    the error that ended the reading)."""

    def put(item: str | WsconnError | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the run is over
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            while True:
                line = read_line()
                put(line)
                if line is None:
                    return
        except WsconnError as error:
            put(error)
        except (OSError, EOFError):
            put(None)

    threading.Thread(target=run, name="wsconn-listen-input", daemon=True).start()
