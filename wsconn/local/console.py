"""The local gateway on a terminal: its events as lines, the banner, and `wsconn demo`'s narration.

render.py is the management side's terminal; this module alone turns the gateway's event vocabulary
(:mod:`wsconn.local.events`) into what a person reads. Events go to stdout (JSON lines with
``--json``), the banner and warnings to stderr. rich is imported only when stdout is a terminal.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from wsconn.streams import Streams

if TYPE_CHECKING:
    from rich.console import Console

_EVENT_STYLES = {
    "listening": "bold green",
    "connect": "green",
    "disconnect": "yellow",
    "gone": "yellow",
    "denied": "red",
    "error": "bold red",
    "message": "cyan",
    "invoke": "magenta",
    "log": "dim",
}


def describe(event: Mapping[str, object]) -> tuple[str, str]:
    """A gateway event as (label, one human line)."""
    name = str(event.get("event"))
    cid = event.get("connectionId", "")
    if name == "listening":
        auth = (
            f"SigV4 checked, trusting {event.get('accessKeyId')} ({event.get('credentialSource')})"
            if event.get("auth")
            else "NO signature checks"
        )
        routes = event.get("routes")
        backend = (
            f"  routes {', '.join(map(str, routes))}, callbacks {event.get('callbackEndpoint')}"
            if isinstance(routes, list) and routes
            else ""
        )
        return name, (
            f"WebSocket {event.get('wsUrl')}  management {event.get('endpoint')}/@connections/{{id}}"
            f"  region {event.get('region')}, {auth}{backend}"
        )
    if name == "connect":
        return (
            name,
            f"{cid} from {event.get('sourceIp')} ({event.get('userAgent') or 'no user agent'})",
        )
    if name == "message":
        text = f": {event['data']}" if "data" in event else ""
        return name, f"{cid} sent a {event.get('type')} frame of {event.get('bytes')} bytes{text}"
    if name == "post":
        return name, (
            f"{cid} <- {event.get('bytes')} bytes as a {event.get('frame')} frame "
            f"({event.get('status')})"
        )
    if name == "get":
        return name, f"{cid} status read ({event.get('status')})"
    if name == "disconnect":
        reason = f" {event['reason']!r}" if event.get("reason") else ""
        return name, f"{cid} closed {event.get('code')}{reason} by {event.get('by')}"
    if name == "gone":
        return name, (
            f"{event.get('method')} {cid} -> {event.get('status')} {event.get('errorType')}: "
            f"{event.get('reason')}"
        )
    if name == "invoke":
        # One line per invocation: route, target, outcome, time; the request id to grep logs by.
        outcome = (
            f"failed: {event.get('error')}"
            if event.get("error")
            else f"answered {event.get('statusCode')}"
        )
        return name, (
            f"{event.get('route')} -> {event.get('target')} {outcome} "
            f"in {event.get('durationMs')} ms ({event.get('requestId')})"
        )
    if name == "log":
        stream = " (stderr)" if event.get("stream") == "stderr" else ""
        return name, f"{event.get('route')}{stream}: {event.get('line')}"
    if name == "denied":
        # A refused $connect (the handler's own status, a failed integration) has no error type.
        error_type = f" {event['errorType']}" if event.get("errorType") else ""
        return name, (
            f"{event.get('method')} {event.get('path')} -> {event.get('status')}"
            f"{error_type}: {event.get('reason')}"
        )
    details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in {"event", "time"})
    return name, details


def client_setup(
    endpoint: str,
    region: str,
    client_env: Sequence[tuple[str, str]] = (),
    note: str = "",
) -> list[str]:
    """The banner's lines: what to paste into the shell that runs a client, then a command.

    Each line works pasted into a shell that has nothing else set: the endpoint, the region the
    gateway checks signatures for (AWS_REGION for wsconn and the AWS CLI, AWS_DEFAULT_REGION for
    boto3), and ``client_env`` (the generated keys, or the profile the gateway trusts).
    """

    def export(pairs: Sequence[tuple[str, str]]) -> str:
        return "  export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in pairs)

    lines = [
        "wsconn local: listening. In the shell that runs your client:" + note,
        export(
            [("WSCONN_ENDPOINT", endpoint), ("AWS_REGION", region), ("AWS_DEFAULT_REGION", region)]
        ),
    ]
    if client_env:
        lines.append(export(client_env))
    lines.append(
        "  wsconn send CONNECTION_ID hello   # CONNECTION_ID: from a connect event. "
        "Ctrl-C stops the gateway."
    )
    return lines


class EventPrinter:
    """Prints local-gateway events as they happen: JSON lines, rich lines on a TTY, else text.

    Called from the gateway's thread; every line is flushed at once, since scripts tail it. When
    stdout's reader goes away (``| head``, a closed pipe), says so once on stderr and drops the
    events from then on: the gateway keeps serving.
    """

    def __init__(
        self,
        json_lines: bool,
        client_env: Sequence[tuple[str, str]] = (),
        banner_note: str = "",
        streams: Streams | None = None,
    ) -> None:
        self.streams = streams or Streams.from_sys()
        self.json_lines = json_lines
        self.rich = not json_lines and self.streams.stdout_is_terminal
        self.client_env = tuple(client_env)
        self.banner_note = banner_note
        self.stdout_gone = False
        self._console: Console | None = None
        self._lock = threading.Lock()

    def __call__(self, event: Mapping[str, object]) -> None:
        with self._lock:
            if event.get("event") == "listening":
                self._banner(event)
            if self.stdout_gone:
                return
            try:
                self._print(event)
            except OSError as exc:
                self._stdout_failed(exc)

    def _print(self, event: Mapping[str, object]) -> None:
        out = self.streams.stdout
        if self.json_lines:
            out.write(json.dumps(event, ensure_ascii=False) + "\n")
            out.flush()
            return
        label, line = describe(event)
        clock = str(event.get("time", ""))[11:23]
        if self.rich:
            from rich.markup import escape

            style = _EVENT_STYLES.get(label, "bold")
            self._stdout().print(
                f"[dim]{clock}[/] [{style}]{label:<10}[/] {escape(line)}", highlight=False
            )
        else:
            out.write(f"{clock} {label:<10} {line}\n")
            out.flush()

    def _banner(self, event: Mapping[str, object]) -> None:
        lines = client_setup(
            str(event.get("endpoint")), str(event.get("region")), self.client_env, self.banner_note
        )
        self._stderr("\n".join(lines))

    def _stdout_failed(self, exc: OSError) -> None:
        """Once: say why events stop showing, and point stdout at /dev/null for good."""
        self.stdout_gone = True
        why = (
            "its reader went away"
            if isinstance(exc, (BrokenPipeError, ConnectionResetError))
            else f"it cannot be written ({exc.strerror or exc})"
        )
        self.streams.silence_stdout()
        self._stderr(
            f"wsconn local: events are no longer written to standard output ({why}); "
            "still serving (Ctrl-C stops)"
        )

    def _stdout(self) -> Console:
        if self._console is None:
            from rich.console import Console

            class EventConsole(Console):
                def on_broken_pipe(self) -> None:
                    # rich would exit the process; the gateway must keep serving.
                    raise BrokenPipeError

            self._console = EventConsole(file=self.streams.stdout)
        return self._console

    def _stderr(self, text: str) -> None:
        self.streams.stderr.write(text + "\n")
        self.streams.stderr.flush()

    def warn(self, text: str) -> None:
        self._stderr(f"wsconn local: WARNING: {text}")


class DemoPrinter:
    """`wsconn demo`'s narration: rich on a terminal, plain text otherwise."""

    def __init__(self, streams: Streams | None = None) -> None:
        self.streams = streams or Streams.from_sys()
        self.rich = self.streams.stdout_is_terminal

    def _print(self, markup: str, plain: str) -> None:
        if self.rich:
            from rich.console import Console

            Console(file=self.streams.stdout).print(markup, highlight=False)
        else:
            self.streams.stdout.write(plain + "\n")
            self.streams.stdout.flush()

    def title(self, text: str) -> None:
        self._print(f"[bold]{_escape(text)}[/]", text)

    def note(self, text: str) -> None:
        self._print(f"[dim]# {_escape(text)}[/]", f"# {text}")

    def command(self, line: str) -> None:
        self._print(f"\n[bold cyan]$ {_escape(line)}[/]", f"\n$ {line}")

    def output(self, stdout: str, stderr: str) -> None:
        for text in (stdout, stderr):
            for line in text.rstrip("\n").splitlines():
                self._print(f"  {_escape(line)}", f"  {line}")

    def exit_code(self, code: int, expected: int) -> None:
        colour = "green" if code == expected else "red"
        self._print(f"  [{colour}](exit {code})[/]", f"  (exit {code})")

    def received(self, kind: str, data: str | bytes) -> None:
        shown = data if isinstance(data, str) else repr(data)
        text = f"the client received a {kind} frame: {shown}"
        self._print(f"  [magenta]→ {_escape(text)}[/]", f"  -> {text}")

    def done(self, text: str) -> None:
        self._print(f"\n[bold green]{_escape(text)}[/]", f"\n{text}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
