"""What a person sees on a terminal: a pseudo-terminal, as a shell gives one."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
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


# -- what is on the screen at the end, through a terminal emulator (pyte) ------------------


class Terminal:
    """wsconn on a pseudo-terminal (stdout and stderr both), its output fed to a VT100 screen."""

    def __init__(self, args: list[str], columns: int = 140, lines: int = 60) -> None:
        import pyte

        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        master, slave = pty.openpty()
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wsconn", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "COLUMNS": str(columns), "LINES": str(lines), "TERM": "xterm"},
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    def read_until(self, predicate: Callable[[str], bool], timeout: float = 30) -> None:
        """Read output until `predicate(screen text)` holds (or the program ends)."""
        import select
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate(self.text):
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready and not self._read_once():
                return

    def _read_once(self) -> bool:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.raw += chunk
        self.stream.feed(chunk)
        return bool(chunk)

    def finish(self, timeout: float = 60) -> int:
        while self._read_once():
            pass
        os.close(self.master)
        return self.process.wait(timeout=timeout)

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)


def test_watch_shows_the_connection_gone_at_the_end(gateway: Any) -> None:
    from wsconn.local.gateway import GatewayConfig, GatewayThread

    events: list[dict[str, object]] = []
    with GatewayThread(GatewayConfig(port=0, idle_timeout=1.5), on_event=events.append) as gw:
        gw.events = events  # type: ignore[attr-defined]
        with client(gw) as (_ws, cid):
            term = Terminal(
                ["status", "--watch", "--interval", "0.2", "--endpoint", gw.endpoint, cid]
            )
            code = term.finish()
    screen = term.text
    assert code == 3, screen
    assert f"{cid} gone" in screen  # the panel's last state: gone, in its title
    assert f"{cid} connected" not in screen  # no green "connected" left standing
    assert "last seen connected at" in screen and "gone by" in screen
    assert f"wsconn: gone: {cid} went away: last seen connected at" in screen


def test_status_ids_shows_a_table_on_a_terminal(gateway: Any, tmp_path: Any) -> None:
    with client(gateway, user_agent="table-test/3") as (_ws, cid):
        ids = tmp_path / "ids.txt"
        ids.write_text(f"{cid}\nAAAAAAAAAAAAAAA=\n")
        term = Terminal(["status", "--endpoint", gateway.endpoint, "--ids", str(ids)])
        code = term.finish()
    screen = term.text
    assert code == 3, screen
    header = next(line for line in screen.splitlines() if "connection id" in line)
    for column in ("outcome", "connected for", "idle", "source IP", "user agent"):
        assert column in header
    row = next(line for line in screen.splitlines() if line.lstrip().startswith(cid))
    assert "connected" in row and "127.0.0.1" in row and "table-test/3" in row
    gone = next(
        line for line in screen.splitlines() if line.lstrip().startswith("AAAAAAAAAAAAAAA=")
    )
    assert "gone" in gone


def test_ctrl_c_during_a_fan_out_on_a_terminal(tmp_path: Any) -> None:
    import re as regex
    import signal

    from tests.test_fanout import clients, started
    from wsconn.local.gateway import GatewayConfig

    with started(GatewayConfig(port=0, latency=0.05)) as gw, clients(gw, 3) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"{live.ids[n % 3]}\n" for n in range(400)))
        term = Terminal(
            ["send", "--endpoint", gw.endpoint, "--ids", str(ids), "-d", "m", "-j", "2"]
        )
        term.read_until(lambda text: regex.search(r"\b[1-9]\d* sent", text) is not None)
        term.process.send_signal(signal.SIGINT)
        code = term.finish()
    screen = term.text
    assert code == 130, screen
    lines = screen.splitlines()
    stopping = [i for i, line in enumerate(lines) if "wsconn: stopping: no new requests" in line]
    bar = [i for i, line in enumerate(lines) if regex.search(r"\d+/400", line)]
    summary = [i for i, line in enumerate(lines) if "not attempted of 400" in line]
    assert len(stopping) == 1 and len(bar) == 1 and len(summary) == 1, screen
    assert stopping[0] < bar[0] < summary[0]  # the line above the bar, the bar left whole
    counts = regex.search(
        r"(\d+) sent, (\d+) gone, (\d+) failed, (\d+) not attempted", lines[summary[0]]
    )
    assert counts is not None, lines[summary[0]]
    sent, gone, failed, skipped = counts.groups()
    shown = lines[bar[0]]
    assert f"{sent} sent" in shown and f"{gone} gone" in shown and f"{failed} failed" in shown
    assert f"{skipped} not attempted" in shown  # not counted as failed
    assert failed == "0" and int(skipped) > 0
