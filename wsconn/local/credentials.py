"""The credentials the local gateway trusts: the botocore chain's, or a generated local pair."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

GENERATED_SOURCE = "generated"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


@dataclass(frozen=True)
class LocalCredentials:
    """An access key pair (and optional session token) that signed requests must match."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:
        # A repr ends up in logs and tracebacks: never show the secret or the token.
        token = "set" if self.token else "None"
        return f"LocalCredentials(access_key={self.access_key!r}, secret_key=***, token={token})"


def generate_credentials() -> LocalCredentials:
    """A fresh local pair: ``AKIALOCAL`` + 11 of ``[A-Z0-9]``, a 40-character secret, no token."""
    access_key = "AKIALOCAL" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(11))
    secret_key = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    return LocalCredentials(access_key=access_key, secret_key=secret_key)


def resolve_credentials(profile: str | None = None) -> tuple[LocalCredentials, str]:
    """Credentials the gateway trusts and where they came from.

    The same resolution as the core commands (wsconn.auth: botocore's chain, with its method name
    as the source: ``'env'``, ``'shared-credentials-file'``, ...), so a client in the same
    environment just works. When the chain has none: a generated local pair, source
    ``'generated'``. Raises ConfigError for an unknown profile or a broken configuration.
    """
    from wsconn.auth import AwsConfig
    from wsconn.errors import NoCredentials

    try:
        found = AwsConfig(profile).credentials()
    except NoCredentials:
        return generate_credentials(), GENERATED_SOURCE
    return LocalCredentials(found.access_key, found.secret_key, found.token), found.source
