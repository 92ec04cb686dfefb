"""Fan-out: one operation over a stream of connection ids, every id accounted for.

A reader thread streams the ids into a bounded queue (memory stays flat whatever the list's
length), N worker threads call the management API through one shared pool per endpoint, and
the calling thread collects one result per input line, in completion order, for the renderer
and the --gone-out / --failed-out files. The first Ctrl-C stops new requests and lets those in
flight finish; every id not attempted is still reported and written to --failed-out.
With -P N (ProcessFanOut) the same run is spread over N forked worker processes, each a FanOut
of its own, with the pacer and the stop in shared memory; the outcomes come back to this one.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, MutableSequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Protocol

from wsconn.client import ConnectionInfo
from wsconn.endpoint import readable
from wsconn.errors import ConfigError, ExitCode, NotAttempted, UsageError, WsconnError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

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


class StopFlag:
    """A run's stop, seen by every worker thread of every worker process (-P): one shared byte.

    Lock-free, so a signal handler may set it while any thread reads it; `wait` polls it.
    """

    def __init__(self) -> None:
        self._flag = multiprocessing.get_context("fork").RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._flag.value:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.05))
        return True


class Stop(Protocol):
    """threading.Event, or a StopFlag across processes."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...


# RunPacer's state, one float each (a list, or shared memory across processes).
_RATE, _NEXT, _PAUSE, _CHANGED, _WINDOW, _COUNT, _OBSERVED = range(7)


class RunPacer:
    """Paces every worker of one run: --rate, and a run-wide slow-down when throttled.

    A 429 pauses all workers (Retry-After or the back-off) and halves the request rate, at most
    once per half-second (sixteen workers throttled together are one signal, not sixteen); each
    half-second without a 429 raises it by a quarter, back to --rate (or unlimited). So a
    throttling service sees the whole run back off instead of every worker hammering it.
    With `shared`, the state lives in shared memory under one lock for the worker processes of
    -P: --rate is the total, and a 429 slows them all.
    """

    STEP = 0.5  # seconds between rate changes

    def __init__(self, rate: float | None, stop: Stop, *, shared: bool = False) -> None:
        self.limit = rate
        self.stop = stop
        state = [rate or 0.0, 0.0, 0.0, 0.0, time.monotonic(), 0.0, 0.0]
        if shared:
            context = multiprocessing.get_context("fork")
            self._state: MutableSequence[float] = context.RawArray("d", state)
            self._lock: AbstractContextManager[object] = context.Lock()
        else:
            self._state = state
            self._lock = threading.Lock()

    @property
    def rate(self) -> float | None:
        """The current cap, requests per second; None = unlimited."""
        return self._state[_RATE] or None

    def wait(self) -> None:
        state = self._state
        now = time.monotonic()
        if not state[_RATE] and state[_PAUSE] <= now and now - state[_WINDOW] < self.STEP:
            state[_COUNT] += 1  # unlimited and not paused: no lock (the count is an estimate)
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, state[_NEXT], state[_PAUSE])
            if state[_RATE]:
                state[_NEXT] = start + 1.0 / state[_RATE]
            if now - state[_WINDOW] >= self.STEP:
                state[_OBSERVED] = state[_COUNT] / (now - state[_WINDOW])
                state[_WINDOW], state[_COUNT] = now, 0
            state[_COUNT] += 1
        if start > now:
            self.sleep(start - now)

    def succeeded(self) -> None:
        state = self._state
        if not state[_RATE] or state[_RATE] == self.limit:
            return
        with self._lock:
            now = time.monotonic()
            if not state[_RATE] or now - state[_CHANGED] < self.STEP:
                return
            state[_CHANGED] = now
            grown = state[_RATE] * 1.25
            if self.limit is not None:
                state[_RATE] = min(grown, self.limit)
            else:
                state[_RATE] = 0.0 if grown > 10_000 else grown

    def throttled(self, delay: float) -> None:
        state = self._state
        with self._lock:
            now = time.monotonic()
            state[_PAUSE] = max(state[_PAUSE], now + delay)
            if now - state[_CHANGED] < self.STEP and state[_RATE]:
                return
            state[_CHANGED] = now
            recent = state[_COUNT] / max(now - state[_WINDOW], 0.05)
            current = state[_RATE] or max(state[_OBSERVED], recent, 2.0)
            state[_RATE] = max(1.0, current / 2)

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
    """One run: lines in, one Outcome per line out (via `results()`), over threads."""

    def __init__(
        self,
        *,
        lines: Iterable[str],
        concurrency: int,
        pacer: RunPacer,
        client_for: Callable[[str], tuple[ManagementClient, str]],
        call: Operation,
    ) -> None:
        """`lines`: the ids as read (`read_ids`), consumed by a thread of the run's own."""
        self.stop = pacer.stop
        self._lines = lines
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
        for batch in self.batches(1):
            yield from batch

    def batches(self, most: int, linger: float = 0.0) -> Iterator[list[Outcome]]:
        """Start the run; yield the outcomes as they complete, up to `most` at a time: those
        there, and those that come within `linger` seconds of the first."""
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
            until = last_result + linger
            batch: list[Outcome] = []
            while True:
                if item is None:
                    running -= 1
                else:
                    batch.append(item)
                if len(batch) >= most or not running:
                    break
                try:
                    left = until - time.monotonic()
                    item = (
                        self._results.get(timeout=left) if left > 0 else self._results.get_nowait()
                    )
                except queue.Empty:
                    break
            if batch:
                yield batch

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
            for line in self._lines:
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


