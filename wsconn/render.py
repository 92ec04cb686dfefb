"""The only module that knows about terminals: rich on a TTY, plain text when piped, or JSON.

Results go to stdout, diagnostics (confirmations, -v traces, errors) to stderr. JSON is written with
json.dumps straight to stdout, never through rich. rich is imported only when a terminal needs it.
Whether a stream is a terminal is decided once, in `main` (wsconn.streams.Streams).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from wsconn.errors import WsconnError, redact
from wsconn.limits import IDLE_TIMEOUT, MAX_DURATION, format_duration
from wsconn.streams import Streams
from wsconn.timestamps import iso_ms

if TYPE_CHECKING:
    from rich.console import Console

    from wsconn.calls import Setting
    from wsconn.client import ConnectionInfo, Prepared, Result
    from wsconn.fanout import Outcome, Summary

_SIGNATURE = re.compile(r"(Signature=)[0-9a-fA-F]+")


def output_mode(mode: str, streams: Streams) -> str:
    """auto: rich when stdout is a terminal, else text; text and json as they are."""
    if mode == "auto":
        return "rich" if streams.stdout_is_terminal else "text"
    return mode


class Output:
    """Renders results and errors in one of three modes: rich, text, json.

    `quiet` (-q): on stderr only the one-line error, no explanation, no confirmation.
    """

    def __init__(
        self,
        mode: str = "auto",
        verbose: int = 0,
        quiet: bool = False,
        streams: Streams | None = None,
    ) -> None:
        self.streams = streams or Streams.from_sys()
        self.mode = output_mode(mode, self.streams)
        self.verbose = verbose
        self.quiet = quiet
        self._stderr_console: Console | None = None

    # -- results -----------------------------------------------------------------------------
    def sent(self, result: Result) -> None:
        self._done(result, f"sent {result.bytes_sent} bytes to {result.connection_id}")

    def disconnected(self, result: Result) -> None:
        self._done(result, f"disconnected {result.connection_id}")

    def _done(self, result: Result, words: str) -> None:
        if self.mode == "json":
            self._json(_result_fields(result))
        elif self.streams.stderr_is_terminal and not self.quiet:
            self._stderr().print(
                f"[green]✓[/] {words} [dim]({result.http_status}, {result.latency_ms:.0f} ms)[/]",
                highlight=False,
            )

    def status(self, info: ConnectionInfo) -> None:
        if self.mode == "json":
            self._json(_status_fields(info))
            return
        rows = _status_rows(info)
        if self.mode == "text":
            width = max(len(name) for name, _ in rows)
            self._echo("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
            return
        self._stdout().print(_status_panel(info.result.connection_id, rows[1:]), highlight=False)

    def watch(self) -> Watch:
        """A live view for `status --watch`, in this output mode."""
        return Watch(self)

    def failed(self, error: WsconnError) -> None:
        """The error line on stderr, then why (explain.py); JSON mode also reports on stdout."""
        from wsconn.explain import explain

        why = error.explanation if error.explanation is not None else explain(error)
        if self.mode == "json":
            self._json(error_fields(error, why))
        click.echo(f"wsconn: {error.format_message()}", file=self.streams.stderr)
        if not self.quiet:
            for line in why:
                click.echo(f"  {line}", file=self.streams.stderr)
            if self.verbose and error.detail:
                click.echo(
                    f"wsconn: the service said: {redact(error.detail)}", file=self.streams.stderr
                )
        error.shown = True

    def settings(self, rows: list[Setting]) -> None:
        """`wsconn config`: each setting, its value and where it came from, or what is wrong."""
        if self.mode == "json":
            fields: dict[str, object] = {}
            for row in rows:
                fields[row.name] = row.value
                if row.source_key:
                    fields[row.source_key] = row.source or None
            fields["problems"] = [p.format_message() for row in rows if (p := row.problem)]
            self._json(fields)
            return
        shown = [
            (
                row.label,
                _setting_value(row),
                row.problem.format_message() if row.problem else row.source,
            )
            for row in rows
            if row.label
        ]
        if self.mode == "text":
            width = max(len(label) for label, _, _ in shown)
            for label, value, source in shown:
                self._echo(f"{label:<{width}}  {value or '-'}  ({source})")
            return
        from rich.markup import escape
        from rich.table import Table

        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("setting", no_wrap=True)
        table.add_column("value", overflow="fold")  # a URL folds; it is never cut short
        table.add_column("source", overflow="fold")
        for row, (label, value, source) in zip([r for r in rows if r.label], shown, strict=True):
            missing = "[red]not resolved[/]" if row.problem else "[dim]-[/]"
            table.add_row(label, escape(value) if value else missing, escape(source))
        self._stdout().print(table)

    def dry_run(self, prepared: Prepared, settings: Mapping[str, str | None]) -> None:
        """--dry-run: the request as a curl command that reproduces it, and where it came from."""
        command = curl_command(prepared)
        if self.mode == "json":
            self._json(
                {**settings, "method": prepared.method, "url": prepared.url, "curl": command}
            )
            return
        self._echo(
            f"# endpoint {settings['endpoint']} (from {settings['endpointSource']})\n"
            f"# region {settings['region']} (from {settings['regionSource']})\n"
            f"# credentials from {settings['credentialSource']}, access key {settings['accessKeyId']}"
        )
        if settings.get("sessionToken"):
            self._echo("# the session token is read from $AWS_SESSION_TOKEN: export it first")
        self._echo(command)

    # -- diagnostics -------------------------------------------------------------------------
    def tracer(self) -> Trace | None:
        return Trace(self.verbose, self.streams) if self.verbose else None

    def _stderr(self) -> Console:
        if self._stderr_console is None:
            from rich.console import Console

            self._stderr_console = Console(file=self.streams.stderr)
        return self._stderr_console

    def _stdout(self) -> Console:
        from rich.console import Console

        return Console(file=self.streams.stdout)

    def _echo(self, text: str) -> None:
        click.echo(text, file=self.streams.stdout)

    def _json(self, fields: Mapping[str, object]) -> None:
        write_json(self.streams, fields)


def write_json(streams: Streams, fields: Mapping[str, object]) -> None:
    """One JSON object on one line of stdout, flushed (never through rich: it would wrap)."""
    streams.stdout.write(json.dumps(fields, ensure_ascii=False) + "\n")
    streams.stdout.flush()


def error_fields(error: WsconnError, why: list[str] | None = None) -> dict[str, object]:
    """The JSON object for a failure: the keys of a result, with the message and explanation."""
    return {
        "connectionId": error.connection_id,
        "outcome": error.outcome,
        "httpStatus": error.http_status,
        "errorType": error.error_type,
        "message": error.message,
        "attempts": error.attempts,
        "latencyMs": error.latency_ms,
        "explanation": why or [],
    }


def _setting_value(row: Setting) -> str | None:
    if row.value is None:
        return "the default CA store" if row.name == "caBundle" and not row.problem else None
    if row.name == "timeout":
        return f"{row.value:g}s"
    return str(row.value)


def _ages(info: ConnectionInfo) -> tuple[float, float]:
    """Seconds since connect and since last activity, by our clock or the service's."""
    now = datetime.now(timezone.utc)
    # The Date header has whole seconds: trust it over our clock only when they disagree.
    if info.server_time and abs((info.server_time - now).total_seconds()) > 2:
        now = info.server_time
    return (now - info.connected_at).total_seconds(), (now - info.last_active_at).total_seconds()


