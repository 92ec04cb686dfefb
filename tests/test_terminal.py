"""What a person sees on a terminal: a pseudo-terminal, as a shell gives one."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from typing import Any

from tests.test_commands import client

# An SGR sequence that sets a foreground colour (bold and dim are not colours: NO_COLOR allows them).
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")


def run_on_tty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run wsconn with stdout and stderr on a pseudo-terminal; return its exit code and screen."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "wsconn", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "100", **env},
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return process.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_status_panel_on_a_terminal(gateway: Any) -> None:
    with client(gateway, user_agent="tty-test/1") as (_ws, cid):
        code, screen = run_on_tty(["status", "--endpoint", gateway.endpoint, cid], {})
        assert code == 0, screen
        assert "╭" in screen and "╰" in screen  # a rich panel
        for label in ("connected for", "idle for", "idle timeout in", "2-hour limit in"):
            assert label in screen
        assert "tty-test/1" in screen and cid in screen
        assert not COLOUR.search(screen), (
            screen
        )  # NO_COLOR (set by the test environment) is honoured


def test_colours_when_the_terminal_allows_them(gateway: Any) -> None:
    with client(gateway) as (_ws, cid):
        env = {"NO_COLOR": "", "TERM": "xterm-256color"}
        code, screen = run_on_tty(["status", "--endpoint", gateway.endpoint, cid], env)
        assert code == 0 and COLOUR.search(screen)


def test_send_confirms_on_a_terminal(gateway: Any) -> None:
    with client(gateway) as (ws, cid):
        code, screen = run_on_tty(["send", "--endpoint", gateway.endpoint, cid, "hi"], {})
        assert code == 0
        assert f"sent 2 bytes to {cid}" in screen
        assert ws.recv(timeout=5) == "hi"


def test_no_message_on_a_terminal_is_a_usage_error() -> None:
    master, slave = pty.openpty()
    done = subprocess.run(
        [sys.executable, "-m", "wsconn", "send", "--endpoint", "http://127.0.0.1:9/dev", "id="],
        stdin=slave,
        capture_output=True,
        timeout=30,
        check=False,
    )
    os.close(slave)
    os.close(master)
    assert done.returncode == 2
    assert b"no message" in done.stderr
