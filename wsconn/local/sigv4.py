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

Presigned (query-string) authentication is not supported: the @connections API is called with an
``Authorization`` header by every SDK.
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
    sent_token = _header(headers, "x-amz-security-token")
    if token is None and sent_token is not None:
        raise SignatureError(
            "UnrecognizedClientException", INVALID_TOKEN_MESSAGE, "unexpected session token"
        )
    if token is not None and (
        sent_token is None or not hmac.compare_digest(_utf8(sent_token), _utf8(token))
    ):
        why = "missing session token" if sent_token is None else "wrong session token"
        raise SignatureError("UnrecognizedClientException", INVALID_TOKEN_MESSAGE, why)

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