def _status_fields(info: ConnectionInfo) -> dict[str, object]:
    return {"connectionId": info.result.connection_id, **info.fields, **_result_fields(info.result)}


def _status_rows(info: ConnectionInfo) -> list[tuple[str, str]]:
    age, idle = _ages(info)
    return [
        ("connection id", info.result.connection_id),
        ("connected at", iso_ms(info.connected_at)),
        ("connected for", format_duration(age)),
        ("last active", iso_ms(info.last_active_at)),
        ("idle for", format_duration(idle)),
        ("source IP", info.source_ip or "-"),
        ("user agent", info.user_agent or "-"),
        ("idle timeout in", format_duration(IDLE_TIMEOUT - idle)),
        ("2-hour limit in", format_duration(MAX_DURATION - age)),
    ]


def _status_panel(
    connection_id: str,
    rows: list[tuple[str, str]],
    highlight: str | None = None,
    note: str = "",
    state: str = "[green]connected[/]",
) -> Any:
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(
            name, f"[reverse yellow]{escape(value)}[/]" if name == highlight else escape(value)
        )
    return Panel(
        table,
        title=f"[bold]{escape(connection_id)}[/] {state}",
        subtitle=note or None,
        title_align="left",
        subtitle_align="left",
        expand=False,
    )


_COUNTDOWNS = ("idle timeout in", "2-hour limit in")  # meaningless once it is gone


