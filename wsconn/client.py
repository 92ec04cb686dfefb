"""The @connections calls over one requests.Session: post / get / delete -> typed results.

Every HTTP status and transport failure becomes a wsconn error here, once. Requests are built by
hand and sent with `Session.send`, so the URL we signed is the URL on the wire: nothing re-quotes it.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, cast

import requests
import urllib3
from requests.adapters import HTTPAdapter

from wsconn import __version__
from wsconn.auth import RequestSigner, SignedHeaders, Signer, amz_date
from wsconn.endpoint import Endpoint, encode_connection_id
from wsconn.errors import (
    ClientError,
    ConnectionGone,
    Forbidden,
    NetworkError,
    NotAttempted,
    PayloadTooLarge,
    SentRequest,
    ServerError,
    Throttled,
    WsconnError,
)
from wsconn.limits import MAX_PAYLOAD, too_large
from wsconn.wire import Wire

USER_AGENT = f"wsconn/{__version__}"
BACKOFF_BASE = 0.25  # seconds; full jitter over base * 2**attempt
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 8.0  # so a throttled id still gives up within about half a minute (3 retries)


class Pacer(Protocol):
    """Paces many concurrent calls as one run (fan-out); a single call has none."""

    def wait(self) -> None:
        """Block until a request may start (rate limit, run-wide pause after a 429)."""

    def succeeded(self) -> None: ...

    def throttled(self, delay: float) -> None:
        """A 429: pause every worker for `delay` and lower the run's request rate."""

    def sleep(self, delay: float) -> None:
        """A back-off sleep that ends early when the run is stopping."""

    def stopping(self) -> bool:
        """True once the run is interrupted: no further retries."""
        ...


class Tracer(Protocol):
    """What -v shows. Implemented by the renderer; the client only reports."""

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> None: ...

    def signing(self, canonical_request: str, string_to_sign: str) -> None: ...

    def response(
        self,
        status: int,
        reason: str,
        headers: Mapping[str, str],
        body: bytes,
        timings: Mapping[str, float],
    ) -> None:
        """`timings`: connect, tls (new connections only), first byte, total, in ms."""

    def retry(self, attempt: int, delay: float, why: str) -> None: ...


@dataclass(frozen=True)
class Result:
    """A call that succeeded."""

    connection_id: str
    outcome: str  # sent / disconnected / connected
    http_status: int
    attempts: int
    latency_ms: float
    bytes_sent: int = 0


@dataclass(frozen=True)
class ConnectionInfo:
    """GetConnection's answer, with the service's clock for computing ages."""

    result: Result
    connected_at: datetime
    last_active_at: datetime
    source_ip: str
    user_agent: str
    fields: dict[str, object] = field(default_factory=dict)  # the service's JSON, as sent
    server_time: datetime | None = None


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    method: str
    url: str
    signed: SignedHeaders | None  # None on the fan-out's fast path (it explains nothing)


@dataclass(frozen=True)
class _Template:
    """What every request of one kind (method and body) of a fan-out shares."""

    signer: RequestSigner
    prefix: str  # the wire path up to the encoded connection id
    origin: str  # "scheme://host" before the path through an HTTP proxy, else ""
    headers: str  # the header lines that never change, each ending in CRLF


_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


