"""What lets an unchanged handler call ``@connections`` back: an HTTPS listener and its trust.

A handler builds ``boto3.client("apigatewaymanagementapi", endpoint_url=f"https://{domainName}/
{stage}")`` from its event. The events' ``domainName`` names an HTTPS listener of the gateway whose
certificate comes from a CA made for this run (trustme: a throwaway CA and leaf in a few lines,
over ``cryptography``; nothing is installed in any trust store). Handlers trust it through
``AWS_CA_BUNDLE``: a bundle written for the run holding what they trusted before (their own
``AWS_CA_BUNDLE``, e.g. a corporate proxy's root, else certifi's) plus the run's CA, so their
other AWS calls keep working.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import tempfile
from pathlib import Path

from wsconn.local.credentials import LocalCredentials

_WILDCARDS = {"0.0.0.0", "::", ""}


def callback_host(listen_host: str) -> str:
    """The host handlers call: the listen address, or loopback when it listens everywhere."""
    if listen_host in _WILDCARDS:
        return "::1" if listen_host == "::" else "127.0.0.1"
    return listen_host


def domain_name(host: str, port: int) -> str:
    """``host:port`` as it goes in a URL (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CallbackListener:
    """The run's CA, a server TLS context for ``host``, a bound socket, and a bundle directory.

    ``close()`` removes the bundles and closes the socket if nothing took it over.
    """

    def __init__(self, host: str) -> None:
        import trustme

        self.host = host
        self._ca = trustme.CA(organization_name="wsconn local (this run only)")
        names = {host, "localhost", "127.0.0.1", "::1"}
        leaf = self._ca.issue_cert(*sorted(names))
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(self.server_context)
        family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, 0))
        self.port = int(self.socket.getsockname()[1])
        self._directory = Path(tempfile.mkdtemp(prefix="wsconn-local-"))
        self._bundles: dict[str, str] = {}

    @property
    def ca_pem(self) -> bytes:
        return bytes(self._ca.cert_pem.bytes())

    def bundle(self, trusted: str | None) -> str:
        """A CA bundle file: ``trusted`` (a PEM file; None: certifi's) followed by the run's CA."""
        key = trusted or ""
        if key not in self._bundles:
            if trusted is None:
                import certifi

                trusted = certifi.where()
            try:
                existing = Path(trusted).read_bytes()
            except OSError as exc:
                from wsconn.errors import ConfigError

                raise ConfigError(
                    f"AWS_CA_BUNDLE {trusted}: {exc.strerror or exc} (the handlers' CA bundle)"
                ) from None
            path = self._directory / f"ca-bundle-{len(self._bundles)}.pem"
            path.write_bytes(existing.rstrip(b"\n") + b"\n" + self.ca_pem)
            self._bundles[key] = str(path)
        return self._bundles[key]

    def close(self) -> None:
        self.socket.close()
        shutil.rmtree(self._directory, ignore_errors=True)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def handler_environment(
    endpoint: str,
    bundle: str,
    credentials: LocalCredentials,
    region: str,
) -> dict[str, str]:
    """The gateway's variables for handlers (each function's own env is layered over them)."""
    env = {
        "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": endpoint,
        "AWS_CA_BUNDLE": bundle,
        "AWS_ACCESS_KEY_ID": credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    if credentials.token is not None:
        env["AWS_SESSION_TOKEN"] = credentials.token
    return env
