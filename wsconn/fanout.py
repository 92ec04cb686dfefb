"""Fan-out: one operation over a stream of connection ids, every id accounted for.

A reader thread streams the ids into a bounded queue (memory stays flat whatever the list's
length), N worker threads call the management API through one shared pool per endpoint, and
the calling thread collects one result per input line, in completion order, for the renderer
and the --gone-out / --failed-out files. The first Ctrl-C stops new requests and lets those in
flight finish; every id not attempted is still reported and written to --failed-out.
"""

from __future__ import annotations

import io
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Protocol

from wsconn.client import ConnectionInfo
from wsconn.endpoint import readable
from wsconn.errors import ConfigError, ExitCode, NotAttempted, UsageError, WsconnError

if TYPE_CHECKING:
    from wsconn.client import ManagementClient, Result
    from wsconn.endpoint import Endpoint

# The order in which failures decide a run's exit code: the most serious wins, gone counts least.
SEVERITY = (
    ExitCode.OK,
    ExitCode.GONE,
    ExitCode.CLIENT_ERROR,
    ExitCode.PAYLOAD_TOO_LARGE,
    ExitCode.THROTTLED,
    ExitCode.SERVER_ERROR,
    ExitCode.NETWORK,
    ExitCode.FORBIDDEN,
    ExitCode.USAGE,
    ExitCode.CONFIG,
    ExitCode.INTERNAL,
    ExitCode.INTERRUPTED,
)

NOT_ATTEMPTED = NotAttempted.outcome


@dataclass(frozen=True)
class Outcome:
    """The result of one input line."""

    line: str  # the line as given: what --gone-out / --failed-out write, so a re-run resumes
    connection_id: str | None
    outcome: str
    exit_code: int
    http_status: int | None = None
    error_type: str | None = None
    attempts: int = 0
    latency_ms: float | None = None
    message: str | None = None
    fields: dict[str, object] = field(default_factory=dict)  # status: the service's fields

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            # An undecodable line (kept as surrogates) as \xNN escapes: JSON with no lone surrogate.
            "line": readable(self.line),
            "connectionId": self.connection_id,
            "outcome": self.outcome,
            "httpStatus": self.http_status,
            "errorType": self.error_type,
            "attempts": self.attempts,
            "latencyMs": self.latency_ms,
        }
        if self.message is not None:
            body["message"] = self.message
        body.update(self.fields)
        return body


@dataclass
class Summary:
    """Counts and latency percentiles for a run, in constant memory."""

    done: int = 0
    succeeded: int = 0
    gone: int = 0
    failed: int = 0
    not_attempted: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    exit_code: int = ExitCode.OK
    _latency: dict[int, int] = field(default_factory=dict)  # log-scale buckets, 2% wide

    def add(self, outcome: Outcome) -> None:
        self.done += 1
        if outcome.outcome == NOT_ATTEMPTED:
            self.not_attempted += 1
        elif outcome.exit_code == ExitCode.OK:
            self.succeeded += 1
        elif outcome.exit_code == ExitCode.GONE:
            self.gone += 1
        else:
            self.failed += 1
        if SEVERITY.index(ExitCode(outcome.exit_code)) > SEVERITY.index(ExitCode(self.exit_code)):
            self.exit_code = outcome.exit_code
        if outcome.latency_ms is not None and outcome.attempts:
            bucket = int(math.log(max(outcome.latency_ms, 0.01)) / _LOG_STEP)
            self._latency[bucket] = self._latency.get(bucket, 0) + 1

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def requests_per_second(self) -> float:
        attempted = self.done - self.not_attempted
        return attempted / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, share: float) -> float | None:
        """Latency (ms) below which `share` of the calls finished, within 2%."""
        total = sum(self._latency.values())
        if not total:
            return None
        rank = share * total
        seen = 0
        for bucket in sorted(self._latency):
            seen += self._latency[bucket]
            if seen >= rank:
                return round(math.exp((bucket + 0.5) * _LOG_STEP), 1)
        return None


_LOG_STEP = math.log(1.02)


