"""A local stand-in for API Gateway's WebSocket endpoint and its ``@connections`` management API.

One port serves both: a WebSocket upgrade at ``/{stage}`` (any query string) and the management API
at ``/{stage}/@connections/{id}``. The raw request target is parsed by hand, never a decoded path,
so that ``@``/``%40`` and percent-encoded ids behave as on AWS and the signature can be checked
over the bytes sent.

Management requests are checked in AWS's order, the first failing check answers:

1. route: stage, ``@connections``, one non-empty id segment, method POST/GET/DELETE (else 403
   ``ForbiddenException`` ``{"message":"Forbidden"}``);
2. SigV4 signature, when auth is on (403, see :mod:`wsconn.local.sigv4`);
3. the id, once percent-decoded, has the shape the service issues: 15 of ``[A-Za-z0-9_-]`` then
   ``=`` (else 400 ``BadRequestException`` ``{"message":"Invalid connectionId: <id>"}``);
4. the body: at most 131072 bytes (else 413 ``PayloadTooLargeException``). A body over 1 MiB is
   refused with 413 before step 2: it is read and dropped (never buffered) so the client sees the
   answer, and one declared over 64 MiB is refused unread, closing the connection;
5. the connection is open (else 410 ``GoneException``, empty body).

Then POST delivers the body (valid UTF-8 as a text frame, anything else as a binary frame) and
answers 200 with an empty body; GET answers the connection JSON; DELETE closes the client with code
1000 and an empty reason, then answers 204. Every response carries ``x-amzn-RequestId``; errors
carry ``x-amzn-ErrorType`` and a JSON ``{"message": ...}`` body (410: empty body).

The client side: a binary frame from a client closes it with 1003; a message over 32 KiB with 1009
(aiohttp enforces the limit per message, so a fragmented message over 32 KiB is refused too,
whereas AWS limits frames: a documented deviation); permessage-deflate is not offered.
``lastActiveAt`` is the time of the client's last data frame or of the last POST delivered to it
(``connectedAt`` until then), and the idle timer restarts on the same events. Idle timeout and
maximum duration close the client with 1001 ``Going Away``; so does shutting the gateway down.
A client that stops reading cannot hold anything forever: once its socket buffers are full, a POST
to it (or its close handshake) waits at most ``send_timeout`` (``close_timeout``), 5 s by default,
then the connection is aborted (disconnect 1006 ``client not reading``) and the POST answers 410.
Upgrades are open by default (a ``$connect`` route with no authorization); with ``connect_auth``
``iam`` the upgrade must be SigV4-signed by the trusted credentials, in headers or presigned in
the query string (else 403), as an ``AWS_IAM`` ``$connect`` route. The backend (authorizer,
``$connect``, message routes, ``$disconnect``) is :mod:`wsconn.local.integration`'s; with no
route configured, every message is answered with AWS's Forbidden frame.
Pings are answered by aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import secrets
import ssl
import string
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import unquote

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, web

from wsconn.limits import IDLE_TIMEOUT, LOCAL_STAGE, MAX_DURATION, MAX_PAYLOAD
from wsconn.local import routes, sigv4
from wsconn.local.app import LOCAL_ACCOUNT, LOCAL_API_ID, App
from wsconn.local.callbacks import domain_name
from wsconn.local.credentials import LocalCredentials, resolve_credentials
from wsconn.local.events import Event, EventSink, make_event
from wsconn.local.integration import Integration, Refusal
from wsconn.local.routes import Caller
from wsconn.timestamps import iso_ms, utc_now

log = logging.getLogger(__name__)

MAX_POST_BYTES = MAX_PAYLOAD
MAX_MESSAGE_BYTES = 32768
# Bodies up to this are hashed, so an oversize one still gets its signature checked first.
HARD_BODY_LIMIT = 1024 * 1024
# Oversize bodies up to this are read and dropped; beyond it the connection is closed.
DISCARD_LIMIT = 64 * 1024 * 1024
LOCAL_USER_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT}:user/wsconn-local"
# The IAM user id an AWS_IAM $connect reports as caller and user (AIDA... as IAM users have).
LOCAL_USER_ID = "AIDAWSCONNLOCALUSER01"
NOT_READING = "client not reading"
GOING_AWAY = "Going Away"
BINARY_REFUSED = "Binary frames are not supported"

_ID_ALPHABET = string.ascii_letters + string.digits + "_-"
# The shape of every id the service issues (and so the only shape it does not answer 400 to).
_ISSUED_ID = re.compile(r"[A-Za-z0-9_-]{15}=")

CloseBy = Literal["client", "api", "idle-timeout", "max-duration", "gateway", "protocol"]


# Query parameters of a presigned upgrade that events never show (a session token is a secret).
_SECRET_PARAMS = {"x-amz-security-token", "x-amz-signature"}
_SECRET_PARAM = re.compile(r"(?i)(?<=[?&])(x-amz-security-token|x-amz-signature)=[^&]*")


def _shown_target(raw_target: str) -> str:
    """A request target as events show it: a presigned query's token and signature redacted."""
    return _SECRET_PARAM.sub(lambda match: f"{match.group(1)}=<redacted>", raw_target)


