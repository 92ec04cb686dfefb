"""AWS Signature Version 4 verification, written from the SigV4 specification.

Pure functions over strings and bytes (stdlib ``hashlib``/``hmac`` only), independent of any
signer: the gateway must catch a signer's mistakes, so it cannot share code with one.

What :func:`verify` checks, in this order, and what it raises (always :class:`SignatureError`,
which the gateway answers with HTTP 403):

1. an ``Authorization`` header is present (``MissingAuthenticationTokenException``);
2. it parses as ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` and the
   request carries ``X-Amz-Date`` or ``Date`` (``IncompleteSignatureException``);
3. the access key is the trusted one (``UnrecognizedClientException``);
4. the session token matches: present and equal when the trusted credentials have one, absent when
   they have none (``UnrecognizedClientException``);
5. the scope names service ``execute-api``, the gateway's region and ``aws4_request``
   (``InvalidSignatureException``);
6. the request date is within 5 minutes of the verifier's clock, and the scope's date is its date
   (``InvalidSignatureException``);
7. ``host``, ``x-amz-date`` (when that header is used) and ``x-amz-security-token`` (when a token
   is used) are signed (``InvalidSignatureException``);
8. the signature equals the one recomputed from the raw request target and the raw body
   (``InvalidSignatureException`` with the canonical request and string-to-sign, as AWS words it).

:func:`verify_presigned` checks a presigned (query-string) request the same way, reading the
``X-Amz-*`` query parameters instead of headers: a WebSocket upgrade to an ``AWS_IAM`` ``$connect``
route may be signed either way (browsers cannot set headers on an upgrade).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
TERMINATOR = "aws4_request"
MAX_SKEW = timedelta(minutes=5)
# The longest X-Amz-Expires SigV4 allows (7 days).
MAX_EXPIRES = 604800
EMPTY_PAYLOAD_HASH = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

# The exact text AWS answers for a signature mismatch (two placeholders filled in).
MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details.\n\n"
    "The Canonical String for this request should have been\n'{canonical}'\n\n"
    "The String-to-Sign should have been\n'{string_to_sign}'\n"
)
INVALID_TOKEN_MESSAGE = "The security token included in the request is invalid."


class SignatureError(Exception):
    """A request whose signature the verifier refuses; ``error_type`` is AWS's error code."""

    def __init__(self, error_type: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        # A short "why" for event streams; the message is what AWS would answer.
        self.reason = reason


@dataclass(frozen=True)
class AuthorizationHeader:
    """The parts of an ``AWS4-HMAC-SHA256`` Authorization header."""

    access_key: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


@dataclass(frozen=True)
class VerifiedRequest:
    """What a successful verification learned about the request."""

    access_key: str
    amz_date: str
    canonical_request: str
    string_to_sign: str


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _utf8(text: str) -> bytes:
    # aiohttp hands over undecodable header bytes as surrogates; hash the original bytes.
    return text.encode("utf-8", "surrogateescape")


def _incomplete(message: str, reason: str) -> SignatureError:
    return SignatureError("IncompleteSignatureException", message, reason)


def _invalid(message: str, reason: str) -> SignatureError:
    return SignatureError("InvalidSignatureException", message, reason)


def parse_authorization(value: str) -> AuthorizationHeader:
    """Parse an Authorization header value; raise ``IncompleteSignatureException`` if malformed."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(
            f"Authorization header requires the '{ALGORITHM}' algorithm. Authorization={value}",
            "unsupported authorization algorithm",
        )
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            raise _incomplete(
                "Invalid key=value pair (missing equal-sign) in Authorization header "
                f"(hashed with SHA-256 and encoded with Base64): '{part.strip()}'.",
                "malformed Authorization header",
            )
        params[key] = val
    missing = [name for name in ("Credential", "Signature", "SignedHeaders") if name not in params]
    if missing:
        text = " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
        raise _incomplete(f"{text} Authorization={value}", "malformed Authorization header")
    scope = params["Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise _incomplete(
            "Authorization header requires 'Credential' parameter in the form "
            f"'<access key>/<date>/<region>/<service>/{TERMINATOR}'. Authorization={value}",
            "malformed credential scope",
        )
    signed = tuple(params["SignedHeaders"].lower().split(";"))
    if not all(signed) or not params["Signature"]:
        raise _incomplete(
            f"Authorization header has empty 'SignedHeaders' or 'Signature'. Authorization={value}",
            "malformed Authorization header",
        )
    access_key, date, region, service, terminator = scope
    return AuthorizationHeader(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        terminator=terminator,
        signed_headers=signed,
        signature=params["Signature"],
    )


def remove_dot_segments(path: str) -> str:
    """Drop ``.``, ``..`` and empty segments of a path, as SigV4 normalisation does."""
    if not path:
        return "/"
    output: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if output:
                output.pop()
        else:
            output.append(segment)
    # Keep the trailing slash a client sent: it is part of the resource it signed.
    trailing = "/" if path.endswith("/") and output else ""
    return "/" + "/".join(output) + trailing


def uri_encode(text: str, *, keep_slash: bool = False) -> str:
    """Percent-encode everything but ``A-Za-z0-9-._~`` (and ``/`` when asked), in UTF-8."""
    return quote(text, safe="/~" if keep_slash else "~", encoding="utf-8", errors="surrogateescape")


def canonical_uri(raw_path: str) -> str:
    """The canonical URI of a non-S3 request: the wire path normalised, then encoded once more.

    Wire ``/dev/%40connections/R0oXAdfD0kwCH6w%3D`` becomes
    ``/dev/%2540connections/R0oXAdfD0kwCH6w%253D``.
    """
    return uri_encode(remove_dot_segments(raw_path), keep_slash=True)


def canonical_query(raw_query: str) -> str:
    """Sorted ``key=value`` pairs, each side decoded then encoded the SigV4 way."""
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((uri_encode(unquote(key)), uri_encode(unquote(value))))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _collapse(value: str) -> str:
    return " ".join(value.split())


def canonical_headers(headers: Iterable[tuple[str, str]], signed_headers: Sequence[str]) -> str:
    """``name:value\\n`` for each signed header; repeated headers joined by ``,``."""
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(_collapse(value))
    return "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in signed_headers)


def canonical_request(
    method: str,
    raw_target: str,
    headers: Iterable[tuple[str, str]],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request for a raw request target (path and query as sent)."""
    raw_path, _, raw_query = raw_target.partition("?")
    return "\n".join(
        [
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(raw_query),
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def credential_scope(date: str, region: str, service: str) -> str:
    """``YYYYMMDD/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/{TERMINATOR}"


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The SigV4 string to sign for a canonical request."""
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{sha256_hex(_utf8(canonical))}"


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key: HMAC chain over date, region, service and terminator."""
    key = _utf8("AWS4" + secret_key)
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, _utf8(part), hashlib.sha256).digest()
    return key


def signature(secret_key: str, date: str, region: str, service: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of the string to sign under the derived key."""
    key = signing_key(secret_key, date, region, service)
    return hmac.new(key, _utf8(to_sign), hashlib.sha256).hexdigest()


def format_amz_date(moment: datetime) -> str:
    """``YYYYMMDDTHHMMSSZ`` in UTC."""
    return moment.astimezone(timezone.utc).strftime(AMZ_DATE_FORMAT)


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    found = [value for key, value in headers if key.lower() == name]
    return ",".join(found) if found else None


def _request_date(headers: Sequence[tuple[str, str]]) -> tuple[datetime, str, str]:
    """The request's date, its basic-format string and the header it came from."""
    amz_date = _header(headers, "x-amz-date")
    if amz_date is not None:
        try:
            moment = datetime.strptime(amz_date.strip(), AMZ_DATE_FORMAT)
        except ValueError:
            raise _incomplete(
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See "
                "http://en.wikipedia.org/wiki/ISO_8601",
                "unparseable X-Amz-Date",
            ) from None
        return moment.replace(tzinfo=timezone.utc), amz_date.strip(), "x-amz-date"
    http_date = _header(headers, "date")
    if http_date is not None:
        try:
            parsed: datetime | None = parsedate_to_datetime(http_date)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            return parsed, format_amz_date(parsed), "date"
    raise _incomplete(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        "no X-Amz-Date or Date header",
    )


def verify(
    *,
    method: str,
    raw_target: str,
    headers: Sequence[tuple[str, str]],
    payload_hash: str,
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    now: datetime,
    service: str = SERVICE,
) -> VerifiedRequest:
    """Verify one request against the trusted credentials; raise :class:`SignatureError` if refused.

    ``raw_target`` is the request target exactly as received (path and query, never decoded),
    ``headers`` every header as received, ``payload_hash`` the hex SHA-256 of the raw body.
    """
    authorization = _header(headers, "authorization")
    if authorization is None:
        raise SignatureError(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
            "no Authorization header",
        )
    auth = parse_authorization(authorization)
    moment, amz_date, date_header = _request_date(headers)

    if auth.access_key != access_key:
        raise SignatureError(
            "UnrecognizedClientException", INVALID_TOKEN_MESSAGE, "unknown access key"
        )
    _check_token(_header(headers, "x-amz-security-token"), token)

    if auth.service != service:
        raise _invalid(
            f"Credential should be scoped to correct service: '{service}'. ",
            f"scope names service {auth.service!r}",
        )
    if auth.region != region:
        raise _invalid(
            "Credential should be scoped to a valid region. ",
            f"scope names region {auth.region!r}, gateway is {region!r}",
        )
    if auth.terminator != TERMINATOR:
        raise _invalid(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{auth.terminator}'. ",
            "bad scope terminator",
        )

    now_text = format_amz_date(now)
    if moment < now - MAX_SKEW:
        raise _invalid(
            f"Signature expired: {amz_date} is now earlier than "
            f"{format_amz_date(now - MAX_SKEW)} ({now_text} - 5 min.)",
            "request date more than 5 minutes in the past",
        )
    if moment > now + MAX_SKEW:
        raise _invalid(
            f"Signature not yet current: {amz_date} is still later than "
            f"{format_amz_date(now + MAX_SKEW)} ({now_text} + 5 min.)",
            "request date more than 5 minutes in the future",
        )
    if auth.date != amz_date[:8]:
        raise _invalid(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
            f"HTTP: '{auth.date}' != '{amz_date[:8]}', from '{date_header}'.",
            "scope date differs from request date",
        )

    required = ["host"]
    if date_header == "x-amz-date":
        required.append("x-amz-date")
    if token is not None:
        required.append("x-amz-security-token")
    for name in required:
        if name not in auth.signed_headers:
            label = "'Host' or ':authority'" if name == "host" else f"'{name}'"
            raise _invalid(
                f"{label} must be a 'SignedHeader' in the AWS Authorization.",
                f"header {name!r} not signed",
            )

    canonical = canonical_request(method, raw_target, headers, auth.signed_headers, payload_hash)
    to_sign = string_to_sign(amz_date, credential_scope(auth.date, region, service), canonical)
    expected = signature(secret_key, auth.date, region, service, to_sign)
    if not hmac.compare_digest(_utf8(expected), _utf8(auth.signature)):
        raise _invalid(
            MISMATCH_MESSAGE.format(canonical=canonical, string_to_sign=to_sign),
            "signature does not match",
        )
    return VerifiedRequest(
        access_key=auth.access_key,
        amz_date=amz_date,
        canonical_request=canonical,
        string_to_sign=to_sign,
    )


def _check_token(sent_token: str | None, token: str | None) -> None:
    if token is None and sent_token is not None:
        raise SignatureError(
            "UnrecognizedClientException", INVALID_TOKEN_MESSAGE, "unexpected session token"
        )
    if token is not None and (
        sent_token is None or not hmac.compare_digest(_utf8(sent_token), _utf8(token))
    ):
        why = "missing session token" if sent_token is None else "wrong session token"
        raise SignatureError("UnrecognizedClientException", INVALID_TOKEN_MESSAGE, why)


def verify_presigned(
    *,
    method: str,
    raw_target: str,
    headers: Sequence[tuple[str, str]],
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    now: datetime,
    service: str = SERVICE,
) -> VerifiedRequest:
    """Verify a presigned request (``X-Amz-Algorithm``, ``-Credential``, ``-Date``, ``-Expires``,
    ``-SignedHeaders``, ``-Signature`` and ``-Security-Token`` in the query string).

    The same checks as :func:`verify`, plus expiry (``X-Amz-Date`` + ``X-Amz-Expires``). The
    request has no body: its payload hash is the empty one (what botocore signs over http) or
    ``UNSIGNED-PAYLOAD`` (what presigned URLs usually carry); either is accepted.
    """
    raw_path, _, raw_query = raw_target.partition("?")
    # Decoded as the canonical query decodes them ('+' stays '+').
    params = {
        unquote(name): unquote(value)
        for name, _, value in (item.partition("=") for item in raw_query.split("&") if item)
    }
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise _incomplete(
            f"X-Amz-Algorithm must be '{ALGORITHM}'.", "unsupported or missing X-Amz-Algorithm"
        )
    missing = [
        name
        for name in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")
        if not params.get(name)
    ]
    if missing:
        raise _incomplete(
            " ".join(f"AWS query-string parameters must include '{name}'." for name in missing),
            "incomplete presigned query string",
        )
    scope = params["X-Amz-Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise _incomplete(
            "X-Amz-Credential must be in the form "
            f"'<access key>/<date>/<region>/<service>/{TERMINATOR}'.",
            "malformed credential scope",
        )
    key, date, scope_region, scope_service, terminator = scope
    amz_date = params["X-Amz-Date"]
    try:
        moment = datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=timezone.utc)
        expires = int(params.get("X-Amz-Expires", str(MAX_EXPIRES)))
    except ValueError:
        raise _incomplete(
            f"X-Amz-Date must be in ISO-8601 'basic format' and X-Amz-Expires a number. "
            f"Got '{amz_date}'.",
            "unparseable X-Amz-Date or X-Amz-Expires",
        ) from None
    if key != access_key:
        raise SignatureError(
            "UnrecognizedClientException", INVALID_TOKEN_MESSAGE, "unknown access key"
        )
    _check_token(params.get("X-Amz-Security-Token"), token)
    if scope_service != service:
        raise _invalid(
            f"Credential should be scoped to correct service: '{service}'. ",
            f"scope names service {scope_service!r}",
        )
    if scope_region != region:
        raise _invalid(
            "Credential should be scoped to a valid region. ",
            f"scope names region {scope_region!r}, gateway is {region!r}",
        )
    if terminator != TERMINATOR or date != amz_date[:8]:
        raise _invalid(
            "Credential should be scoped with a valid terminator and the date of X-Amz-Date. ",
            "bad scope terminator or date",
        )
    if not 0 < expires <= MAX_EXPIRES:
        raise _invalid(
            f"X-Amz-Expires must be between 1 and {MAX_EXPIRES} seconds. ", "bad X-Amz-Expires"
        )
    now_text = format_amz_date(now)
    if moment > now + MAX_SKEW:
        raise _invalid(
            f"Signature not yet current: {amz_date} is still later than "
            f"{format_amz_date(now + MAX_SKEW)} ({now_text} + 5 min.)",
            "request date more than 5 minutes in the future",
        )
    if now > moment + timedelta(seconds=expires):
        raise _invalid(
            f"Signature expired: {amz_date} is now earlier than "
            f"{format_amz_date(now - timedelta(seconds=expires))} ({now_text} - {expires} sec.)",
            "presigned URL expired",
        )
    signed_headers = tuple(params["X-Amz-SignedHeaders"].lower().split(";"))
    if "host" not in signed_headers:
        raise _invalid(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            "header 'host' not signed",
        )
    # Everything but the signature itself is signed, in the order the canonical query sorts.
    unsigned_query = "&".join(
        item for item in raw_query.split("&") if item.partition("=")[0] != "X-Amz-Signature"
    )
    target = f"{raw_path}?{unsigned_query}"
    sent = params["X-Amz-Signature"]
    tried: list[tuple[str, str]] = []
    for payload_hash in (EMPTY_PAYLOAD_HASH, UNSIGNED_PAYLOAD):
        canonical = canonical_request(method, target, headers, signed_headers, payload_hash)
        to_sign = string_to_sign(amz_date, credential_scope(date, region, service), canonical)
        expected = signature(secret_key, date, region, service, to_sign)
        if hmac.compare_digest(_utf8(expected), _utf8(sent)):
            return VerifiedRequest(key, amz_date, canonical, to_sign)
        tried.append((canonical, to_sign))
    canonical, to_sign = tried[0]
    raise _invalid(
        MISMATCH_MESSAGE.format(canonical=canonical, string_to_sign=to_sign),
        "signature does not match",
    )


def is_presigned(raw_target: str) -> bool:
    """Whether a request target carries a presigned signature in its query string."""
    query = raw_target.partition("?")[2]
    return any(item.partition("=")[0] == "X-Amz-Signature" for item in query.split("&"))