class RunPacer:
    """Paces every worker of one run: --rate, and a run-wide slow-down when throttled.

    A 429 pauses all workers (Retry-After or the back-off) and halves the request rate, at most
    once per half-second (sixteen workers throttled together are one signal, not sixteen); each
    half-second without a 429 raises it by a quarter, back to --rate (or unlimited). So a
    throttling service sees the whole run back off instead of every worker hammering it.
    """

    STEP = 0.5  # seconds between rate changes

    def __init__(self, rate: float | None, stop: threading.Event) -> None:
        self.limit = rate
        self.rate = rate  # the current cap, requests per second; None = unlimited
        self.stop = stop
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._pause_until = 0.0
        self._last_change = 0.0
        self._window_start = time.monotonic()
        self._window_count = 0
        self._observed = 0.0  # requests/s over the last full window

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start, self._pause_until)
            if self.rate:
                self._next_start = start + 1.0 / self.rate
            if now - self._window_start >= self.STEP:
                self._observed = self._window_count / (now - self._window_start)
                self._window_start, self._window_count = now, 0
            self._window_count += 1
        if start > now:
            self.sleep(start - now)

    def succeeded(self) -> None:
        if self.rate is None or self.rate == self.limit:
            return
        with self._lock:
            now = time.monotonic()
            if self.rate is None or now - self._last_change < self.STEP:
                return
            self._last_change = now
            grown = self.rate * 1.25
            if self.limit is not None:
                self.rate = min(grown, self.limit)
            else:
                self.rate = None if grown > 10_000 else grown

    def throttled(self, delay: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._pause_until = max(self._pause_until, now + delay)
            if now - self._last_change < self.STEP and self.rate is not None:
                return
            self._last_change = now
            recent = self._window_count / max(now - self._window_start, 0.05)
            current = self.rate or max(self._observed, recent, 2.0)
            self.rate = max(1.0, current / 2)

    def sleep(self, delay: float) -> None:
        self.stop.wait(delay)

    def stopping(self) -> bool:
        return self.stop.is_set()


Operation = Callable[["ManagementClient", str], "Result | ConnectionInfo"]


def read_ids(stream: IO[str], unique_key: Callable[[str], object] | None = None) -> Iterator[str]:
    """Input lines that name a connection: stripped, blank lines and # comments skipped; with
    `unique_key`, a line whose key was seen before is skipped too (--unique)."""
    seen: set[object] = set()
    for number, raw in enumerate(stream):
        line = raw.strip()
        if number == 0:
            line = line.lstrip("\ufeff").strip()
        if not line or line.startswith("#"):
            continue
        if unique_key is not None:
            key = unique_key(line)
            if key in seen:
                continue
            seen.add(key)
        yield line


@contextmanager
def open_ids(path: str) -> Iterator[IO[str]]:
    """The --ids stream: stdin for '-', else the file."""
    if path == "-":
        if sys.stdin is None:
            raise UsageError("--ids -: standard input is closed")
        # Our own decoder: undecodable bytes must survive (as surrogates), not stop the run.
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
        try:
            yield stream
        finally:
            stream.detach()  # leave sys.stdin itself open
        return
    try:
        # Undecodable bytes survive as surrogates: refused as ids, written back as they were.
        stream = open(path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot read --ids {path}: {exc.strerror or exc}") from None
    with stream:
        yield stream


@contextmanager
def open_list(path: str | None) -> Iterator[IO[str] | None]:
    """A --gone-out / --failed-out file, line-buffered so an interrupted run leaves it whole."""
    if path is None:
        yield None
        return
    try:
        stream = open(path, "w", encoding="utf-8", errors="surrogateescape", buffering=1)  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    with stream:
        yield stream


def count_ids(path: str, unique_key: Callable[[str], object] | None = None) -> int | None:
    """How many ids a regular file holds (for a progress total); None for pipes."""
    if path == "-" or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="surrogateescape") as stream:
        return sum(1 for _ in read_ids(stream, unique_key))


class FanOut:
    """One run: ids in, one Outcome per input line out (via `results()`)."""

    def __init__(
        self,
        *,
        ids: IO[str],
        unique_key: Callable[[str], object] | None,
        concurrency: int,
        pacer: RunPacer,
        client_for: Callable[[str], tuple[ManagementClient, str]],
        call: Operation,
    ) -> None:
        self.stop = pacer.stop
        self._ids = ids
        self._unique_key = unique_key
        self._concurrency = concurrency
        self._client_for = client_for
        self._call = call
        self._work: queue.Queue[str | None] = queue.Queue(maxsize=concurrency * 4)
        self._in_flight = 0  # lines taken by workers and not yet reported
        self._in_flight_lock = threading.Lock()
        self.input_abandoned = False
        self._results: queue.Queue[Outcome | None] = queue.Queue(maxsize=concurrency * 64)

    def results(self) -> Iterator[Outcome]:
        """Start the run and yield each line's outcome as it completes."""
        threads = [threading.Thread(target=self._read, name="wsconn-ids", daemon=True)]
        threads += [
            threading.Thread(target=self._work_loop, name=f"wsconn-worker-{n}", daemon=True)
            for n in range(self._concurrency)
        ]
        for thread in threads:
            thread.start()
        running = len(threads)
        last_result = time.monotonic()
        while running:
            try:
                item = self._results.get(timeout=0.1)
            except queue.Empty:
                if self._input_stuck(threads[0], last_result):
                    self.input_abandoned = True
                    return
                continue
            last_result = time.monotonic()
            if item is None:
                running -= 1
            else:
                yield item

    def _input_stuck(self, reader: threading.Thread, last_result: float) -> bool:
        """Stopped, nothing in flight, and the ids still not read to their end for a second:
        the input is a pipe that does not end (`(cat ids; sleep 1d) | wsconn ...`)."""
        return (
            self.stop.is_set()
            and reader.is_alive()
            and self._in_flight == 0
            and self._work.empty()
            and time.monotonic() - last_result > 1.0
        )

    def _read(self) -> None:
        try:
            for line in read_ids(self._ids, self._unique_key):
                if self.stop.is_set():
                    self._results.put(_not_attempted(line))
                    continue
                self._work.put(line)
        except (OSError, UnicodeDecodeError) as exc:
            self._results.put(
                Outcome(
                    "", None, "config-error", ExitCode.CONFIG, message=f"cannot read ids: {exc}"
                )
            )
        finally:
            for _ in range(self._concurrency):
                self._work.put(None)
            self._results.put(None)

    def _work_loop(self) -> None:
        try:
            while (line := self._work.get()) is not None:
                with self._in_flight_lock:
                    self._in_flight += 1
                outcome = _not_attempted(line) if self.stop.is_set() else self._one(line)
                self._results.put(outcome)
                with self._in_flight_lock:
                    self._in_flight -= 1
        finally:
            self._results.put(None)

    def _one(self, line: str) -> Outcome:
        connection_id: str | None = None
        try:
            client, connection_id = self._client_for(line)
            answer = self._call(client, connection_id)
        except WsconnError as error:
            return Outcome(
                line,
                connection_id,
                error.outcome,
                error.exit_code,
                error.http_status,
                error.error_type,
                error.attempts,
                error.latency_ms,
                error.message,
            )
        except Exception as exc:  # a bug must cost one line, not the run
            return Outcome(
                line,
                connection_id,
                "failed",
                ExitCode.INTERNAL,
                message=f"internal error: {type(exc).__name__}: {exc}",
            )
        result, fields = (
            (answer.result, answer.fields) if isinstance(answer, ConnectionInfo) else (answer, {})
        )
        return Outcome(
            line,
            connection_id,
            result.outcome,
            ExitCode.OK,
            result.http_status,
            None,
            result.attempts,
            result.latency_ms,
            fields=fields,
        )


class Renderer(Protocol):
    """What the run reports to (render.BulkOutput)."""

    def begin(self, count: Callable[[], int | None]) -> None:
        """The run starts; `count()` reads how many ids there are (None: a pipe), if wanted."""

    def result(self, outcome: Outcome, summary: Summary) -> None: ...

    def stdout_closed(self) -> None:
        """stdout's reader went away: write nothing more there."""

    def stopping(self, again_quits: bool) -> None: ...

    def note(self, text: str) -> None: ...

    def finish(self, summary: Summary) -> None: ...


def run(
    fanout: FanOut,
    out: Renderer,
    *,
    gone_out: IO[str] | None,
    failed_out: IO[str] | None,
) -> int:
    """Run to the end (or to a stop): render each outcome, write the id files; the exit code.

    Ctrl-C or SIGTERM stops new requests and lets those in flight finish; every id not attempted
    is still reported and written to --failed-out. A second Ctrl-C raises KeyboardInterrupt at
    once. When stdout's reader goes away (`| head`), the run stops the same way and nothing more
    goes to stdout.
    """
    summary = Summary()
    stopped_by: list[int] = []

    def stop(code: int) -> None:
        if not fanout.stop.is_set():
            fanout.stop.set()
            stopped_by.append(code)
            out.stopping(again_quits=code == ExitCode.INTERRUPTED)

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and fanout.stop.is_set():
            raise KeyboardInterrupt
        stop(ExitCode.INTERRUPTED if signum == signal.SIGINT else ExitCode.TERMINATED)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stdout_open = True
    try:
        for outcome in fanout.results():
            summary.add(outcome)
            if not outcome.line:
                pass  # a failure of the run itself (unreadable ids), not of one id
            elif outcome.exit_code == ExitCode.GONE:
                if gone_out is not None:
                    gone_out.write(outcome.line + "\n")
            elif outcome.exit_code != ExitCode.OK and failed_out is not None:
                failed_out.write(outcome.line + "\n")
            if stdout_open:
                try:
                    out.result(outcome, summary)
                except BrokenPipeError:
                    stdout_open = False
                    out.stdout_closed()
                    stop(ExitCode.BROKEN_PIPE)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary.finished = time.perf_counter()
    if stopped_by:
        summary.exit_code = stopped_by[0]
    if fanout.input_abandoned:
        out.note(
            "stopped reading --ids: the input had not ended; lines after those reported were "
            "not read and are not in --failed-out"
        )
    out.finish(summary)
    return summary.exit_code


def _not_attempted(line: str) -> Outcome:
    return Outcome(
        line, None, NOT_ATTEMPTED, ExitCode.INTERRUPTED, message="interrupted before it was sent"
    )


class ClientCache:
    """One ManagementClient per endpoint (lines may be URLs of different APIs), made on demand."""

    def __init__(
        self,
        make: Callable[[Endpoint], ManagementClient],
        resolve: Callable[[str], tuple[Endpoint, str]],
    ) -> None:
        self._make = make
        self._resolve = resolve
        self._clients: dict[Endpoint, ManagementClient] = {}
        self._lock = threading.Lock()

    def __call__(self, line: str) -> tuple[ManagementClient, str]:
        endpoint, connection_id = self._resolve(line)
        client = self._clients.get(endpoint)
        if client is None:
            with self._lock:
                client = self._clients.get(endpoint)
                if client is None:
                    client = self._clients[endpoint] = self._make(endpoint)
        return client, connection_id

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
