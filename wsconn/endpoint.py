"""Where to send: the management endpoint and the connection id, from any form a user has.

Resolution order (the README documents the same):
  1. a connection URL given as CONNECTION_ID;
  2. --endpoint / --endpoint-url (https, http, wss, ws; trailing '/' or '/@connections' tolerated);
  3. --api-id + --stage (+ region) -> https://{api-id}.execute-api.{region}.amazonaws.com/{stage};
  4. WSCONN_ENDPOINT, then AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI, then AWS_ENDPOINT_URL.
Nothing here does I/O; only the standard library is imported.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from wsconn.errors import ConfigError, UsageError, WsconnError

ENV_ENDPOINTS = ("WSCONN_ENDPOINT", "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", "AWS_ENDPOINT_URL")

# "{api-id}.execute-api.{region}.amazonaws.com[.cn]", also "{api-id}-{vpce}.execute-api.{region}.vpce..."
EXECUTE_API_HOST = re.compile(
    r"^(?P<api>[^.]*)\.execute-api\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$"
)
# "@connections" as typed literally or percent-encoded (either hex case).
_CONNECTIONS_SEGMENT = re.compile(r"/(?:@|%40)connections(?=/|$)", re.IGNORECASE)
_SCHEMES = {"https": "https", "http": "http", "wss": "https", "ws": "http"}
# Characters allowed raw in a path segment (RFC 3986 pchar) plus '/' and '%' (keep typed escapes).
_PATH_SAFE = "/!$&'()*+,;=:@%-._~"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True)
class Endpoint:
    """A management endpoint: scheme, host (with a non-default port) and the stage path."""

    scheme: str
    netloc: str
    base_path: str  # "" or "/stage" or "/base/path", as it goes on the wire, no trailing slash
    source: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.base_path}"

    @property
    def host_region(self) -> str | None:
        """The region named by an execute-api host, else None (custom domains, loopback)."""
        return region_from_host(self.netloc)

    def connection_path(self, connection_id: str) -> str:
        """The wire path for one connection: the id percent-encoded, only A-Za-z0-9-._~ left as is."""
        return f"{self.base_path}/@connections/{encode_connection_id(connection_id)}"

    def connection_url(self, connection_id: str) -> str:
        return f"{self.scheme}://{self.netloc}{self.connection_path(connection_id)}"


@dataclass(frozen=True)
class Target:
    """One connection on one endpoint: everything needed to address a request."""

    endpoint: Endpoint
    connection_id: str  # decoded: exactly the id the service issued

    @property
    def url(self) -> str:
        return self.endpoint.connection_url(self.connection_id)


def region_from_host(netloc: str) -> str | None:
    """The region an execute-api host (port allowed) names, else None (custom domains, loopback)."""
    match = EXECUTE_API_HOST.match(netloc.rsplit(":", 1)[0].lower())
    return match.group("region") if match else None


def encode_connection_id(connection_id: str) -> str:
    """Percent-encode an id with only unreserved characters kept: '=' -> %3D, '+' -> %2B, '/' -> %2F."""
    return quote(connection_id, safe="")


def decode_connection_id(text: str) -> str:
    """An id as the user typed it: '%XX' escapes are decoded once (real ids never contain '%')."""
    return unquote(text) if _ESCAPE.search(text) else text


MAX_ID_LENGTH = 128
# What a connection id may hold: the service issues 15 of [A-Za-z0-9_-] then '='; '+' and '/'
# (base64's other two) are allowed too, so that nothing a real id could be is refused.
ID_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/=")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")
# The mistakes that put a stray character in an id, the character named and what to do
# (a quote counts only where it starts the id: "it's" in a comment is not a quoted id).
_ID_HINTS = (
    ('"', "it is quoted: with jq, print ids with jq -r"),
    ("'", "it is quoted: give the id without quotes"),
    ("#", "a comment goes on its own line, starting with #"),
    (",", "give one id per line, not comma-separated"),
    (";", "give one id per line"),
    (" ", "ids hold no spaces: one id per line, nothing after it"),
    ("\t", "ids hold no tabs: one id per line, nothing after it"),
)


def check_connection_id(connection_id: str) -> str:
    """The id if it can be one, else a usage error naming the character that cannot be in it.

    Ids are 1..128 of A-Z a-z 0-9 _ - + / = (real ones: 15 of [A-Za-z0-9_-] then '='). A line
    that is not an id must never be sent: the service answers 410 to some of them, and a live
    connection would then be reported gone.
    """
    if not connection_id.strip():
        raise UsageError("the connection id is empty")
    try:
        connection_id.encode("utf-8")
    except UnicodeEncodeError:  # undecodable input bytes, kept as surrogates
        raise UsageError(
            f"the connection id '{readable(connection_id)}' is not valid UTF-8 "
            "(ids are A-Z a-z 0-9 _ - + / =)"
        ) from None
    if len(connection_id) > MAX_ID_LENGTH:
        raise UsageError(
            f"the connection id is {len(connection_id)} characters long; ids have 16 "
            f"(at most {MAX_ID_LENGTH} are accepted)"
        )
    bad = [ch for ch in connection_id if ch not in ID_ALPHABET]
    if not bad:
        if connection_id == "null":  # no id is: it is what jq -r prints for a missing field
            raise UsageError(
                "the connection id is 'null': the JSON it was read from has none there "
                "(jq -r prints null for a missing or null field; wsconn listen --whoami "
                "reports null when it could not learn the id)"
            )
        return connection_id
    char, hint = next(
        ((c, h) for c, h in _ID_HINTS if (connection_id.startswith(c) if c in "\"'" else c in bad)),
        (bad[0], ""),
    )
    raise UsageError(
        f"the connection id {connection_id!r} holds {char!r}, which no id can hold"
        + (f": {hint}" if hint else " (ids are A-Z a-z 0-9 _ - + / =)")
    )


def readable(text: str) -> str:
    """Text with undecodable bytes (kept as surrogates) shown as \\xNN escapes: valid UTF-8."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte made
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def check_region(region: str, source: str) -> str:
    """A region name (e.g. us-east-1), else a usage error (typed) or configuration error."""
    if not _REGION.fullmatch(region):
        message = f"{source} {region!r} is not an AWS region name (like us-east-1 or eu-west-2)"
        raise (UsageError if source == "--region" else ConfigError)(message)
    return region