class ManagementClient:
    """Signed calls to one endpoint's @connections API, with retries."""

    def __init__(
        self,
        endpoint: Endpoint,
        signer: Signer,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        verify: bool | str = True,
        tracer: Tracer | None = None,
        connections: int = 1,
        pacer: Pacer | None = None,
        region_source: str = "--region",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self._sleep = sleep  # a single call's wait between attempts (a test passes its own clock)
        self.pacer = pacer
        self.region_source = region_source
        self.signer = signer
        self.timeout = timeout
        self.retries = retries
        self.tracer = tracer
        self.session = requests.Session()
        # requests configures the transport (proxies from the environment, CA bundle, TLS);
        # each call then goes straight to its urllib3 pool, skipping the per-call session
        # machinery that would cost more than signing and sending together.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, connections))
        self.session.mount(f"{endpoint.scheme}://", adapter)
        settings = self.session.merge_environment_settings(endpoint.url, {}, None, verify, None)
        proxies: dict[str, str] = dict(settings["proxies"])
        verified: bool | str = settings["verify"] if settings["verify"] is not None else True
        probe = requests.PreparedRequest()
        probe.prepare(method="GET", url=endpoint.url + "/")
        self._pool = cast(
            urllib3.HTTPConnectionPool,
            adapter.get_connection_with_tls_context(probe, verified, proxies=proxies),
        )
        adapter.cert_verify(self._pool, probe.url or "", verified, None)  # type: ignore[no-untyped-call]
        # Through an HTTP proxy a request names its absolute URL, else only its path.
        self._absolute_urls = adapter.request_url(probe, proxies) != probe.path_url
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._timings: dict[str, float] = {}
        if tracer is not None:
            self._pool.ConnectionCls = _timed_connections(
                cast(type[urllib3.connection.HTTPConnection], self._pool.ConnectionCls),
                self._timings,
            )
        # A fan-out (paced, untraced) writes its requests on the pool's connections itself.
        self._wire: Wire | None = None
        self._templates: dict[tuple[str, bytes], _Template | None] = {}
        if pacer is not None and tracer is None:
            from urllib3.util.proxy import connection_requires_http_tunnel

            pool = self._pool
            tunnel = connection_requires_http_tunnel(pool.proxy, pool.proxy_config, endpoint.scheme)
            self._wire = Wire(pool, tunnel=tunnel, timeout=timeout)
            self._proxy_headers: dict[str, str] = {} if tunnel else dict(pool.proxy_headers)

    def close(self) -> None:
        self.session.close()

    def post_to_connection(self, connection_id: str, data: bytes) -> Result:
        """POST: deliver `data` to the client. Raises a WsconnError subclass on failure."""
        if len(data) > MAX_PAYLOAD:
            raise PayloadTooLarge(too_large("the message", len(data)))
        response, attempts, ms = self._call("POST", connection_id, data)
        return Result(connection_id, "sent", response.status, attempts, ms, len(data))

    def get_connection(self, connection_id: str) -> ConnectionInfo:
        """GET: the connection's timestamps and identity."""
        response, attempts, ms = self._call("GET", connection_id, b"")
        try:
            fields = json.loads(response.body)
            identity = fields.get("identity") or {}
            connected_at = _parse_time(fields["connectedAt"])
            last_active_at = _parse_time(fields.get("lastActiveAt") or fields["connectedAt"])
            source_ip = str(identity.get("sourceIp", ""))
            user_agent = str(identity.get("userAgent", ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            error = ServerError(
                f"unexpected GetConnection answer ({exc}): {response.body[:200]!r}",
                http_status=response.status,
            )
            error.attempts, error.latency_ms = attempts, ms
            raise error from None
        return ConnectionInfo(
            Result(connection_id, "connected", response.status, attempts, ms),
            connected_at,
            last_active_at,
            source_ip,
            user_agent,
            fields,
            _server_time(response.headers),
        )

    def delete_connection(self, connection_id: str) -> Result:
        """DELETE: disconnect the client."""
        response, attempts, ms = self._call("DELETE", connection_id, b"")
        return Result(connection_id, "disconnected", response.status, attempts, ms)

    def _call(self, method: str, connection_id: str, body: bytes) -> tuple[_Response, int, float]:
        """Send with retries (429, 5xx, connection errors); map the final answer to an error."""
        pacer = self.pacer
        started: float | None = None  # the first attempt's start: a --rate wait is not latency
        attempt = 0
        final: WsconnError | None = None  # the last failure, once there is one
        while True:
            attempt += 1
            retry_after: float | None = None
            if pacer is not None:
                pacer.wait()
                if pacer.stopping():  # the run was stopped while this call waited its turn
                    if final is None or started is None:
                        raise NotAttempted(f"{connection_id} was not sent: the run was stopped")
                    raise self._finish(final, attempt - 1, started)
            if started is None:
                started = time.perf_counter()
            try:
                response = self._send_once(method, connection_id, body)
            except WsconnError as error:
                if not isinstance(error, NetworkError) or error.error_type == "tls":
                    raise self._finish(error, attempt, started) from None
                final = error
                why = str(error.message)
            else:
                if 200 <= response.status < 300:
                    if pacer is not None:
                        pacer.succeeded()
                    return response, attempt, _ms_since(started)
                final = _error_for(response, connection_id, method, len(body), attempt)
                final.sent = self._sent_request(response)
                if not (response.status == 429 or response.status >= 500):
                    raise self._finish(final, attempt, started)
                why = f"{response.status} {final.error_type or response.reason}"
                retry_after = _retry_after(response.headers)
            if attempt > self.retries or (pacer is not None and pacer.stopping()):
                raise self._finish(final, attempt, started)
            delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
            if retry_after is not None:
                delay = min(max(delay, retry_after), RETRY_AFTER_CAP)
            if self.tracer:
                self.tracer.retry(attempt, delay, why)
            if pacer is None:
                self._sleep(delay)
            elif isinstance(final, Throttled):
                pacer.throttled(delay)  # the whole run slows down, not only this id
            else:
                pacer.sleep(delay)

    @staticmethod
    def _finish(error: WsconnError, attempts: int, started: float) -> WsconnError:
        error.attempts = attempts
        error.latency_ms = _ms_since(started)
        return error

    def _sent_request(self, response: _Response) -> SentRequest | None:
        """What was sent, for explaining a refusal (built only when one comes)."""
        if response.signed is None:
            return None
        credentials = self.signer.credentials
        endpoint = self.endpoint
        # "{api-id}-{vpce-id}.execute-api..." for private APIs: the api id is the first part.
        api_id = endpoint.netloc.split(".", 1)[0].split("-", 1)[0] if endpoint.host_region else "*"
        stage = endpoint.base_path.strip("/").split("/", 1)[0] or "*"
        return SentRequest(
            method=response.method,
            url=response.url,
            endpoint_source=endpoint.source,
            region=self.signer.region,
            region_source=self.region_source,
            access_key=credentials.access_key,
            credential_source=credentials.source,
            has_token=credentials.token is not None,
            canonical_request=response.signed.canonical_request,
            string_to_sign=response.signed.string_to_sign,
            resource_pattern=(
                f"arn:aws:execute-api:{self.signer.region}:*:{api_id}/{stage}/"
                f"{response.method}/@connections/*"
            ),
            server_date=_server_time(response.headers),
            local_date=datetime.now(timezone.utc),
        )

    def prepare(self, method: str, connection_id: str, body: bytes) -> Prepared:
        """The signed request for one call, exactly as it would go on the wire."""
        endpoint = self.endpoint
        path = endpoint.connection_path(connection_id)
        signed = self.signer.sign(method, endpoint.netloc, path, body)
        headers = signed.headers
        headers["user-agent"] = USER_AGENT
        if method != "GET":
            headers["content-length"] = str(len(body))
        url = f"{endpoint.scheme}://{endpoint.netloc}{path}"
        return Prepared(method, url, path, headers, body, signed)

    def _template(self, method: str, body: bytes) -> _Template | None:
        """The fixed part of a fan-out's requests; None when a value cannot be written raw."""
        endpoint = self.endpoint
        token = self.signer.credentials.token
        headers = {"host": endpoint.netloc, "user-agent": USER_AGENT}
        headers["accept-encoding"] = "identity"  # what http.client sends: answers uncompressed
        if method != "GET":
            headers["content-length"] = str(len(body))
        if token:
            headers["x-amz-security-token"] = token
        headers |= self._proxy_headers
        if any(_UNSAFE_HEADER.search(value) for value in headers.values()):
            return None  # let http.client refuse it, as a single call would
        prefix = endpoint.connection_path("")
        return _Template(
            RequestSigner(self.signer, method, endpoint.netloc, prefix, body),
            prefix,
            f"{endpoint.scheme}://{endpoint.netloc}" if self._absolute_urls else "",
            "".join(f"{name}: {value}\r\n" for name, value in headers.items()),
        )

    def _send_fast(
        self, wire: Wire, template: _Template, method: str, connection_id: str, body: bytes
    ) -> _Response:
        """One signed request on the wire, written and read without per-call objects."""
        path = template.prefix + (encoded := encode_connection_id(connection_id))
        when = amz_date()
        authorization = template.signer.authorization(encoded, when)
        head = (
            f"{method} {template.origin}{path} HTTP/1.1\r\n{template.headers}"
            f"x-amz-date: {when}\r\nauthorization: {authorization}\r\n\r\n"
        )
        try:
            answer = wire.exchange(head.encode("latin-1") + body)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _network_error(exc, self.endpoint, self.timeout, self._proxy_name()) from None
        url = f"{self.endpoint.scheme}://{self.endpoint.netloc}{path}"
        return _Response(
            answer.status, answer.reason, answer.headers, answer.body, method, url, None
        )

    def _send_once(self, method: str, connection_id: str, body: bytes) -> _Response:
        if self._wire is not None:
            key = (method, body)
            if key not in self._templates:
                self._templates[key] = self._template(method, body)
            template = self._templates[key]
            if template is not None:
                return self._send_fast(self._wire, template, method, connection_id, body)
        request = self.prepare(method, connection_id, body)
        traced = self.tracer is not None
        if self.tracer:
            self.tracer.request(method, request.url, request.headers, body)
            self.tracer.signing(request.signed.canonical_request, request.signed.string_to_sign)
            self._timings.clear()
        sent = time.perf_counter()
        try:
            # The path goes out exactly as signed: urllib3 leaves a valid, encoded path as it is.
            raw = self._pool.urlopen(
                method,
                request.url if self._absolute_urls else request.path,
                body=body or None,
                headers=request.headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=self._timeout,
                preload_content=not traced,  # traced: time the first byte apart from the body
                decode_content=False,
            )
            if traced:
                self._timings["first byte"] = _ms_since(sent)
            data = raw.data
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _network_error(exc, self.endpoint, self.timeout, self._proxy_name()) from None
        response = _Response(
            raw.status, raw.reason or "", raw.headers, data, method, request.url, request.signed
        )
        if self.tracer:
            self._timings["total"] = _ms_since(sent)
            self.tracer.response(
                response.status, response.reason, response.headers, data, dict(self._timings)
            )
        return response

    def _proxy_name(self) -> str | None:
        """The proxy's host:port (never its user name or password), when one is used."""
        proxy: urllib3.util.Url | None = getattr(self._pool, "proxy", None)
        if proxy is None or not proxy.host:
            return None
        return f"{proxy.host}:{proxy.port}" if proxy.port else proxy.host


def _timed_connections(
    base: type[urllib3.connection.HTTPConnection], timings: dict[str, float]
) -> type[urllib3.connection.HTTPConnection]:
    """The pool's connection class, noting how long TCP connect and TLS take (for -v)."""

    class Timed(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> Any:
            started = time.perf_counter()
            sock = super()._new_conn()
            timings["connect"] = _ms_since(started)
            return sock

        def connect(self) -> None:
            started = time.perf_counter()
            super().connect()
            if isinstance(self, urllib3.connection.HTTPSConnection):
                timings["tls"] = round(_ms_since(started) - timings.get("connect", 0.0), 1)

    return Timed


@dataclass(frozen=True)
class Prepared:
    """A signed request ready to send (or to print as a curl command with --dry-run)."""

    method: str
    url: str
    path: str
    headers: dict[str, str]
    body: bytes
    signed: SignedHeaders


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _parse_time(value: object) -> datetime:
    """An ISO 8601 timestamp; one without an offset is read as UTC, as the service means it."""
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _server_time(headers: Mapping[str, str]) -> datetime | None:
    try:
        return parsedate_to_datetime(headers["date"]).astimezone(timezone.utc)
    except (KeyError, TypeError, ValueError):
        return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_type_and_message(headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """Read the error as the SDKs do: x-amzn-ErrorType (text after ':' dropped), else the body."""
    error_type = headers.get("x-amzn-errortype", "").split(":", 1)[0].strip() or None
    message = ""
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = None
        message = body[:200].decode("utf-8", "replace").strip()
    if isinstance(parsed, dict):
        if error_type is None:
            raw_type = parsed.get("__type") or parsed.get("code") or parsed.get("Code")
            if isinstance(raw_type, str) and raw_type:
                error_type = raw_type.rsplit("#", 1)[-1].split(":", 1)[0]
        text = parsed.get("message") or parsed.get("Message") or ""
        message = text if isinstance(text, str) else json.dumps(text)
    return error_type, message


def _error_for(
    response: _Response, connection_id: str, method: str, size: int, attempts: int
) -> WsconnError:
    """The one mapping from an HTTP answer to a wsconn error."""
    status = response.status
    error_type, service_message = error_type_and_message(response.headers, response.body)
    first_line = service_message.strip().splitlines()[0] if service_message.strip() else ""
    label = f"{status} {error_type}" if error_type else f"{status} {response.reason}".strip()
    detail = f": {first_line}" if first_line else ""
    kind: type[WsconnError]
    if status == 410:
        kind, text = ConnectionGone, f"{connection_id} is not connected ({label})"
    elif status == 403:
        hint = first_line or "access denied"
        if error_type == "ForbiddenException":
            hint = f"{hint}: wrong stage, path or api-id, or the execute-api endpoint is disabled"
        kind, text = Forbidden, f"{error_type or 'Forbidden'}: {hint} ({status})"
    elif status == 413:
        kind, text = PayloadTooLarge, f"the service refused a {size}-byte message ({label})"
    elif status == 429:
        kind = Throttled
        text = f"{method} {connection_id} still throttled after {attempts} attempts ({label})"
    elif status >= 500:
        kind = ServerError
        text = f"{method} {connection_id} failed after {attempts} attempts ({label}){detail}"
    elif 300 <= status < 400:
        where = response.headers.get("location", "elsewhere")
        kind = ClientError
        text = (
            f"{method} {connection_id} was redirected ({status}) to {where}: the management API "
            "never redirects, so the endpoint is wrong (http instead of https? a proxy?)"
        )
    else:
        kind, text = ClientError, f"{method} {connection_id} was rejected ({label}){detail}"
    return kind(text, http_status=status, error_type=error_type, detail=service_message or None)


_TUNNEL = re.compile(r"Tunnel connection failed: ([^'\")]+)")


def _proxy_failure(exc: urllib3.exceptions.ProxyError, where: str, proxy: str | None) -> str:
    """What the proxy did, in words: urllib3 gives a tuple of nested exception reprs."""
    name = f"the proxy {proxy}" if proxy else "the proxy"
    variables = "HTTPS_PROXY / HTTP_PROXY (NO_PROXY lists hosts that bypass it)"
    text = str(exc)
    tunnel = _TUNNEL.search(text)
    if tunnel:
        return f"{name} refused the tunnel to {where}: {tunnel.group(1).strip()}; check {variables}"
    errno = _ERRNO.search(text)
    if errno:
        why = errno.group(1).strip().lower()
    elif "timed out" in text.lower():
        why = "timed out"
    else:
        why = "it closed the connection without answering"
    return f"cannot reach {name} (for {where}): {why}; check {variables}"


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^)'\"]+)")


def _network_error(
    exc: Exception, endpoint: Endpoint, timeout: float, proxy: str | None = None
) -> NetworkError:
    """One line for a transport failure: TLS, timeout, DNS, refused, reset, a proxy's refusal."""
    where = endpoint.netloc
    errors = urllib3.exceptions
    if isinstance(exc, errors.SSLError):
        reason = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            match = re.search(r"certificate verify failed: ([^(')]+)", reason)
            why = match.group(1).strip() if match else "certificate verify failed"
            message = (
                f"TLS: cannot verify the certificate of {where} ({why}); "
                "pass --ca-bundle PATH or set AWS_CA_BUNDLE to trust its CA"
            )
        elif "WRONG_VERSION_NUMBER" in reason:  # OpenSSL's words for an answer in plain HTTP
            message = (
                f"TLS handshake with {where} failed: the server does not speak TLS there "
                "(a plain-HTTP server, such as wsconn local: use http://)"
            )
        else:
            message = f"TLS handshake with {where} failed: {reason}"
        return NetworkError(message, error_type="tls")
    if isinstance(exc, errors.ProxyError):
        return NetworkError(_proxy_failure(exc, where, proxy), error_type="proxy")
    if isinstance(exc, errors.NameResolutionError):
        return NetworkError(f"cannot resolve {where}: no such host", error_type="connection")
    if isinstance(exc, errors.ConnectTimeoutError) and not isinstance(
        exc, errors.NewConnectionError
    ):
        return NetworkError(
            f"timed out after {timeout:g}s connecting to {where}", error_type="timeout"
        )
    if isinstance(exc, errors.ReadTimeoutError | TimeoutError):
        return NetworkError(
            f"timed out after {timeout:g}s waiting for {where}", error_type="timeout"
        )
    match = _ERRNO.search(str(exc))
    if match:
        why = match.group(1).strip().lower()
    elif "RemoteDisconnected" in str(exc) or "aborted" in str(exc):
        why = "the server closed the connection without answering"
    else:
        why = str(exc) or type(exc).__name__
    return NetworkError(f"cannot reach {where}: {why}", error_type="connection")