NO_WORKER = "no worker process is left to send it"
LINGER = 0.01  # seconds a worker gathers outcomes before sending them (fewer pipe messages)


class _Worker:
    """The parent's side of one worker process: its pipe, and the lines it holds."""

    def __init__(self, process: multiprocessing.process.BaseProcess, pipe: Connection) -> None:
        self.process = process
        self.pipe = pipe
        self.held: Counter[str] = Counter()  # lines sent and not yet reported
        self.holding = 0  # their number
        self.room = threading.Condition()
        self.died: str | None = None  # why, once the worker is found dead

    def take(self, lines: list[str]) -> bool:
        """Hold `lines` for the worker; False if it is dead (they are not held)."""
        with self.room:
            if self.died is not None:
                return False
            self.held.update(lines)
            self.holding += len(lines)
            return True

    def die(self, why: str) -> list[str]:
        """The worker is dead: the lines it held, no longer held."""
        with self.room:
            self.died = why
            lost = list(self.held.elements())
            self.held.clear()
            self.holding = 0
            self.room.notify_all()
            return lost

    def reported(self, lines: Iterable[str]) -> None:
        with self.room:
            for line in lines:
                left = self.held[line] - 1
                if left:
                    self.held[line] = left
                else:
                    del self.held[line]
                self.holding -= 1
            self.room.notify()