def default_connection_id() -> str:
    """A real-shaped id: 15 random characters of ``[A-Za-z0-9_-]``, then ``=``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


@dataclass
class GatewayConfig:
    """How a local gateway listens and behaves."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0 = pick a free port
    stage: str = LOCAL_STAGE
    region: str = "us-east-1"
    idle_timeout: float = IDLE_TIMEOUT  # seconds
    max_duration: float = MAX_DURATION  # seconds
    auth: bool = True  # False = --no-auth
    credentials: LocalCredentials | None = None  # None = resolve via the botocore chain
    id_factory: Callable[[], str] | None = None  # None = random ids; real-shaped either way
    # Where explicitly given credentials came from, for the listening event.
    credential_source: str = "explicit"
    # Fault injection, for testing clients: this share of management requests (after the
    # signature check, before anything is delivered) answers one of fault_statuses instead.
    fault_rate: float = 0.0
    fault_statuses: tuple[int, ...] = (500,)
    retry_after: float | None = None  # a Retry-After header on injected 429s
    latency: float = 0.0  # seconds added before answering each management request
    # Answers AWS gives that a local setup cannot cause by itself, for testing diagnostics:
    clock_skew: float = 0.0  # seconds the gateway's clock (signature checks, Date) is ahead
    tls: ssl.SSLContext | None = None  # serve https and wss instead of http and ws
    deny_methods: tuple[str, ...] = ()  # as if IAM denied execute-api:ManageConnections
    expired_token: bool = False  # the trusted session token is reported expired
    # How long a POST may wait for a client to take its message (its socket buffers full) before
    # the gateway drops that client as not reading.
    send_timeout: float = 5.0
    # How long a close handshake (and a DELETE or shutdown waiting for it) may take.
    close_timeout: float = 5.0
    # The backend: routes, the functions behind them, $connect auth (empty = no backend).
    app: App = field(default_factory=App)
    python: str | None = None  # the interpreter for Python handlers (None: the default)


@dataclass(eq=False)
class _Connection:
    """One open (or closing) WebSocket client."""

    connection_id: str
    ws: web.WebSocketResponse
    source_ip: str
    user_agent: str
    connected_at: datetime
    connected_clock: float
    last_active_at: datetime
    last_active_clock: float
    close_request: asyncio.Future[tuple[int, str, CloseBy]]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # (code, reason, by) once the gateway decided how this connection ends.
    outcome: tuple[int, str, CloseBy] | None = None
    # The client's socket, to drop a client that stopped reading (a write would wait forever).
    transport: asyncio.Transport | None = None
    dropped: bool = False
    # Who this connection is in its backend events (set once $connect let it in).
    caller: Caller | None = None

    def touch(self) -> None:
        """Record activity now: lastActiveAt and the idle timer."""
        self.last_active_at = utc_now()
        self.last_active_clock = asyncio.get_running_loop().time()


@dataclass(frozen=True)
class _Refusal:
    """A refused management request: status, AWS error type, body message, short why."""

    status: int
    error_type: str | None
    message: str | None
    reason: str
    close_connection: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    message_key: str = "message"  # AccessDeniedException says "Message"
    connection_id: str | None = None  # a 410's: the connection that is gone


def _gone(connection_id: str, reason: str) -> _Refused:
    """410 GoneException with an empty body: not a refusal, the connection is not there."""
    return _Refused(_Refusal(410, "GoneException", None, reason, connection_id=connection_id))


