"""Timestamps as the service writes them, shared by the management side and the local gateway.

Standard library only: ``wsconn.local`` imports this without pulling in click or rich.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def iso_ms(moment: datetime) -> str:
    """``2020-04-30T20:10:33.236Z``: UTC, exactly three millisecond digits, ``Z`` (as the service)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )
