"""Credentials and region from the botocore chain, and SigV4 signing of one request.

Credentials resolve exactly as the AWS CLI resolves them (environment, --profile / AWS_PROFILE with
credential_process, SSO and assume-role, config files, container and instance metadata), because
botocore's own session does it. Signing is our own small SigV4 for `execute-api`: it signs the path
exactly as it goes on the wire and caches the derived key for the day, so a signature costs two HMACs.
It also signs a WebSocket upgrade for `wsconn listen`: in headers, or presigned in the query string.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from wsconn.errors import ConfigError, NoCredentials

if TYPE_CHECKING:
    import botocore.session

SERVICE = "execute-api"
ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# How long a presigned upgrade stays valid: it is used at once; SigV4 allows 5 minutes of skew.
PRESIGN_EXPIRES = 300


@dataclass(frozen=True)
class Credentials:
    """One set of keys. Its repr never shows the secret key or the token."""

    access_key: str
    secret_key: str
    token: str | None
    source: (
        str  # botocore's method: env, shared-credentials-file, custom-process, sso, assume-role...
    )

    def __repr__(self) -> str:
        token = ", token=<redacted>" if self.token else ""
        return f"Credentials(access_key={self.access_key!r}, source={self.source!r}{token})"


class AwsConfig:
    """AWS settings for one profile, as botocore (and so the AWS CLI) resolves them.

    Start-up matters for a one-shot command, and a botocore session costs ~0.1 s to import, so the
    common cases take botocore's own first steps without it: keys in the environment are exactly
    what botocore's chain returns first (its EnvProvider) when no --profile is given, and region
    and ca_bundle are read from the profile's section of the config file with botocore's own
    parser (botocore.configloader). Everything else goes through a real botocore session.
    """

    def __init__(self, profile: str | None) -> None:
        self.profile = profile  # --profile; AWS_PROFILE is botocore's to read
        self._session: botocore.session.Session | None = None
        self._section: dict[str, object] | None = None
        self._credentials: Credentials | None = None

    def _botocore(self) -> botocore.session.Session:
        if self._session is None:
            import botocore.session

            self._session = botocore.session.Session(profile=self.profile)
        return self._session

    def _profile_name(self) -> str:
        return self.profile_and_source()[0]

    def _setting(self, name: str) -> str | None:
        """A setting of the active profile in the config file (botocore's parser, no session)."""
        if self._section is None:
            path = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
            if self._profile_name() == "default" and _nothing_in(path):
                self._section = {}  # what botocore's parser would find, without importing it
                return None
            import botocore.configloader
            import botocore.exceptions

            try:
                profiles = botocore.configloader.load_config(path).get("profiles", {})
            except botocore.exceptions.ConfigNotFound:
                profiles = {}
            except botocore.exceptions.ConfigParseError as exc:
                raise ConfigError(str(exc)) from None
            section = profiles.get(self._profile_name())
            if section is None and self._profile_name() != "default":
                # A profile the config file lacks: botocore may find it in the credentials
                # file, or raise ProfileNotFound with its own message.
                with _config_errors():
                    value = self._botocore().get_config_variable(name)
                return str(value) if value else None
            self._section = section or {}
        value = self._section.get(name)
        return str(value) if value else None

    def configured_region(self) -> str | None:
        """AWS_REGION, else AWS_DEFAULT_REGION, else the profile's `region`."""
        return self.configured_region_and_source()[0]

    def configured_region_and_source(self) -> tuple[str | None, str]:
        """The configured region and where it was found."""
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if os.environ.get(name):
                return os.environ[name], name
        return self._setting("region"), f"profile {self._profile_name()}"

    def ca_bundle(self) -> str | None:
        """AWS_CA_BUNDLE, else the profile's `ca_bundle`."""
        return self.ca_bundle_and_source()[0]

    def ca_bundle_and_source(self) -> tuple[str | None, str]:
        if os.environ.get("AWS_CA_BUNDLE"):
            return os.environ["AWS_CA_BUNDLE"], "AWS_CA_BUNDLE"
        return self._setting("ca_bundle"), f"profile {self._profile_name()}"

    def profile_and_source(self) -> tuple[str, str]:
        """The profile botocore reads, and why."""
        if self.profile:
            return self.profile, "--profile"
        for name in ("AWS_DEFAULT_PROFILE", "AWS_PROFILE"):
            if os.environ.get(name):
                return os.environ[name], name
        return "default", "none set"

    def credentials(self) -> Credentials:
        """Resolve the credential chain once; raise ConfigError with the reason when it fails."""
        if self._credentials is None:
            self._credentials = self._resolve_credentials()
        return self._credentials

    def _resolve_credentials(self) -> Credentials:
        if self.profile is None:
            found_in_env = _env_credentials()
            if found_in_env is not None:
                return found_in_env
        with _config_errors():
            found = self._botocore().get_credentials()
            if found is None:
                raise NoCredentials(
                    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    "pass --profile NAME, or run `aws configure` / `aws sso login`"
                )
            frozen = found.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise ConfigError("the AWS credentials found are incomplete (no access key or secret)")
        return Credentials(
            frozen.access_key, frozen.secret_key, frozen.token or None, str(found.method)
        )


def _nothing_in(path: str) -> bool:
    """A config file that is missing or empty (botocore expands the path the same way)."""
    expanded = os.path.expandvars(os.path.expanduser(path))
    try:
        return not os.path.isfile(expanded) or os.path.getsize(expanded) == 0
    except OSError:
        return False  # let botocore's parser say what is wrong


def _env_credentials() -> Credentials | None:
    """What botocore's EnvProvider returns, when botocore would return it as plain keys.

    Partial keys and AWS_CREDENTIAL_EXPIRATION (refreshable keys) are left to botocore itself.
    """
    env = os.environ
    access_key = env.get("AWS_ACCESS_KEY_ID", "")
    secret_key = env.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key or env.get("AWS_CREDENTIAL_EXPIRATION"):
        return None
    token = next((env[n] for n in ("AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN") if env.get(n)), None)
    return Credentials(access_key, secret_key, token, "env")


@contextmanager
def _config_errors() -> Iterator[None]:
    """Turn botocore's configuration and credential failures into one-line ConfigErrors."""
    import botocore.exceptions

    try:
        yield
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigError(
            f"{exc} (profiles are read from {os.environ.get('AWS_CONFIG_FILE', '~/.aws/config')} "
            f"and {os.environ.get('AWS_SHARED_CREDENTIALS_FILE', '~/.aws/credentials')})"
        ) from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise ConfigError(f"could not load AWS credentials or config: {exc}") from None
    except RuntimeError as exc:  # botocore: "refreshed credentials are still expired"
        raise ConfigError(f"the AWS credentials are expired: {exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # botocore's reading of what a credential_process printed, when it is not the JSON
        # object the AWS CLI expects.
        raise ConfigError(
            f"could not load AWS credentials: {type(exc).__name__}: {exc} "
            "(does the profile's credential_process print the JSON the AWS CLI expects?)"
        ) from None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def canonical_uri(wire_path: str) -> str:
    """The path as sent, dot segments removed, percent-encoded once more (SigV4 for every
    service but S3)."""
    return quote(remove_dot_segments(wire_path) or "/", safe="/~")


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, as AWS applies it (and botocore): empty segments go too."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and kept else ""
    return first + "/".join(kept) + last


class Signer:
    """SigV4 for one set of credentials, one region, service execute-api.

    The signing key depends only on the secret, the date, the region and the service, so it is
    derived once per UTC day instead of four HMACs per request.
    """

    def __init__(self, credentials: Credentials, region: str, service: str = SERVICE) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._key: tuple[str, bytes] = ("", b"")  # (date, key), replaced in one assignment

    def _signing_key(self, date: str) -> bytes:
        cached_date, key = self._key  # one read: safe when workers sign from many threads
        if cached_date != date:
            key = _hmac(("AWS4" + self.credentials.secret_key).encode("utf-8"), date)
            key = _hmac(key, self.region)
            key = _hmac(key, self.service)
            key = _hmac(key, "aws4_request")
            self._key = (date, key)
        return key

    def sign(
        self,
        method: str,
        host: str,
        wire_path: str,
        body: bytes,
        now: datetime | None = None,
        query: str = "",
    ) -> SignedHeaders:
        """The headers to add to a request whose Host header is `host`, path is `wire_path`
        and query string (as sent, without '?') is `query`."""
        moment = now or datetime.now(timezone.utc)
        amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        headers = {"host": host, "x-amz-date": amz_date}
        if self.credentials.token:
            headers["x-amz-security-token"] = self.credentials.token
        signed_names = ";".join(headers)  # already sorted: host < x-amz-date < x-amz-security-token
        canonical_request = "\n".join(
            (
                method,
                canonical_uri(wire_path),
                canonical_query(query),  # "" on @connections
                # SigV4's trimall: runs of spaces inside a value (a session token's) count as one.
                "".join(f"{name}:{' '.join(value.split())}\n" for name, value in headers.items()),
                signed_names,
                _payload_hash(body),
            )
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        string_to_sign = "\n".join(
            (ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
        )
        signature = hmac.new(
            self._signing_key(date), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers["authorization"] = (
            f"{ALGORITHM} Credential={self.credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return SignedHeaders(headers, canonical_request, string_to_sign)

    def presign(
        self,
        method: str,
        host: str,
        wire_path: str,
        query: str = "",
        expires: int = PRESIGN_EXPIRES,
        now: datetime | None = None,
    ) -> str:
        """The query string that signs a request in itself (SigV4 "presigned URL"): `query` (as
        sent, without '?') followed by the X-Amz-* parameters, the signature last.

        Only `host` is signed, over an empty payload: what a proxy that drops headers keeps.
        """
        moment = now or datetime.now(timezone.utc)
        amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        params = [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{self.credentials.access_key}/{scope}"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        if self.credentials.token:
            params.append(("X-Amz-Security-Token", self.credentials.token))
        signed_query = "&".join(
            part for part in (query, "&".join(f"{k}={_uri_encode(v)}" for k, v in params)) if part
        )
        canonical_request = "\n".join(
            (
                method,
                canonical_uri(wire_path),
                canonical_query(signed_query),
                f"host:{host.strip()}\n",
                "host",
                EMPTY_SHA256,
            )
        )
        string_to_sign = "\n".join(
            (ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
        )
        signature = hmac.new(
            self._signing_key(date), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        return f"{signed_query}&X-Amz-Signature={signature}"


def _uri_encode(text: str) -> str:
    """SigV4's URI encoding: everything but A-Z a-z 0-9 - _ . ~ percent-encoded (UTF-8)."""
    return quote(text, safe="-_.~")


def canonical_query(query: str) -> str:
    """SigV4's canonical query string of a query as sent: each name and value decoded once and
    encoded again (only A-Za-z0-9-_.~ raw), sorted by name then value, `=` always present."""
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_uri_encode(unquote(name)), _uri_encode(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


class RequestSigner:
    """SigV4 for many requests that differ only in their connection and second (the fan-out).

    Everything else is computed once: the signed-header names and their canonical lines, the
    body's hash, the canonical path up to the connection, the scope and the day's key. Signing
    one request is then one SHA-256 and one HMAC, with the same result as `Signer.sign`.
    """

    def __init__(self, signer: Signer, method: str, host: str, prefix: str, body: bytes) -> None:
        """`prefix`: the wire path up to the encoded connection id ("/stage/@connections/")."""
        self._signer = signer
        self._method = method
        self._host = host
        self._prefix = prefix
        self._canonical_prefix = canonical_uri(prefix)
        token = signer.credentials.token
        self.signed_names = "host;x-amz-date" + (";x-amz-security-token" if token else "")
        trimmed = " ".join(token.split()) if token else ""  # SigV4's trimall, as Signer.sign
        self._token_line = f"x-amz-security-token:{trimmed}\n" if token else ""
        self._tail = "\n" + self.signed_names + "\n" + _payload_hash(body)
        self._day: tuple[str, str, str, bytes] = ("", "", "", b"")  # day, scope, credential, key

    def authorization(self, encoded_id: str, amz_date: str) -> str:
        """The Authorization header for `prefix + encoded_id`, signed at `amz_date`."""
        if _PLAIN_SEGMENT.fullmatch(encoded_id) and encoded_id not in (".", ".."):
            # Unreserved characters and %XX escapes: SigV4 encodes only the '%' once more.
            path = self._canonical_prefix + encoded_id.replace("%", "%25")
        else:
            path = canonical_uri(self._prefix + encoded_id)
        day, scope, credential, key = self._day  # one read: workers sign from many threads
        if day != amz_date[:8]:
            signer = self._signer
            day = amz_date[:8]
            scope = f"{day}/{signer.region}/{signer.service}/aws4_request"
            credential = f"{ALGORITHM} Credential={signer.credentials.access_key}/{scope}"
            key = signer._signing_key(day)
            self._day = (day, scope, credential, key)
        canonical_request = (
            f"{self._method}\n{path}\n\nhost:{self._host}\nx-amz-date:{amz_date}\n"
            f"{self._token_line}{self._tail}"
        )
        string_to_sign = (
            f"{ALGORITHM}\n{amz_date}\n{scope}\n"
            + hashlib.sha256(canonical_request.encode()).hexdigest()
        )
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{credential}, SignedHeaders={self.signed_names}, Signature={signature}"


_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9._~%-]+")
_second: tuple[int, str] = (0, "")  # the last second formatted, replaced in one assignment


def amz_date() -> str:
    """Now, as X-Amz-Date ("20261129T051000Z"), formatted once per second."""
    global _second
    now = int(time.time())
    second, text = _second
    if second != now:
        text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        _second = (now, text)
    return text


def _payload_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256


@dataclass(frozen=True)
class SignedHeaders:
    """The headers to send, and what was signed (for -v and for explaining a mismatch)."""

    headers: dict[str, str]
    canonical_request: str
    string_to_sign: str