class _Refused(Exception):
    def __init__(self, refusal: _Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def _too_large(what: str, *, close: bool = False) -> _Refused:
    return _Refused(
        _Refusal(
            413,
            "PayloadTooLargeException",
            "Request Too Long",
            f"{what} exceeds {MAX_POST_BYTES}",
            close_connection=close,
        )
    )


def _forbidden(reason: str) -> _Refused:
    return _Refused(_Refusal(403, "ForbiddenException", "Forbidden", reason))


def _parse_target(raw_target: str, stage: str) -> tuple[Literal["websocket", "connection"], str]:
    """Split a raw request target into its kind and the raw (still encoded) connection id."""
    segments = raw_target.partition("?")[0].split("/")
    if len(segments) < 2 or segments[0] != "" or unquote(segments[1]) != stage:
        raise _forbidden("no such stage or path")
    if len(segments) == 2:
        return "websocket", ""
    marker = segments[2]
    is_connections = marker == "@connections" or (
        marker[:3].lower() == "%40" and marker[3:] == "connections"
    )
    if len(segments) != 4 or not is_connections:
        raise _forbidden("no such path")
    if not segments[3]:
        raise _forbidden("empty connection id")
    return "connection", segments[3]


def _decode_id(raw_id: str) -> str:
    """The connection id, percent-decoded once; 400 unless it has the shape the service issues.

    AWS answers 400 ``BadRequestException`` to an id that is not 15 of ``[A-Za-z0-9_-]`` then
    ``=`` (``abc def=``, ``abc!def=``, a UUID), and 410 only to a well-formed id it does not know.
    """
    decoded = unquote(raw_id, errors="replace")
    if not _ISSUED_ID.fullmatch(decoded):
        raise _Refused(
            _Refusal(
                400,
                "BadRequestException",
                f"Invalid connectionId: {decoded}",
                "malformed connection id",
            )
        )
    return decoded


def _response(
    status: int,
    payload: dict[str, object] | None = None,
    error_type: str | None = None,
) -> web.Response:
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if status != 204:
        headers["Content-Type"] = "application/json"
    if error_type is not None:
        headers["x-amzn-ErrorType"] = error_type
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(status=status, body=body if status != 204 else None, headers=headers)


class LocalGateway:
    """The gateway on the running event loop: ``await start()``, then ``await close()``."""

    def __init__(
        self,
        config: GatewayConfig,
        on_event: EventSink,
        credentials: LocalCredentials,
        credential_source: str,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.credential_source = credential_source
        self.port = config.port
        self._on_event = on_event
        self._new_id = config.id_factory or default_connection_id
        self._open: dict[str, _Connection] = {}
        # Every session still running, including those already closing (no longer in _open).
        self._sessions: set[_Connection] = set()
        self._shutting_down = False
        self._runner: web.AppRunner | None = None
        self._random = random.Random()
        # Runs nothing until start() loads the app's backend.
        self._integration = Integration(config.app, None, self._emit, method_arn=self._method_arn)
        # Message and $disconnect invocations still running (awaited on close).
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def _method_arn(self) -> str:
        return routes.method_arn(self.config.region, LOCAL_ACCOUNT, LOCAL_API_ID, self.config.stage)

    @property
    def _base(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{host}:{self.port}/{self.config.stage}"

    @property
    def domain_name(self) -> str:
        """The ``domainName`` of backend events: ``https://{domainName}/{stage}`` reaches us."""
        callbacks = self._integration.callbacks
        if callbacks is not None:
            return domain_name(callbacks.host, callbacks.port)
        return domain_name(self.config.host, self.port)

    @property
    def callback_endpoint(self) -> str | None:
        """The HTTPS management endpoint handlers call back on (None without a backend)."""
        if self._integration.callbacks is None:
            return None
        return f"https://{self.domain_name}/{self.config.stage}"

    @property
    def endpoint(self) -> str:
        """The management endpoint, e.g. ``http://127.0.0.1:8080/dev``."""
        return f"{'https' if self.config.tls else 'http'}://{self._base}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL clients connect to, e.g. ``ws://127.0.0.1:8080/dev``."""
        return f"{'wss' if self.config.tls else 'ws'}://{self._base}"

    async def start(self) -> None:
        """Load the backend, bind and listen, then emit ``listening``.

        Raises ``ConfigError`` for a handler that cannot load and ``OSError`` if the port is taken,
        before anything listens.
        """
        self._integration = await Integration.start(
            self.config.app,
            self._emit,
            method_arn=self._method_arn,
            host=self.config.host,
            stage=self.config.stage,
            region=self.config.region,
            credentials=self.credentials,
            account_id=LOCAL_ACCOUNT,
            python=self.config.python,
        )
        app = web.Application(client_max_size=MAX_POST_BYTES + 1)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # The CLI owns signals; hash the body exactly as sent (no transparent gunzip).
        # Requests still in flight at shutdown (a --latency wait) get close_timeout in all: aiohttp
        # waits shutdown_timeout for them to finish, then as long again once it cancelled them.
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            auto_decompress=False,
            shutdown_timeout=self.config.close_timeout / 2,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self.config.host, self.config.port, ssl_context=self.config.tls
            )
            await site.start()
            callbacks = self._integration.callbacks
            if callbacks is not None:
                callback_site = web.SockSite(
                    runner, callbacks.socket, ssl_context=callbacks.server_context
                )
                await callback_site.start()
        except BaseException:
            await runner.cleanup()
            await self._integration.aclose()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._emit(
            "listening",
            endpoint=self.endpoint,
            wsUrl=self.ws_url,
            stage=self.config.stage,
            region=self.config.region,
            auth=self.config.auth,
            accessKeyId=self.credentials.access_key,
            credentialSource=self.credential_source,
            connectAuth=self.config.app.connect_auth,
            routes=sorted(self.config.app.routes),
            callbackEndpoint=self.callback_endpoint,
        )

    async def close(self) -> None:
        """Close every client with 1001 ``Going Away``, then stop the server."""
        self._shutting_down = True
        sessions = list(self._sessions)
        for conn in sessions:
            self._request_close(conn, 1001, GOING_AWAY, "gateway")
        if sessions:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(conn.done.wait() for conn in sessions)),
                    self.config.close_timeout + 1,
                )
        # Let the $disconnect calls of those closes (and messages in flight) finish, bounded.
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.config.close_timeout)
            for task in set(self._tasks):
                task.cancel()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self._integration.aclose()

    # -- events -----------------------------------------------------------------------------

    def _emit(self, name: str, **fields: object) -> None:
        event: Event = make_event(name, **fields)
        try:
            self._on_event(event)
        except Exception:
            # A broken sink (closed pipe, bad callback) must not break the gateway.
            log.exception("event sink failed on %s", name)

    # -- HTTP entry point -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await self._answer(request)
        if self.config.clock_skew and not response.prepared:
            # The service's clock, as a client reads it to measure skew.
            response.headers["Date"] = format_datetime(self._now(), usegmt=True)
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except _Refused as refused:
            return self._deny(request, refused.refusal)
        except ConnectionError as exc:
            # The client hung up mid-request (reset, closed before its body or handshake ended):
            # nobody is left to answer, and it is not the gateway's error.
            log.debug("client left during %s %s: %s", request.method, request.raw_path, exc)
            return _response(400, {"message": "Bad Request"}, "BadRequestException")
        except Exception as exc:
            # One failing request must never take the server down.
            log.exception("request %s %s failed", request.method, request.raw_path)
            self._emit(
                "error",
                method=request.method,
                path=_shown_target(request.raw_path),
                error=f"{type(exc).__name__}: {exc}",
            )
            return _response(
                500, {"message": "Internal server error"}, "InternalServerErrorException"
            )

    def _deny(self, request: web.Request, refusal: _Refusal) -> web.Response:
        gone = refusal.connection_id is not None  # a 410: said with the connection it names
        self._emit(
            "gone" if gone else "denied",
            method=request.method,
            path=_shown_target(request.raw_path),
            **({"connectionId": refusal.connection_id} if gone else {}),
            status=refusal.status,
            errorType=refusal.error_type,
            reason=refusal.reason,
        )
        payload: dict[str, object] | None = None
        if refusal.message is not None:
            payload = {refusal.message_key: refusal.message}
        response = _response(refusal.status, payload, refusal.error_type)
        for name, value in refusal.headers:
            response.headers[name] = value
        if refusal.close_connection:
            response.force_close()
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        kind, raw_id = _parse_target(request.raw_path, self.config.stage)
        if kind == "websocket":
            ws = self._new_websocket()
            if request.method == "GET" and ws.can_prepare(request).ok:
                iam = self._verify_upgrade(request) if self.config.app.connect_auth == "iam" else {}
                return await self._websocket(request, ws, iam)
            raise _forbidden("not a WebSocket upgrade")
        if request.method not in ("POST", "GET", "DELETE"):
            raise _forbidden(f"method {request.method} not allowed")
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        body, size, payload_hash = await self._read_body(request)
        if self.config.auth:
            self._verify(request, payload_hash)
            self._authorize(request, raw_id)
        if self.config.fault_rate and self._random.random() < self.config.fault_rate:
            raise _Refused(self._fault())
        connection_id = _decode_id(raw_id)
        if size > MAX_POST_BYTES:
            raise _too_large(f"body of {size} bytes")
        conn = self._open.get(connection_id)
        if conn is None:
            raise _gone(connection_id, "no open connection with this id")
        if request.method == "POST":
            return await self._post(request, conn, body)
        if request.method == "GET":
            return self._get(conn)
        return await self._delete(conn)

    async def _read_body(self, request: web.Request) -> tuple[bytes, int, str]:
        """The body (first 131073 bytes at most), its full size and its hex SHA-256."""
        declared = request.content_length
        if declared is not None and declared > DISCARD_LIMIT:
            # Not worth reading: answer at once and drop the connection.
            raise _too_large(f"declared body of {declared} bytes", close=True)
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0
        # Stream the body: hash all of it, keep only what a valid POST may carry.
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > HARD_BODY_LIMIT:
                await self._discard_rest(request, size)
            digest.update(chunk)
            room = MAX_POST_BYTES + 1 - len(kept)
            if room > 0:
                kept.extend(chunk[:room])
        return bytes(kept), size, digest.hexdigest()

    async def _discard_rest(self, request: web.Request, size: int) -> None:
        """Read and drop the rest of an oversize body, then refuse it with 413."""
        # Reading it all lets the client see the 413 rather than a reset mid-upload.
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > DISCARD_LIMIT:
                raise _too_large(f"body over {DISCARD_LIMIT} bytes", close=True)
        raise _too_large(f"body of {size} bytes")

    def _verify(self, request: web.Request, payload_hash: str) -> None:
        try:
            sigv4.verify(
                method=request.method,
                raw_target=request.raw_path,
                headers=list(request.headers.items()),
                payload_hash=payload_hash,
                access_key=self.credentials.access_key,
                secret_key=self.credentials.secret_key,
                token=self.credentials.token,
                region=self.config.region,
                now=self._now(),
            )
        except sigv4.SignatureError as error:
            raise _Refused(_Refusal(403, error.error_type, error.message, error.reason)) from None

    def _verify_upgrade(self, request: web.Request) -> dict[str, str]:
        """An AWS_IAM $connect: the upgrade's SigV4 (headers or presigned); the caller's identity."""
        trusted: dict[str, Any] = {
            "method": request.method,
            "raw_target": request.raw_path,
            "headers": list(request.headers.items()),
            "access_key": self.credentials.access_key,
            "secret_key": self.credentials.secret_key,
            "token": self.credentials.token,
            "region": self.config.region,
            "now": self._now(),
        }
        try:
            if sigv4.is_presigned(request.raw_path):
                verified = sigv4.verify_presigned(**trusted)
            else:
                verified = sigv4.verify(payload_hash=sigv4.EMPTY_PAYLOAD_HASH, **trusted)
        except sigv4.SignatureError as error:
            raise _Refused(_Refusal(403, error.error_type, error.message, error.reason)) from None
        return {
            "accountId": LOCAL_ACCOUNT,
            "caller": LOCAL_USER_ID,
            "user": LOCAL_USER_ID,
            "userArn": LOCAL_USER_ARN,
            "accessKey": verified.access_key,
        }

    def _now(self) -> datetime:
        return utc_now() + timedelta(seconds=self.config.clock_skew)

    def _authorize(self, request: web.Request, raw_id: str) -> None:
        """What IAM and STS would still refuse once the signature is good."""
        if self.config.expired_token and self.credentials.token is not None:
            raise _Refused(
                _Refusal(
                    403,
                    "ExpiredTokenException",
                    "The security token included in the request is expired",
                    "expired session token (--expired-token)",
                )
            )
        if request.method in self.config.deny_methods:
            resource = (
                f"arn:aws:execute-api:{self.config.region}:{LOCAL_ACCOUNT}:{LOCAL_API_ID}/"
                f"{self.config.stage}/{request.method}/@connections/{unquote(raw_id)}"
            )
            message = (
                f"User: {LOCAL_USER_ARN} is not authorized to "
                f"perform: execute-api:ManageConnections on resource: {resource}"
            )
            raise _Refused(
                _Refusal(
                    403,
                    "AccessDeniedException",
                    message,
                    f"{request.method} denied (--deny)",
                    message_key="Message",
                )
            )

    def _fault(self) -> _Refusal:
        """An injected failure, shaped as the service answers it."""
        status = self._random.choice(self.config.fault_statuses)
        if status == 429:
            headers: tuple[tuple[str, str], ...] = ()
            if self.config.retry_after is not None:
                headers = (("Retry-After", f"{self.config.retry_after:g}"),)
            return _Refusal(
                429, "LimitExceededException", "Too Many Requests", "injected fault", False, headers
            )
        error_type = "InternalServerErrorException" if status == 500 else None
        return _Refusal(status, error_type, "Internal server error", "injected fault")

    # -- management operations --------------------------------------------------------------

    async def _post(self, request: web.Request, conn: _Connection, body: bytes) -> web.Response:
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        try:
            if conn.ws.closed:
                raise ConnectionResetError("closed")
            send = conn.ws.send_str(text) if text is not None else conn.ws.send_bytes(body)
            if not await self._bounded(conn, send, self.config.send_timeout) or conn.dropped:
                raise ConnectionResetError(NOT_READING)
        except (ConnectionError, RuntimeError):
            raise _gone(conn.connection_id, "connection closed during delivery") from None
        conn.touch()
        self._emit(
            "post",
            connectionId=conn.connection_id,
            bytes=len(body),
            frame="text" if text is not None else "binary",
            status=200,
        )
        return _response(200)

    def _get(self, conn: _Connection) -> web.Response:
        self._emit("get", connectionId=conn.connection_id, status=200)
        return _response(
            200,
            {
                "connectedAt": iso_ms(conn.connected_at),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
                "lastActiveAt": iso_ms(conn.last_active_at),
            },
        )

    async def _delete(self, conn: _Connection) -> web.Response:
        self._request_close(conn, 1000, "", "api")
        # Answer once the client has been told, so a following GET/POST sees it gone.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(conn.done.wait(), self.config.close_timeout + 1)
        return _response(204)

    # -- WebSocket clients -----------------------------------------------------------------

    def _new_websocket(self) -> web.WebSocketResponse:
        return web.WebSocketResponse(
            # aiohttp refuses a message whose size reaches max_msg_size; 32768 itself is allowed.
            max_msg_size=MAX_MESSAGE_BYTES + 1,
            compress=False,
            autoping=True,
            timeout=self.config.close_timeout,
        )

    def _unique_id(self) -> str:
        for _ in range(100):
            candidate = self._new_id()
            if not _ISSUED_ID.fullmatch(candidate):
                # Management calls would answer 400 to it: a test would test nothing real.
                raise ValueError(f"id_factory gave {candidate!r}, not 15 of [A-Za-z0-9_-] then '='")
            if candidate not in self._open:
                return candidate
        raise RuntimeError("id_factory keeps returning ids already in use")

    async def _websocket(
        self, request: web.Request, ws: web.WebSocketResponse, iam: dict[str, str]
    ) -> web.StreamResponse:
        connection_id = self._unique_id()
        loop = asyncio.get_running_loop()
        now, clock = utc_now(), loop.time()
        source_ip = request.remote or ""
        user_agent = request.headers.get("User-Agent", "")
        admission = await self._integration.connect(
            Caller(
                connection_id=connection_id,
                connected_at=now,
                source_ip=source_ip,
                user_agent=user_agent or None,
                domain_name=self.domain_name,
                stage=self.config.stage,
                api_id=LOCAL_API_ID,
                iam=iam,
            ),
            list(request.headers.items()),
            list(request.query.items()),
            self.port,
        )
        if admission.refusal is not None:
            return self._refuse_upgrade(request, admission.refusal)
        ws.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        for name, value in admission.headers.items():
            ws.headers[name] = value
        await ws.prepare(request)
        conn = _Connection(
            connection_id=connection_id,
            ws=ws,
            source_ip=source_ip,
            user_agent=user_agent,
            connected_at=now,
            connected_clock=clock,
            last_active_at=utc_now(),
            last_active_clock=loop.time(),
            close_request=loop.create_future(),
            transport=request.transport,
            caller=admission.caller,
        )
        # Registered only after the handshake: an id in its $connect is still gone, as on AWS.
        self._open[connection_id] = conn
        self._sessions.add(conn)
        self._emit(
            "connect",
            connectionId=connection_id,
            sourceIp=conn.source_ip,
            userAgent=conn.user_agent,
            query={
                name: "<redacted>" if name.lower() in _SECRET_PARAMS else value
                for name, value in request.query.items()
            },
        )
        if self._shutting_down:
            self._request_close(conn, 1001, GOING_AWAY, "gateway")
        try:
            await self._session(conn)
        except asyncio.CancelledError:
            if conn.outcome is None:
                conn.outcome = (1006, "", "gateway")
            raise
        finally:
            self._open.pop(connection_id, None)
            self._sessions.discard(conn)
            code, reason, by = conn.outcome or (int(ws.close_code or 1006), "", "client")
            self._emit("disconnect", connectionId=connection_id, code=code, reason=reason, by=by)
            self._background(self._integration.disconnect(admission.caller, code, reason))
            conn.done.set()
        return ws

    def _refuse_upgrade(self, request: web.Request, refusal: Refusal) -> web.Response:
        """Answer an upgrade that its authorizer or $connect route refused."""
        self._emit(
            "denied",
            method=request.method,
            path=_shown_target(request.raw_path),
            status=refusal.status,
            errorType=None,
            reason=refusal.reason,
        )
        return web.Response(
            status=refusal.status,
            body=refusal.body.encode(),
            headers={"x-amzn-RequestId": str(uuid.uuid4()), "Content-Type": "application/json"},
        )

    def _background(self, work: Awaitable[None]) -> None:
        """Run a backend call beside the sessions; close() waits for what is still running."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            # A backend failure is the backend's: report it, keep the gateway going.
            log.error("backend call failed: %r", error)
            self._emit("error", method="WS", path=self.config.stage, error=repr(error))

    async def _answer_message(self, conn: _Connection, text: str) -> None:
        """Run the message's route and send its answer frame (two-way body or error), if any."""
        assert conn.caller is not None
        frame = await self._integration.message(conn.caller, text)
        if frame is None or conn.ws.closed or conn.dropped:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._bounded(conn, conn.ws.send_str(frame), self.config.send_timeout)

    def _request_close(self, conn: _Connection, code: int, reason: str, by: CloseBy) -> None:
        """Ask a client's session to close it; the id is gone from now on."""
        self._open.pop(conn.connection_id, None)
        if not conn.close_request.done():
            conn.close_request.set_result((code, reason, by))

    async def _close(self, conn: _Connection, code: int, reason: str, by: CloseBy) -> None:
        """Close a client from its own session, with a full close handshake."""
        self._open.pop(conn.connection_id, None)
        conn.outcome = (code, reason, by)
        await self._bounded(
            conn, conn.ws.close(code=code, message=reason.encode()), self.config.close_timeout + 1
        )

    async def _bounded(self, conn: _Connection, write: Awaitable[object], timeout: float) -> bool:
        """Await a write to the client for at most ``timeout``; False if the client was dropped.

        aiohttp waits for a full socket buffer to drain with no time limit, so a client that stops
        reading would hold a POST (or its close handshake, hence shutdown) forever. Past the
        timeout the connection is aborted (disconnect 1006 ``client not reading``), which also
        wakes the write. The write runs in its own task: cancelling a wait on aiohttp's shared
        drain future would break every other write waiting on it.
        """
        task = asyncio.ensure_future(write)
        try:
            await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            task.result()
            return True
        self._drop(conn)
        await asyncio.wait({task}, timeout=self.config.close_timeout)
        if task.done():
            if not task.cancelled():
                task.exception()  # retrieved: an error after the drop says nothing new
        else:
            task.cancel()
        return False

    def _drop(self, conn: _Connection) -> None:
        """Abort a client's connection at once, without a close handshake."""
        self._open.pop(conn.connection_id, None)
        if not conn.dropped:
            conn.dropped = True
            log.debug("dropping %s: %s", conn.connection_id, NOT_READING)
            if conn.outcome is None:
                conn.outcome = (1006, NOT_READING, "gateway")
            if conn.transport is not None:
                conn.transport.abort()

    async def _session(self, conn: _Connection) -> None:
        """Read the client's frames until it, a timer, or a request closes the connection."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            max_deadline = conn.connected_clock + self.config.max_duration
            idle_deadline = conn.last_active_clock + self.config.idle_timeout
            if now >= max_deadline:
                return await self._close(conn, 1001, GOING_AWAY, "max-duration")
            if now >= idle_deadline:
                return await self._close(conn, 1001, GOING_AWAY, "idle-timeout")
            if conn.close_request.done():
                return await self._close(conn, *conn.close_request.result())
            # Race the next frame against timers and close requests; the session closes itself so
            # the close handshake is complete (aiohttp's close() from another task cuts it short).
            receive: asyncio.Future[WSMessage] = asyncio.ensure_future(conn.ws.receive())
            waiting: list[asyncio.Future[Any]] = [receive, conn.close_request]
            try:
                await asyncio.wait(
                    waiting,
                    timeout=min(max_deadline, idle_deadline) - now,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                if not receive.done():
                    receive.cancel()
                    await asyncio.wait({receive})
            if receive.cancelled():
                continue
            if conn.dropped:
                return
            if not await self._on_frame(conn, receive.result()):
                return

    async def _on_frame(self, conn: _Connection, msg: WSMessage) -> bool:
        """Handle one message from the client; False once the connection is over."""
        if msg.type is WSMsgType.TEXT:
            text = str(msg.data)
            conn.touch()
            self._emit(
                "message",
                connectionId=conn.connection_id,
                type="text",
                bytes=len(text.encode("utf-8", "surrogatepass")),
                data=text[:200],
            )
            self._background(self._answer_message(conn, text))
            return True
        if msg.type is WSMsgType.BINARY:
            data = msg.data if isinstance(msg.data, bytes) else b""
            self._emit("message", connectionId=conn.connection_id, type="binary", bytes=len(data))
            await self._close(conn, 1003, BINARY_REFUSED, "protocol")
            return False
        if msg.type is WSMsgType.CLOSE:
            # aiohttp reports a close frame without a status code as 0: that is 1005 (RFC 6455).
            code = int(msg.data) if isinstance(msg.data, int) and msg.data else 1005
            conn.outcome = (code, str(msg.extra or ""), "client")
            return False
        if msg.type is WSMsgType.ERROR:
            error = msg.data
            if isinstance(error, WebSocketError):
                # aiohttp already answered the protocol error with a close frame carrying its code.
                why = str(error)
                if error.code == WSCloseCode.MESSAGE_TOO_BIG:
                    why = f"message over {MAX_MESSAGE_BYTES} bytes"
                conn.outcome = (int(error.code), why, "protocol")
            else:
                conn.outcome = (1006, str(error), "client")
            return False
        if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
            conn.outcome = (int(conn.ws.close_code or 1006), "", "client")
            return False
        return True  # PING/PONG are answered by aiohttp itself


# -- running it -------------------------------------------------------------------------------


def _credentials_for(config: GatewayConfig) -> tuple[LocalCredentials, str]:
    if config.credentials is not None:
        return config.credentials, config.credential_source
    return resolve_credentials()


async def serve(config: GatewayConfig, on_event: EventSink) -> None:
    """Run a gateway until cancelled; then close every client with 1001 and return normally.

    Raises ``OSError`` if it cannot listen. Credentials are resolved as :class:`GatewayThread` does.
    """
    # The botocore chain may block (a credential process, SSO): keep it off the loop.
    credentials, source = await asyncio.to_thread(_credentials_for, config)
    gateway = LocalGateway(config, on_event, credentials, source)
    await gateway.start()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        # Ctrl-C is the normal way to stop: shut down cleanly and return (the CLI exits 0).
        pass
    finally:
        await gateway.close()


class GatewayThread:
    """Runs a gateway on its own asyncio loop in a daemon thread; a context manager.

    ``start()`` blocks until it listens (and raises ``OSError``, e.g. port in use, in the caller);
    ``stop()`` closes every client with 1001 ``Going Away``, stops the server and joins the thread.
    ``on_event`` is called from the gateway's thread.
    """

    def __init__(self, config: GatewayConfig, on_event: EventSink | None = None) -> None:
        self.config = config
        self.credentials, self.credential_source = _credentials_for(config)
        self.port = config.port
        self._on_event: EventSink = on_event or (lambda event: None)
        self._gateway: LocalGateway | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def endpoint(self) -> str:
        """The management endpoint, e.g. ``http://127.0.0.1:PORT/dev``."""
        return self._require().endpoint

    @property
    def ws_url(self) -> str:
        """The WebSocket URL, e.g. ``ws://127.0.0.1:PORT/dev``."""
        return self._require().ws_url

    def _require(self) -> LocalGateway:
        if self._gateway is None:
            raise RuntimeError("GatewayThread is not started")
        return self._gateway

    def start(self) -> GatewayThread:
        """Start listening; returns self once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("GatewayThread already started")
        self._thread = threading.Thread(target=self._run, name="wsconn-local-gateway", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Close every client with 1001, stop the server and join the thread (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is threading.current_thread():
            raise RuntimeError("stop() called from the gateway's own thread (an on_event callback)")
        if thread is None or loop is None or stop is None or not thread.is_alive():
            return
        # The loop may have finished between the check and the call.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
        thread.join()

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:
            if not self._ready.is_set():
                self._startup_error = error
            raise
        finally:
            # start() must never wait forever, whatever happened here.
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        gateway = LocalGateway(
            self.config, self._on_event, self.credentials, self.credential_source
        )
        try:
            await gateway.start()
        except BaseException as error:
            self._startup_error = error
            self._ready.set()
            return
        self._gateway = gateway
        self.port = gateway.port
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await gateway.close()