class Watch:
    """`status --watch`: one JSON or text line per poll, or a live rich panel on a terminal.

    When the connection goes, the last thing shown says so (a red "gone" panel, a text line).
    """

    def __init__(self, output: Output) -> None:
        self.output = output
        self.mode = output.mode
        self.polls = 0
        self._live: Any = None
        self._last_active: datetime | None = None
        self._last_rows: list[tuple[str, str]] = []
        self._changes = 0

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def poll(self, info: ConnectionInfo, interval: float) -> None:
        self.polls += 1
        changed = self._last_active is not None and info.last_active_at != self._last_active
        self._last_active = info.last_active_at
        self._changes += changed
        age, idle = _ages(info)
        if self.mode == "json":
            self.output._json(
                {
                    **_status_fields(info),
                    "poll": self.polls,
                    "activityChanged": changed,
                    "connectedSeconds": round(age, 3),
                    "idleSeconds": round(idle, 3),
                    "idleTimeoutInSeconds": round(IDLE_TIMEOUT - idle, 3),
                    "maxDurationInSeconds": round(MAX_DURATION - age, 3),
                }
            )
            return
        if self.mode == "text":
            mark = "  active" if changed else ""
            self.output._echo(
                f"{iso_ms(datetime.now(timezone.utc))}  connected {format_duration(age)}, "
                f"idle {format_duration(idle)}, idle timeout in "
                f"{format_duration(IDLE_TIMEOUT - idle)}, 2-hour limit in "
                f"{format_duration(MAX_DURATION - age)}{mark}"
            )
            self.output.streams.stdout.flush()
            return
        note = f"poll {self.polls}, every {interval:g}s, {self._changes} changes"
        self._last_rows = _status_rows(info)[1:]
        panel = _status_panel(
            info.result.connection_id, self._last_rows, "last active" if changed else None, note
        )
        if self._live is None:
            from rich.live import Live

            self._live = Live(panel, auto_refresh=False, console=self.output._stdout())
            self._live.start()
        self._live.update(panel, refresh=True)

    def gone(self, connection_id: str, last_seen: datetime | None, error: WsconnError) -> None:
        """The connection answered 410: the view's last state shows it gone (the error line
        on stderr says when)."""
        now = iso_ms(datetime.now(timezone.utc))
        if self.mode == "text" and last_seen is not None:
            self.output._echo(f"{now}  gone (last seen connected at {iso_ms(last_seen)})")
        elif self.mode == "rich" and self._live is not None:
            rows = [row for row in self._last_rows if row[0] not in _COUNTDOWNS]
            if last_seen is not None:
                rows.append(("last seen", iso_ms(last_seen)))
            rows.append(("gone by", now))
            panel = _status_panel(connection_id, rows, state="[bold red]gone[/]")
            self._live.update(panel, refresh=True)
            self._live.stop()
            self._live = None
        # JSON: the failure object (outcome "gone") that follows is the last line.


