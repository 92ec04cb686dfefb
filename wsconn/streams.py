"""The process's three streams, and whether each is a terminal: decided once, in `main`.

Everything that writes (render.py) or reads (the message, --ids -) takes its streams from here,
so what counts as "a terminal" is one decision (as HTTPie's `Environment`). Standard library only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import IO, Any, BinaryIO


def _isatty(stream: IO[Any] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed, or not a real file
        return False


@dataclass(frozen=True)
class Streams:
    """stdin, stdout, stderr and which of them are terminals."""

    stdin: IO[str] | None
    stdout: IO[str]
    stderr: IO[str]
    stdin_is_terminal: bool
    stdout_is_terminal: bool
    stderr_is_terminal: bool

    @classmethod
    def from_sys(cls) -> Streams:
        """The streams this process has now (sys.stdin is None when started with it closed)."""
        return cls(
            sys.stdin,
            sys.stdout,
            sys.stderr,
            _isatty(sys.stdin),
            _isatty(sys.stdout),
            _isatty(sys.stderr),
        )

    @property
    def stdin_bytes(self) -> BinaryIO | None:
        """Standard input as bytes (None when the process was started with it closed)."""
        buffer = getattr(self.stdin, "buffer", None)
        return buffer if buffer is not None else None

    def silence_stdout(self) -> None:
        """Point stdout at /dev/null: its reader is gone, and Python's exit flush must not fail."""
        try:
            fileno = self.stdout.fileno()
        except (ValueError, OSError):
            return  # not a real file (an in-memory buffer): nothing will flush to a closed pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fileno)
        os.close(devnull)
