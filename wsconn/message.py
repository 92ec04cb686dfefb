"""The message to send: exactly the bytes the user gave, from an argument, a file or stdin."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from wsconn.errors import ConfigError, PayloadTooLarge, UsageError

MAX_PAYLOAD = 131072  # 128 KiB: the service's limit for one PostToConnection


def read_message(message: str | None, data: str | None, stdin: BinaryIO | None = None) -> bytes:
    """MESSAGE, -d TEXT, -d @FILE, -d @- or piped stdin, as bytes; refuse over 128 KiB.

    Arguments are turned back into the exact bytes typed (os.fsencode undoes Python's decoding),
    so nothing is re-encoded and no newline is added.
    """
    if message is not None and data is not None:
        raise UsageError("give the message once: as MESSAGE or with -d/--data, not both")
    stream = stdin if stdin is not None else sys.stdin.buffer
    if data is not None and data.startswith("@"):
        source = data[1:]
        if source == "-":
            payload = _read_limited(stream, "standard input")
        else:
            try:
                with open(source, "rb") as file:
                    payload = _read_limited(file, source)
            except IsADirectoryError:
                raise ConfigError(f"cannot read {source}: it is a directory") from None
            except OSError as exc:
                raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
    elif data is not None or message is not None:
        payload = os.fsencode(data if data is not None else message or "")
    elif stream.isatty():
        raise UsageError("no message: give MESSAGE, -d TEXT, -d @FILE, or pipe it on stdin")
    else:
        payload = _read_limited(stream, "standard input")
    if len(payload) > MAX_PAYLOAD:
        raise PayloadTooLarge(
            f"the message is {len(payload)} bytes; the service's limit is {MAX_PAYLOAD} (128 KiB)"
        )
    return payload


def _read_limited(stream: BinaryIO, name: str) -> bytes:
    """Read at most one byte past the limit, so a huge file is refused without reading it all."""
    try:
        payload = stream.read(MAX_PAYLOAD + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(payload) > MAX_PAYLOAD:
        raise PayloadTooLarge(
            f"the message from {name} is over {MAX_PAYLOAD} bytes (128 KiB), the service's limit"
        )
    return payload