def curl_command(prepared: Prepared) -> str:
    """A pasteable curl command sending exactly these bytes with exactly these signed headers.

    The session token is written as $AWS_SESSION_TOKEN, never its value; --path-as-is keeps curl
    from normalising the signed path. A 4xx/5xx makes curl exit non-zero with the body shown
    (--fail-with-body, curl 7.76+), so `wsconn ... --dry-run | sh` fails when the request does;
    the status goes to stderr, the body to stdout.
    """
    import shlex

    parts = ["curl", "--silent", "--show-error", "--fail-with-body"]
    parts += ["--write-out", shlex.quote("%{stderr}HTTP %{http_code}\\n")]
    parts += ["--path-as-is", "--request", prepared.method]
    parts.append(shlex.quote(prepared.url))
    for name, value in prepared.headers.items():
        if name == "content-length":
            continue  # curl writes it from the body
        if name == "x-amz-security-token":
            parts.append('--header "x-amz-security-token: $AWS_SESSION_TOKEN"')
        else:
            parts.append("--header " + shlex.quote(f"{name}: {value}"))
    prefix = ""
    body = prepared.body
    if body:
        # No curl default Content-Type: the service would not mind, but keep the request as signed.
        parts.append("--header 'content-type:'")
        text = body.decode("utf-8", "replace")
        if text.encode("utf-8") == body and text.isprintable() and not text.startswith("@"):
            parts.append("--data-binary " + shlex.quote(text))
        else:
            prefix = f"printf {shlex.quote(printf_escape(body))} | "
            parts.append("--data-binary @-")
    return prefix + " ".join(parts)


def printf_escape(data: bytes) -> str:
    """printf's octal escapes for bytes that are not printable ASCII (and for % and \\)."""
    return "".join(chr(b) if 32 <= b < 127 and b not in (37, 92) else f"\\{b:03o}" for b in data)


def _result_fields(result: Result) -> dict[str, object]:
    return {
        "connectionId": result.connection_id,
        "outcome": result.outcome,
        "httpStatus": result.http_status,
        "errorType": None,
        "attempts": result.attempts,
        "latencyMs": result.latency_ms,
    }


