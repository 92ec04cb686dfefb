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

    Uses botocore's chain (environment, profile, config file, process, SSO, container, IMDS) for
    ``profile``; the source is botocore's method name (``'env'``, ``'shared-credentials-file'``,
    ...).
    When the chain has none, returns a generated local pair with source ``'generated'``.
    Raises botocore's ``ProfileNotFound`` for an unknown profile.
    """
    # Imported here: botocore is slow to import and only this function needs it.
    import botocore.session

    session = botocore.session.Session(profile=profile)
    found = session.get_credentials()
    if found is None:
        return generate_credentials(), GENERATED_SOURCE
    # Refreshable credentials (SSO, roles) are frozen once: the gateway trusts one snapshot.
    frozen = found.get_frozen_credentials()
    if not frozen.access_key or not frozen.secret_key:
        return generate_credentials(), GENERATED_SOURCE
    credentials = LocalCredentials(
        access_key=str(frozen.access_key),
        secret_key=str(frozen.secret_key),
        token=str(frozen.token) if frozen.token else None,
    )
    return credentials, str(getattr(found, "method", None) or "unknown")