def is_url(text: str) -> bool:
    return "://" in text


@functools.lru_cache(maxsize=16)  # a fan-out resolves the same --endpoint for every id
def parse_endpoint(url: str, source: str) -> Endpoint:
    """Parse an endpoint URL of any accepted form; raise ConfigError with the reason if it is not one."""
    endpoint, connection_id = _split_url(url, source)
    if connection_id:
        raise _bad(
            source,
            f"{source} {url!r} names a connection; give the endpoint only "
            "(https://{api-id}.execute-api.{region}.amazonaws.com/{stage}) "
            "or pass the whole connection URL as CONNECTION_ID",
        )
    return endpoint


def parse_connection_url(url: str) -> Target:
    """A whole connection URL: https://host/stage/@connections/{id} ('@' or '%40', id encoded or not)."""
    endpoint, connection_id = _split_url(url, "connection URL")
    if not connection_id:
        raise UsageError(
            f"connection URL {url!r} has no '/@connections/{{id}}' part; "
            "pass the endpoint with --endpoint and the id as CONNECTION_ID"
        )
    return Target(endpoint, connection_id)


def _bad(source: str, message: str) -> WsconnError:
    """A bad URL is a usage error when typed, a configuration error when read from the env."""
    typed = source.startswith("--") or source == "connection URL"
    return (UsageError if typed else ConfigError)(message)


