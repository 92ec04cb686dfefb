"""The service's limits, wsconn's defaults, and how a duration reads: each written once, used by
the CLI, the call pipeline and the gateway.

Standard library only: `wsconn.local` imports this without pulling in click or rich.
"""

from __future__ import annotations

MAX_PAYLOAD = 131072  # bytes: the most one PostToConnection may carry (128 KiB)
IDLE_TIMEOUT = 600.0  # seconds: the service closes a connection after 10 idle minutes
MAX_DURATION = 7200.0  # seconds: ... and any connection after 2 hours

DEFAULT_TIMEOUT = 10.0  # seconds: --timeout, connect and each read
DEFAULT_RETRIES = 3  # --retries
DEFAULT_CONCURRENCY = 16  # -j with --ids
MAX_PROCESSES = 64  # -P with --ids
DEFAULT_INTERVAL = 2.0  # seconds between polls of `status --watch`
LOCAL_STAGE = "dev"  # `wsconn local`'s stage when neither --stage nor a template names one


def too_large(what: str, size: int | None = None) -> str:
    """The one sentence for a message over MAX_PAYLOAD (`size` None: known only to be over it)."""
    amount = f"is {size} bytes" if size is not None else f"is over {MAX_PAYLOAD} bytes"
    return f"{what} {amount}; the service's limit is {MAX_PAYLOAD} bytes (128 KiB)"


def format_duration(seconds: float) -> str:
    """1h 02m 03s / 4m 05s / 12.3s; negative durations read as 0s."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
