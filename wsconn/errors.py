"""Exit codes and the errors that carry them: the one table users script against.

The same table is printed by `wsconn --help` and written in the README; a test keeps them equal.
This module imports only click, so `--help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import IO, Any, ClassVar

import click

from wsconn.limits import MAX_PAYLOAD


class ExitCode(IntEnum):
    """Process exit codes. Never renumber: scripts test `$?` against these."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    GONE = 3
    FORBIDDEN = 4
    THROTTLED = 5
    PAYLOAD_TOO_LARGE = 6
    NETWORK = 7
    CONFIG = 8
    CLIENT_ERROR = 9
    SERVER_ERROR = 10
    EXPECTATION_NOT_MET = 11
    INTERRUPTED = 130
    BROKEN_PIPE = 141
    TERMINATED = 143


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done (sent / status read / disconnected)",
    ExitCode.INTERNAL: "unexpected internal error (a bug: please report it; --debug shows the traceback)",
    ExitCode.USAGE: "usage error (bad option or argument)",
    ExitCode.GONE: "gone: 410, the connection is not connected (closed, never existed, "
    "or still in its $connect handler)",
    ExitCode.FORBIDDEN: "forbidden: any 403 (wrong stage/path, signature, IAM, expired token)",
    ExitCode.THROTTLED: "throttled: 429 after retries",
    ExitCode.PAYLOAD_TOO_LARGE: f"payload too large (over {MAX_PAYLOAD} bytes, refused locally, or 413; "
    "listen: closed with 1009)",
    ExitCode.NETWORK: "network: connection refused, DNS, TLS, timeout",
    ExitCode.CONFIG: "configuration: no credentials, no endpoint, no region, unreadable file",
    ExitCode.CLIENT_ERROR: "other 4xx (e.g. 400 malformed connection id), or a redirect",
    ExitCode.SERVER_ERROR: "5xx after retries",
    ExitCode.EXPECTATION_NOT_MET: "listen: the expectation was not met (--expect / --count, "
    "before --timeout or the server's close)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.BROKEN_PIPE: "standard output closed early (its reader, e.g. head, went away); nothing more was written",
    ExitCode.TERMINATED: "terminated (SIGTERM) during --ids, after accounting for every id "
    "(listen: after closing the connection)",
}


def exit_code_table() -> str:
    """The exit-code table as plain text lines, for --help."""
    return "\n".join(f"{int(code):>3}  {text}" for code, text in EXIT_CODE_MEANINGS.items())


@dataclass(frozen=True)
class SentRequest:
    """What the last attempt sent and where its settings came from, to explain a refusal."""

    method: str
    url: str
    endpoint_source: str
    region: str
    region_source: str
    access_key: str
    credential_source: str
    has_token: bool
    canonical_request: str  # may hold the session token: print only through redact()
    string_to_sign: str
    resource_pattern: str  # the IAM resource that allows this call on every connection
    server_date: datetime | None = None  # the response's Date header
    local_date: datetime | None = None  # this machine's clock when the response came


def redact(text: str) -> str:
    """Text with every x-amz-security-token header line's value hidden (AWS echoes it back)."""
    return "\n".join(
        "x-amz-security-token:<redacted>" if line.startswith("x-amz-security-token:") else line
        for line in text.split("\n")
    )


class WsconnError(click.ClickException):
    """An error a user can cause: one line on stderr, its own exit code, never a traceback.

    `kind` is the short word that starts the line (`gone`, `forbidden`, ...); `outcome` is the
    word JSON output and fan-out results give (`gone`, `config-error`, ...). A subclass inherits
    both, so a more precise error (NoCredentials) reports as its family does.
    """

    exit_code: ClassVar[int] = ExitCode.INTERNAL
    kind: ClassVar[str] = "error"
    outcome: ClassVar[str] = "failed"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_type: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_type = error_type
        # Extra lines shown only with -v (e.g. the service's full message).
        self.detail = detail
        self.attempts = 0
        self.latency_ms: float | None = None
        self.sent: SentRequest | None = None
        self.shown = False  # already written to stderr with its explanation
        self.connection_id: str | None = None  # the connection it concerns, when there is one
        # The lines shown under the error; None: explain.py works them out from the error.
        self.explanation: list[str] | None = None

    def format_message(self) -> str:
        return f"{self.kind}: {self.message}"

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"wsconn: {self.format_message()}", file=file, err=file is None)


class UsageError(WsconnError):
    exit_code = ExitCode.USAGE
    kind = "usage"
    outcome = "usage-error"


class ConnectionGone(WsconnError):
    exit_code = ExitCode.GONE
    kind = "gone"
    outcome = "gone"


class Forbidden(WsconnError):
    exit_code = ExitCode.FORBIDDEN
    kind = "forbidden"
    outcome = "forbidden"


class Throttled(WsconnError):
    exit_code = ExitCode.THROTTLED
    kind = "throttled"
    outcome = "throttled"


class PayloadTooLarge(WsconnError):
    exit_code = ExitCode.PAYLOAD_TOO_LARGE
    kind = "payload too large"
    outcome = "too-large"


class NetworkError(WsconnError):
    exit_code = ExitCode.NETWORK
    kind = "network"
    outcome = "network-error"


class ConfigError(WsconnError):
    exit_code = ExitCode.CONFIG
    kind = "configuration"
    outcome = "config-error"


class NoCredentials(ConfigError):
    """The credential chain found nothing (the local gateway then generates a pair)."""


class ClientError(WsconnError):
    exit_code = ExitCode.CLIENT_ERROR
    kind = "rejected"
    outcome = "rejected"


class ServerError(WsconnError):
    exit_code = ExitCode.SERVER_ERROR
    kind = "server error"
    outcome = "server-error"


class ExpectationNotMet(WsconnError):
    """`wsconn listen`: what --expect / --count asked for did not arrive in time."""

    exit_code = ExitCode.EXPECTATION_NOT_MET
    kind = "expectation not met"
    outcome = "not-met"


class Terminated(WsconnError):
    """`wsconn listen` stopped by SIGTERM (after closing its connection)."""

    exit_code = ExitCode.TERMINATED
    kind = "terminated"
    outcome = "terminated"


class NotAttempted(WsconnError):
    """A fan-out call never sent because the run was stopped (Ctrl-C, SIGTERM, closed stdout)."""

    exit_code = ExitCode.INTERRUPTED
    kind = "not attempted"
    outcome = "not-attempted"


class InternalError(WsconnError):
    exit_code = ExitCode.INTERNAL
    kind = "internal error"
    outcome = "failed"