class ProcessFanOut:
    """-P N: one stream of ids over N worker processes, each a FanOut with its own threads and
    connection pool; the outcomes come back here, to one writer and one renderer (`run`).

    A reader thread streams the ids into a bounded queue; a feeder thread per worker sends it
    batches of lines as its own queue has room (memory stays flat), a collector thread per
    worker takes its outcomes back. Workers ignore SIGINT and SIGTERM: they stop when the run's
    StopFlag is set, and report every line they were sent, attempted or not. A worker that dies
    costs its held lines one internal-error outcome each, never the run.
    """

    def __init__(
        self,
        *,
        lines: Iterable[str],
        processes: int,
        concurrency: int,
        pacer: RunPacer,
        clients: Callable[[RunPacer], ClientCache],
        call: Operation,
    ) -> None:
        """`clients(pacer)` makes a worker's client cache, in the worker (after the fork)."""
        self.stop = pacer.stop
        self._lines = lines
        self._processes = processes
        self._concurrency = concurrency
        self._pacer = pacer
        self._clients = clients
        self._call = call
        # Lines a worker may hold: -j in flight and more queued, refilled -j at a time (few
        # messages on the pipes; its threads never wait for lines).
        self._hold = concurrency * 4
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=self._hold * processes)
        self._results: queue.Queue[list[Outcome] | None] = queue.Queue(maxsize=processes * 64)
        self._all_dead = threading.Event()
        self._workers: list[_Worker] = []
        self._reader = threading.Thread()
        self.input_abandoned = False

    def results(self) -> Iterator[Outcome]:
        """Start the workers and yield each line's outcome as it completes."""
        context = multiprocessing.get_context("fork")
        workers: list[_Worker] = []
        sys.stdout.flush()  # a child must not inherit (and write again) what is still buffered
        sys.stderr.flush()
        try:
            for number in range(self._processes):  # before any thread of ours: a clean fork
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=self._serve, args=(theirs,), name=f"wsconn-worker-{number}", daemon=True
                )
                process.start()
                theirs.close()
                workers.append(_Worker(process, ours))
            reader = self._reader = threading.Thread(
                target=self._read, name="wsconn-ids", daemon=True
            )
            self._workers = workers
            threads = [reader]
            for worker in workers:
                threads.append(threading.Thread(target=self._feed, args=(worker,), daemon=True))
                threads.append(threading.Thread(target=self._collect, args=(worker,), daemon=True))
            for thread in threads:
                thread.start()
            running = 1 + len(workers)  # the reader, and each collector, end with a None
            last_result = time.monotonic()
            while running:
                try:
                    batch = self._results.get(timeout=0.1)
                except queue.Empty:
                    if self._input_stuck(reader, workers, last_result):
                        self.input_abandoned = True
                        return
                    continue
                last_result = time.monotonic()
                if batch is None:
                    running -= 1
                else:
                    yield from batch
        except BaseException:  # a second Ctrl-C (or a bug): quit at once, nothing left running
            for worker in workers:
                worker.process.kill()
            raise
        finally:
            self.stop.set()  # (already set unless every line was reported)
            for worker in workers:
                _end(worker)

    def _input_stuck(self, reader: threading.Thread, workers: list[_Worker], since: float) -> bool:
        """As FanOut's: stopped, nothing held by a worker, the input still open after 1 s."""
        return (
            self.stop.is_set()
            and reader.is_alive()
            and not any(worker.holding for worker in workers)
            and self._queue.empty()
            and time.monotonic() - since > 1.0
        )

    def _read(self) -> None:
        try:
            for line in self._lines:
                if self.stop.is_set():
                    self._results.put([_not_attempted(line)])
                elif not self._put(line):
                    self._results.put([_lost(line, NO_WORKER)])
        except (OSError, UnicodeDecodeError) as exc:
            failure = Outcome(
                "", None, "config-error", ExitCode.CONFIG, message=f"cannot read ids: {exc}"
            )
            self._results.put([failure])
        except ValueError:
            if not self.stop.is_set():
                raise
            # A second Ctrl-C: the run quit and closed the ids under this thread.
        finally:
            for _ in range(self._processes):
                self._put(None)
            self._results.put(None)

    def _put(self, line: str | None) -> bool:
        """Queue a line for the feeders; False once no worker is left to take it."""
        while not self._all_dead.is_set():
            try:
                self._queue.put(line, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _feed(self, worker: _Worker) -> None:
        """Send the worker batches of lines while it has room; then the end (None)."""
        ended = False
        while not ended:
            with worker.room:
                worker.room.wait_for(
                    lambda: (
                        worker.died is not None or worker.holding <= self._hold - self._concurrency
                    )
                )
                if worker.died is not None:
                    return  # the other workers take the lines on
                room = self._hold - worker.holding
            batch: list[str] = []
            line = self._queue.get()
            while line is not None:
                batch.append(line)
                if len(batch) >= room:
                    break
                try:
                    line = self._queue.get_nowait()
                except queue.Empty:
                    break
            ended = line is None
            if self.stop.is_set():  # stopped: nothing more goes to a worker
                if batch:
                    self._results.put([_not_attempted(line) for line in batch])
                continue
            if batch:
                if not worker.take(batch):  # it died while this batch was gathered
                    self._results.put([_lost(line, worker.died or "") for line in batch])
                    return
                if not _send(worker, batch):
                    return  # its collector reports what it held
        _send(worker, None)

    def _collect(self, worker: _Worker) -> None:
        """Take the worker's outcomes until it ends; if it dies, fail the lines it held."""
        try:
            while True:
                try:
                    batch: list[Outcome] | None = worker.pipe.recv()
                except (EOFError, OSError):
                    break
                if batch is None:
                    return
                worker.reported(outcome.line for outcome in batch)
                self._results.put(batch)
            worker.process.join(5)
            why = f"worker process {worker.process.name} exited ({worker.process.exitcode})"
            lost = worker.die(why)
            if lost:
                self._results.put([_lost(line, why) for line in lost])
            if all(other.died is not None for other in self._workers):
                self._no_worker_left()
        finally:
            self._results.put(None)

    def _no_worker_left(self) -> None:
        """Every worker died: the lines queued and still to be read fail (the reader reports
        those it reads from now on)."""
        self._all_dead.set()
        while self._reader.is_alive() or not self._queue.empty():
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is not None:
                self._results.put([_lost(line, NO_WORKER)])

    def _serve(self, pipe: Connection) -> None:
        """A worker process: a FanOut over the lines the parent sends, outcomes sent back."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # the parent decides; the StopFlag tells us

        def lines() -> Iterator[str]:
            while True:
                try:
                    batch: list[str] | None = pipe.recv()
                except (EOFError, OSError):  # the parent is gone: stop, as after Ctrl-C
                    self.stop.set()
                    return
                if batch is None:
                    return
                yield from batch

        clients = self._clients(self._pacer)
        run = FanOut(
            lines=lines(),
            concurrency=self._concurrency,
            pacer=self._pacer,
            client_for=clients,
            call=self._call,
        )
        try:
            for batch in run.batches(self._hold, linger=LINGER):
                pipe.send(batch)
            pipe.send(None)
        except OSError:
            pass  # the parent is gone
        finally:
            clients.close()
        if run.input_abandoned:
            os._exit(0)  # the reader thread still waits on the pipe: leave now


def _lost(line: str, why: str) -> Outcome:
    return Outcome(line, None, "failed", ExitCode.INTERNAL, message=f"internal error: {why}")


def _send(worker: _Worker, message: list[str] | None) -> bool:
    try:
        worker.pipe.send(message)
    except OSError:  # the worker is gone; its collector reports what it held
        return False
    return True


def _end(worker: _Worker) -> None:
    """Let a worker end (it has reported, or it stops: its pipe closes), else kill it."""
    worker.pipe.close()
    worker.process.join(5.0)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join()


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
    fanout: FanOut | ProcessFanOut,
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