class Trace:
    """-v: how the call was resolved and signed, the request and response, and timings, on
    stderr, with the signature and the session token redacted. With --ids, calls run in
    parallel: each block (request, signing, response) is written whole, under a lock."""

    def __init__(self, level: int, streams: Streams | None = None) -> None:
        self.level = level
        self.streams = streams or Streams.from_sys()
        self._token: str | None = None
        self._lock = threading.Lock()

    def _echo(self, *lines: str) -> None:
        with self._lock:
            click.echo("\n".join(lines), file=self.streams.stderr)

    def _redact(self, text: str) -> str:
        """Signatures, x-amz-security-token lines and the token's value hidden."""
        text = redact(_SIGNATURE.sub(r"\1<redacted>", text))
        return text.replace(self._token, "<redacted>") if self._token else text

    def resolved(self, settings: Mapping[str, str | None]) -> None:
        self._echo(
            f"* endpoint {settings['endpoint']} (from {settings['endpointSource']}), "
            f"region {settings['region']} (from {settings['regionSource']}), "
            f"credentials from {settings['credentialSource']} ({settings['accessKeyId']})"
        )

    def signing(self, canonical_request: str, string_to_sign: str) -> None:
        if self.level:
            self._echo(
                "* canonical request:",
                *(f"*   {self._redact(line)}" for line in canonical_request.splitlines()),
                "* string to sign:",
                *(f"*   {line}" for line in string_to_sign.splitlines()),
            )

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> None:
        self._token = headers.get("x-amz-security-token") or self._token
        lines = [f"> {method} {url}"]
        for name, value in headers.items():
            shown = "<redacted>" if name.lower() == "x-amz-security-token" else value
            lines.append(f"> {name}: {self._redact(shown)}")
        if body:
            lines.append(f"> ({len(body)} bytes of body)")
        self._echo(*lines)

    def response(
        self,
        status: int,
        reason: str,
        headers: Mapping[str, str],
        body: bytes,
        timings: Mapping[str, float],
    ) -> None:
        lines = [f"< {status} {reason}", *(f"< {name}: {value}" for name, value in headers.items())]
        if body:
            lines.append("< " + self._redact(body[:2000].decode("utf-8", "replace")))
        lines.append("* time: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in timings.items()))
        self._echo(*lines)

    def retry(self, attempt: int, delay: float, why: str) -> None:
        self._echo(f"* attempt {attempt} failed ({why}); retrying in {delay:.2f}s")


class BulkOutput:
    """Fan-out results: a JSON line or a text line per id on stdout; on a terminal a progress
    bar on stderr (and, for `status`, a table of the results at the end); a summary on stderr."""

    TABLE_ROWS = 1000  # a terminal table beyond this says how many more and how to see them

    def __init__(
        self,
        mode: str,
        success_word: str,
        streams: Streams | None = None,
        *,
        quiet: bool = False,
        verbose: int = 0,
        table: bool = False,
    ) -> None:
        self.streams = streams or Streams.from_sys()
        self.mode = output_mode(mode, self.streams)
        self.success_word = success_word
        self.total: int | None = None
        self.quiet = quiet
        # Not when JSON lines and the bar would share one terminal, nor under -v's trace.
        self.show_progress = (
            self.streams.stderr_is_terminal
            and not quiet
            and not verbose
            and not (self.mode == "json" and self.streams.stdout_is_terminal)
        )
        self._table = table and self.mode == "rich"
        self._rows: list[tuple[str, ...]] = []
        self._more_rows = 0
        self._progress: Any = None
        self._task: Any = None
        self._last_refresh = 0.0

    def begin(self, count: Callable[[], int | None]) -> None:
        if self.show_progress:
            self.total = count()

    def result(self, outcome: Outcome, summary: Summary) -> None:
        if self.mode == "json":
            # ASCII: an undecodable input line (kept as surrogates) must not break the output.
            self.streams.stdout.write(json.dumps(outcome.as_json()) + "\n")
            self.streams.stdout.flush()
        elif self.mode == "text":
            status = outcome.http_status if outcome.http_status is not None else "-"
            latency = f"{outcome.latency_ms:.1f}" if outcome.latency_ms is not None else "-"
            name = _printable(outcome.connection_id or outcome.line)
            self.streams.stdout.write(
                f"{name}\t{outcome.outcome}\t{status}\t{outcome.attempts}\t{latency}\n"
            )
            self.streams.stdout.flush()
        elif self._table:
            if len(self._rows) < self.TABLE_ROWS:
                self._rows.append(_table_row(outcome))
            else:
                self._more_rows += 1
        if self.show_progress:
            self._advance(summary)

    def stdout_closed(self) -> None:
        self.streams.silence_stdout()

    def _advance(self, summary: Summary) -> None:
        now = time.monotonic()
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.fields[of]}"),
                TextColumn("{task.fields[rate]:.0f}/s"),
                TextColumn("[green]{task.fields[ok]} " + self.success_word),
                TextColumn("[yellow]{task.fields[gone]} gone"),
                TextColumn("[red]{task.fields[failed]} failed"),
                TextColumn("{task.fields[skipped]}"),
                TimeElapsedColumn(),
                console=self._console(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "wsconn",
                total=self.total,
                of=self.total or "?",
                rate=0,
                ok=0,
                gone=0,
                failed=0,
                skipped="",
            )
        if now - self._last_refresh < 0.1 and summary.done != self.total:
            return
        self._last_refresh = now
        # The same counts as the summary line: not attempted is not failed.
        self._progress.update(
            self._task,
            completed=summary.done,
            rate=summary.requests_per_second,
            ok=summary.succeeded,
            gone=summary.gone,
            failed=summary.failed,
            skipped=f"{summary.not_attempted} not attempted" if summary.not_attempted else "",
        )

    def _console(self) -> Console:
        from rich.console import Console

        return Console(file=self.streams.stderr)

    def _say(self, text: str) -> None:
        """A line on stderr; above the progress bar when one is showing (never over it)."""
        if self._progress is not None:
            from rich.markup import escape

            self._progress.console.print(escape(text), highlight=False, soft_wrap=True)
        else:
            click.echo(text, file=self.streams.stderr)

    def stopping(self, again_quits: bool) -> None:
        if self.quiet:
            return
        hint = " (Ctrl-C again to quit at once)" if again_quits else ""
        self._say(f"wsconn: stopping: no new requests; waiting for those in flight{hint}")

    def note(self, text: str) -> None:
        self._say(f"wsconn: {text}")

    def finish(self, summary: Summary) -> None:
        if self._progress is not None:
            self._last_refresh = 0.0
            self._advance(summary)
            self._progress.stop()
        if self._table and (self._rows or self._more_rows):
            self._print_table()
        p50, p99 = summary.percentile(0.5), summary.percentile(0.99)
        latency = f"; p50 {p50} ms, p99 {p99} ms" if p50 is not None else ""
        skipped = f", {summary.not_attempted} not attempted" if summary.not_attempted else ""
        click.echo(
            f"wsconn: {summary.succeeded} {self.success_word}, {summary.gone} gone, "
            f"{summary.failed} failed{skipped} of {summary.done} in {summary.seconds:.2f}s "
            f"({summary.requests_per_second:.0f} requests/s{latency})",
            file=self.streams.stderr,
        )

    def _print_table(self) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", box=None)
        notes = any(row[-1] for row in self._rows)  # a why column only when something failed
        for column in _TABLE_COLUMNS if notes else _TABLE_COLUMNS[:-1]:
            table.add_column(column)
        for row in self._rows:
            table.add_row(*(escape(cell) for cell in (row if notes else row[:-1])))
        console = Console(file=self.streams.stdout)
        console.print(table)
        if self._more_rows:
            console.print(
                f"... and {self._more_rows} more (all of them: -o text or -o json)", highlight=False
            )


