"""The message to send: exactly the bytes the user gave, from an argument, a file or stdin."""

from __future__ import annotations

import os
import select
import stat
from typing import BinaryIO

from wsconn.errors import ConfigError, PayloadTooLarge, UsageError
from wsconn.limits import MAX_PAYLOAD, too_large


def read_message(
    message: str | None,
    data: str | None,
    stdin: BinaryIO | None,
    stdin_is_terminal: bool,
    wait: float = 10.0,
) -> bytes:
    """MESSAGE, -d TEXT, -d @FILE, -d @- or piped stdin, as bytes; refuse over 128 KiB.

    Arguments are turned back into the exact bytes typed (os.fsencode undoes Python's decoding),
    so nothing is re-encoded and no newline is added. Standard input that yields nothing is
    refused (cron, CI, `</dev/null`): an empty message is sent only when typed as ''.
    """
    if message is not None and data is not None:
        raise UsageError("give the message once: as MESSAGE or with -d/--data, not both")
    stream = stdin  # None when the process was started with standard input closed
    if data is not None and data.startswith("@"):
        source = data[1:]
        if source == "-":
            if stream is None:
                raise UsageError("-d @-: standard input is closed")
            payload = _read_stdin(stream)
        else:
            payload = _read_file(source, wait)
    elif data is not None or message is not None:
        payload = os.fsencode(data if data is not None else message or "")
    elif stream is None or stdin_is_terminal:
        raise UsageError("no message: give MESSAGE, -d TEXT, -d @FILE, or pipe it on stdin")
    else:
        payload = _read_stdin(stream)
    if len(payload) > MAX_PAYLOAD:
        raise PayloadTooLarge(too_large("the message", len(payload)))
    return payload


def _read_stdin(stream: BinaryIO) -> bytes:
    """The message from standard input; zero bytes there is a mistake, not a message."""
    payload = _read_limited(stream, "standard input")
    if not payload:
        raise UsageError("no message on standard input; pass '' to send an empty message")
    return payload


def _read_file(path: str, wait: float) -> bytes:
    """A file's bytes; a FIFO (or process substitution) is read until its writer closes it."""
    try:
        if stat.S_ISFIFO(os.stat(path).st_mode):
            return _read_fifo(path, wait)
        with open(path, "rb") as file:
            return _read_limited(file, path)
    except IsADirectoryError:
        raise ConfigError(f"cannot read {path}: it is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_fifo(path: str, wait: float) -> bytes:
    """Read a named pipe without hanging when nobody writes to it: give up after `wait` s."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise ConfigError(
                    f"cannot read {path}: nothing came through the pipe in {wait:g}s (no writer?)"
                )
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_PAYLOAD:
                raise PayloadTooLarge(too_large(f"the message from {path}"))
            chunks.append(chunk)
    finally:
        os.close(fd)


def _read_limited(stream: BinaryIO, name: str) -> bytes:
    """Read at most one byte past the limit, so a huge file is refused without reading it all."""
    try:
        payload = stream.read(MAX_PAYLOAD + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(payload) > MAX_PAYLOAD:
        raise PayloadTooLarge(too_large(f"the message from {name}"))
    return payload