def _split_url(url: str, source: str) -> tuple[Endpoint, str | None]:
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _bad(source, f"{source} {url!r} is not a valid URL: {exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise _bad(source, f"{source} {url!r} must start with https://, http://, wss:// or ws://")
    if not parts.hostname:
        raise _bad(source, f"{source} {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise _bad(source, f"{source} {url!r} must not contain a user name or password")
    if parts.query or parts.fragment:
        raise _bad(source, f"{source} {url!r} must not have a query string or fragment")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if host.startswith("execute-api."):
        raise _bad(
            source,
            f"{source} {url!r} has no api-id: the management endpoint is "
            "https://{api-id}.execute-api.{region}.amazonaws.com/{stage}",
        )
    default_port = 443 if scheme == "https" else 80
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    path = parts.path
    connection_id: str | None = None
    match = _CONNECTIONS_SEGMENT.search(path)
    if match:
        raw_id = path[match.end() + 1 :].rstrip("/")
        path = path[: match.start()]
        if "/" in raw_id:
            raise _bad(source, f"{source} {url!r}: a '/' in a connection id must be written %2F")
        connection_id = unquote(raw_id) if raw_id else None
    base_path = _wire_path(path.rstrip("/"))
    if not base_path and EXECUTE_API_HOST.match(host):
        # Without the stage every call answers 403: the stage is the first path segment.
        raise _bad(
            source,
            f"{source} {url!r} has no stage: use https://{host}/{{stage}}"
            + ("/@connections/{id}" if connection_id else ""),
        )
    return Endpoint(scheme, netloc, base_path, source), connection_id


def _wire_path(path: str) -> str:
    """A path as urllib3 will send it: escapes upper-cased, a lone '%' and non-pchars encoded."""
    path = re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", path)
    path = _ESCAPE.sub(lambda match: match.group(0).upper(), path)
    return quote(path, safe=_PATH_SAFE)


def api_endpoint(api_id: str, stage: str, region: str) -> Endpoint:
    """https://{api-id}.execute-api.{region}.amazonaws.com/{stage} (.com.cn in China regions)."""
    if not re.fullmatch(r"[a-z0-9]{1,64}", api_id):
        raise UsageError(f"--api-id {api_id!r} is not an API id (lower-case letters and digits)")
    if not stage or "/" in stage:
        raise UsageError(f"--stage {stage!r} is not a stage name")
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return Endpoint(
        "https",
        f"{api_id}.execute-api.{region}.{suffix}",
        "/" + _wire_path(stage),
        "--api-id/--stage",
    )


def resolve_target(
    connection: str,
    *,
    endpoint: str | None,
    api_id: str | None,
    stage: str | None,
    region: Callable[[], str | None],
    environ: Mapping[str, str],
) -> Target:
    """Resolve where one request goes, in the documented order.

    `region` is called only when --api-id needs a region (so credentials and config files are
    not read for nothing).
    """
    if is_url(connection):
        target = parse_connection_url(connection)
        check_connection_id(target.connection_id)
        return target
    # Real ids never hold white space: surrounding spaces come from copying.
    connection_id = check_connection_id(decode_connection_id(connection.strip()))
    if endpoint:
        return Target(parse_endpoint(endpoint, "--endpoint"), connection_id)
    if api_id or stage:
        if not (api_id and stage):
            raise UsageError("--api-id and --stage go together (or use --endpoint URL)")
        resolved_region = region()
        if not resolved_region:
            raise ConfigError(
                "no region for --api-id: pass --region, or set AWS_REGION or the profile's region"
            )
        check_region(resolved_region, "the region")
        return Target(api_endpoint(api_id, stage, resolved_region), connection_id)
    for name in ENV_ENDPOINTS:
        value = environ.get(name, "").strip()
        if value:
            return Target(parse_endpoint(value, name), connection_id)
    raise ConfigError(
        "no endpoint: pass --endpoint https://{api-id}.execute-api.{region}.amazonaws.com/{stage}, "
        "--api-id ID --stage NAME, a whole connection URL, or set WSCONN_ENDPOINT"
    )