_TABLE_COLUMNS = (
    "connection id",
    "outcome",
    "connected for",
    "idle",
    "source IP",
    "user agent",
    "why",
)


def _printable(text: str) -> str:
    """Text with undecodable bytes (kept as surrogates) shown as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _table_row(outcome: Outcome) -> tuple[str, ...]:
    """One line of `status --ids`'s terminal table."""
    name = _printable(outcome.connection_id or outcome.line)
    fields = outcome.fields
    if not fields:
        note = "" if outcome.outcome in ("gone", "not-attempted") else outcome.message or ""
        return (name, outcome.outcome, "-", "-", "-", "-", note)
    now = datetime.now(timezone.utc)
    identity = fields.get("identity")
    source_ip = user_agent = "-"
    if isinstance(identity, dict):
        source_ip = str(identity.get("sourceIp") or "-")
        user_agent = str(identity.get("userAgent") or "-")
    return (
        name,
        outcome.outcome,
        _since(fields.get("connectedAt"), now),
        _since(fields.get("lastActiveAt") or fields.get("connectedAt"), now),
        source_ip,
        user_agent,
        "",
    )


def _since(stamp: object, now: datetime) -> str:
    if not isinstance(stamp, str):
        return "-"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return format_duration((now - moment).total_seconds())


class ListenOutput:
    """`wsconn listen`'s events: one JSON object per line (`-o json`), received frames as lines
    on stdout when piped (the rest on stderr), or a rich transcript on a terminal, with an
    interactive prompt kept below what arrives.

    Called from the session's loop and from the prompt's thread: every write takes one lock.
    """

    PROMPT = "> "

    def __init__(self, mode: str = "auto", streams: Streams | None = None) -> None:
        self.streams = streams or Streams.from_sys()
        self.mode = output_mode(mode, self.streams)
        self._lock = threading.Lock()
        self._prompt_shown = False  # the prompt (and what is typed) is on the last line
        self._console: Console | None = None
        self._readline: Any = None
        self._terminal_state: Any = None  # termios settings before the prompt, restored by close()

    # -- events --------------------------------------------------------------------------------
    def connected(self, connection_id: str | None, url: str, subprotocol: str | None) -> None:
        if self.mode == "json":
            self._json(
                {
                    "event": "connected",
                    "connectionId": connection_id,
                    "url": url,
                    "subprotocol": subprotocol,
                    "time": _now(),
                }
            )
            return
        who = f" as {connection_id}" if connection_id else ""
        protocol = f" (subprotocol {subprotocol})" if subprotocol else ""
        if self.mode == "text":
            click.echo(f"wsconn: connected to {url}{who}{protocol}", file=self.streams.stderr)
            return
        from rich.text import Text

        line = Text.assemble(("connected ", "bold green"), url, (who, "bold"), (protocol, "dim"))
        self._row("●", "green", line)

    def received(self, data: str | bytes) -> None:
        binary = isinstance(data, bytes)
        shown = data if isinstance(data, str) else _b64(data)
        if self.mode == "json":
            self._json({"event": "message", "data": shown, "binary": binary, "time": _now()})
        elif self.mode == "text":
            with self._lock:
                self.streams.stdout.write(f"[binary] {shown}\n" if binary else f"{shown}\n")
                self.streams.stdout.flush()
        else:
            self._row("←", "cyan", _body(data, self._terminal().width - 16))

    def sent(self, data: str | bytes, keepalive: bool) -> None:
        binary = isinstance(data, bytes)
        shown = data if isinstance(data, str) else _b64(data)
        if self.mode == "json":
            self._json(
                {
                    "event": "sent",
                    "data": shown,
                    "binary": binary,
                    "keepalive": keepalive,
                    "time": _now(),
                }
            )
        elif self.mode == "rich":
            from rich.text import Text

            body = (
                Text(f"{shown}  (keep-alive)", style="dim")
                if keepalive
                else _body(data, self._terminal().width - 16)
            )
            self._row("→", "magenta", body)

    def closed(self, code: int, reason: str, by: str) -> None:
        from wsconn.listen import describe_close

        meaning = describe_close(code, by)
        if self.mode == "json":
            self._json(
                {
                    "event": "closed",
                    "code": code,
                    "reason": reason,
                    "by": by,
                    "meaning": meaning,
                    "time": _now(),
                }
            )
            return
        if by != "server":
            return  # we closed it as asked: nothing to explain
        said = f" {reason}" if reason else ""
        if self.mode == "text":
            click.echo(
                f"wsconn: closed by the server: {code}{said} ({meaning})", file=self.streams.stderr
            )
            return
        from rich.text import Text

        style = "yellow" if code in (1000, 1001) else "bold red"
        line = Text.assemble((f"closed {code}{said}", style), " by the server: ", meaning)
        self._row("✕", style, line)

    def note(self, text: str) -> None:
        with self._lock:
            self._clear_prompt()
            click.echo(f"wsconn: {text}", file=self.streams.stderr)
            self._redraw_prompt()

    def failed(self, error: WsconnError) -> None:
        """The one-line message on stderr; with -o json also the `error` event, last on stdout."""
        if self.mode == "json":
            self._json(
                {
                    "event": "error",
                    "outcome": error.outcome,
                    "exitCode": int(error.exit_code),
                    "httpStatus": error.http_status,
                    "errorType": error.error_type,
                    "message": error.message,
                    "time": _now(),
                }
            )
        error.show(file=self.streams.stderr)
        error.shown = True

    # -- the interactive prompt ----------------------------------------------------------------
    def read_line(self) -> str | None:
        """A line typed at the prompt (blocking; run it off the event loop); None on Ctrl-D.

        Lines that arrive meanwhile are printed above the prompt, and what was being typed is
        drawn again below them. The typed line itself is replaced by the `sent` row.
        """
        if self._readline is None:
            self._save_terminal()
            self._console_hint()
            try:
                import readline

                readline.set_pre_input_hook(self._prompt_drawn)
                self._readline = readline
            except ImportError:
                self._readline = False
        try:
            line = input(self.PROMPT)
        except EOFError:
            with self._lock:
                self._prompt_shown = False
                self.streams.stdout.write("\n")
                self.streams.stdout.flush()
            return None
        with self._lock:
            self._prompt_shown = False
            # Up over the echoed "> line" (wrapped rows too) and clear: the sent row replaces it.
            from rich.cells import cell_len

            width = max(1, self._terminal().width)
            rows = max(0, cell_len(self.PROMPT + line) - 1) // width + 1
            self.streams.stdout.write(f"\x1b[{rows}A\r\x1b[J")
            self.streams.stdout.flush()
        return line

    def close(self) -> None:
        """After the run: the prompt line cleared and the terminal as the shell left it (the
        prompt's thread may still be inside readline, which changed it)."""
        with self._lock:
            if self._prompt_shown:
                self.streams.stdout.write("\r\x1b[2K")
                self.streams.stdout.flush()
                self._prompt_shown = False
            if self._terminal_state is not None:
                import termios

                with contextlib.suppress(OSError, termios.error, ValueError):
                    termios.tcsetattr(self._stdin_fd(), termios.TCSADRAIN, self._terminal_state)

    def _save_terminal(self) -> None:
        try:
            import termios

            self._terminal_state = termios.tcgetattr(self._stdin_fd())
        except (ImportError, OSError, ValueError):
            self._terminal_state = None

    def _console_hint(self) -> None:
        from rich.text import Text

        with self._lock:
            self._terminal().print(
                Text("type a line and Enter to send it · Ctrl-D closes · Ctrl-C quits", style="dim")
            )

    def _prompt_drawn(self) -> None:
        with self._lock:
            self._prompt_shown = True

    def _clear_prompt(self) -> None:
        if self._prompt_shown:
            self.streams.stdout.write("\r\x1b[2K")

    def _redraw_prompt(self) -> None:
        if self._prompt_shown:
            typed = self._readline.get_line_buffer() if self._readline else ""
            self.streams.stdout.write(self.PROMPT + typed)
            self.streams.stdout.flush()

    # -- writing -------------------------------------------------------------------------------
    def _row(self, mark: str, style: str, body: Any) -> None:
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(style=style, no_wrap=True)
        grid.add_column()
        grid.add_row(_now()[11:23], mark, body)
        with self._lock:
            self._clear_prompt()
            self._terminal().print(grid)
            self._redraw_prompt()

    def _terminal(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.streams.stdout, highlight=False)
        return self._console

    def _json(self, fields: Mapping[str, object]) -> None:
        with self._lock:
            write_json(self.streams, fields)

    def _stdin_fd(self) -> int:
        if self.streams.stdin is None:
            raise ValueError("standard input is closed")
        return self.streams.stdin.fileno()


def _now() -> str:
    return iso_ms(datetime.now(timezone.utc))


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _body(data: str | bytes, width: int) -> Any:
    """A frame for the terminal: JSON coloured (on one line if it fits `width`, else indented),
    text as is, binary marked."""
    from rich.text import Text

    if isinstance(data, bytes):
        return Text.assemble((f"[binary, {len(data)} bytes] ", "bold"), _b64(data))
    stripped = data.strip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            pass
        else:
            from rich.json import JSON

            compact = json.dumps(parsed, ensure_ascii=False)
            return JSON.from_data(parsed, indent=2 if len(compact) > width else None)
    return Text(data)
