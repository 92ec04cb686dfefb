"""Python handlers in worker processes: warm pools per function, timeouts, isolation, reload.

Pool policy (as Lambda scales containers): each function keeps its warm workers; an invocation
takes an idle one (the most recently used), else starts a new one while the function has fewer than
MAX_WORKERS, else waits for one to come free. Workers live until the backends close, a timeout
(the worker is killed: a fresh one starts next time) or a code change: when a source file the
function imported from its code dir changes (checked by stat on each invocation, so the very next
event runs the new code), idle workers are stopped, busy ones finish their invocation first, and
new invocations start fresh workers. Nothing in flight is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wsconn.local.app import Function, PythonTarget

WORKER_SCRIPT = Path(__file__).with_name("_worker.py")
# The most workers (concurrent invocations) one function runs at once; more invocations wait.
MAX_WORKERS = 8
# Seconds a cold start (starting the interpreter, importing the handler) may take: Lambda's init limit.
INIT_TIMEOUT = 10.0
# Events and answers are one JSON line each (an answer may reach Lambda's 6 MB payload limit).
_LINE_LIMIT = 16 * 1024 * 1024

LogSink = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Outcome:
    """What one worker invocation produced (the caller adds timing and the request id)."""

    payload: object | None
    error: str | None
    timed_out: bool = False


class InitError(Exception):
    """The handler could not be loaded (import error, missing function, bad interpreter)."""


class _WorkerExited(Exception):
    pass


# How Lambda's runtime API (in Go) names the signals that end a runtime process.
_SIGNAL_WORDS: dict[int, str] = {
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating point exception",
    signal.SIGILL: "illegal instruction",
}


def _exit_error(returncode: int | None, oom_mb: int | None = None, memory_mb: int = 0) -> str:
    """Lambda's words for a runtime process that died mid-invocation."""
    if returncode is not None and returncode < 0:
        number = -returncode
        word = _SIGNAL_WORDS.get(number, f"signal {number}")
        how = f"signal: {word}"
    else:
        how = f"exit status {returncode}"
    if oom_mb is not None:
        return (
            f"Runtime.OutOfMemory: Runtime exited with error: {how} "
            f"(max memory used: {oom_mb} MB of {memory_mb} MB)"
        )
    return f"Runtime.ExitError: Runtime exited with error: {how}"


def describe_error(error: Mapping[str, Any]) -> str:
    """``errorType: errorMessage`` as one line."""
    kind = str(error.get("errorType") or "Error")
    message = str(error.get("errorMessage") or "")
    return f"{kind}: {message}" if message else kind


class _Worker:
    """One worker process: its pipes, the invocation in flight, its log label."""

    def __init__(
        self, proc: asyncio.subprocess.Process, on_log: LogSink, label: str, memory_mb: int
    ) -> None:
        self.proc = proc
        self.memory_mb = memory_mb
        self.oom_mb: int | None = None
        self.last_stderr = ""
        self.on_killed: Callable[[_Worker], None] = lambda worker: None
        self.label = label
        self.generation = 0
        self._on_log = on_log
        self._pending: asyncio.Future[dict[str, Any]] | None = None
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.ensure_future(self._read_protocol()),
            asyncio.ensure_future(self._read_stderr()),
        ]

    async def ready(self) -> dict[str, Any]:
        """The worker's first message: ``ready`` (with its files) or ``init_error``."""
        return await self._ready

    def call(self, request: bytes) -> asyncio.Future[dict[str, Any]]:
        """Send one request line; the future of its answer (failed if the worker exits first).

        Not awaited for the write: the pipe's transport buffers what the pipe cannot take yet.
        """
        assert self.proc.stdin is not None
        pending: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending = pending
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write(request)  # a broken pipe: the reader sees the exit
        return pending

    def _log(self, stream: str, line: str) -> None:
        # A failing sink must not stop this reader: the invocation's answer comes the same way.
        with contextlib.suppress(Exception):
            self._on_log(self.label, stream, line)

    async def _read_protocol(self) -> None:
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line over the limit (the worker caps its own): stop it
                self._stop_now()
                break
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):  # not ours (e.g. a sitecustomize that prints)
                self._log("stdout", line.decode("utf-8", "replace").rstrip("\r\n"))
                continue
            if "log" in message:
                self._log(message["log"], message["line"])
            elif "oom" in message:
                self.oom_mb = message["oom"]
            elif "id" in message:
                if self._pending is not None and not self._pending.done():
                    self._pending.set_result(message)
            elif not self._ready.done():
                self._ready.set_result(message)
        await self.proc.wait()
        error = _WorkerExited(self._exit_error())
        for future in (self._ready, self._pending):
            if future is not None and not future.done():
                future.set_exception(error)

    async def _read_stderr(self) -> None:
        # Raw fd-level output (C extensions, child processes, a crash's own message).
        assert self.proc.stderr is not None
        stderr = self.proc.stderr
        while True:
            try:
                raw = await stderr.readline()
            except ValueError:  # a line over the limit was dropped; keep reading
                continue
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.last_stderr = line or self.last_stderr
            self._log("stderr", line)

    def _exit_error(self) -> str:
        return _exit_error(self.proc.returncode, self.oom_mb, self.memory_mb)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def _stop_now(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if hasattr(os, "killpg"):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:  # pragma: no cover (Windows)
                    self.proc.kill()

    async def kill(self) -> None:
        """Kill the worker and anything it started (its own process group)."""
        self._stop_now()
        await self.proc.wait()
        self.on_killed(self)
        for task in self._tasks:
            # Let the readers drain what the worker wrote before dying, then stop them.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
            task.cancel()
        for future in (self._ready, self._pending):
            if future is not None and not future.done():
                future.set_exception(_WorkerExited(self._exit_error()))
            if future is not None and future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warning


class FunctionPool:
    """The warm workers of one Python function."""

    def __init__(
        self,
        function: Function,
        *,
        python: str,
        env: Mapping[str, str],
        code_dir: Path,
        arn: str,
        on_log: LogSink,
    ) -> None:
        assert isinstance(function.target, PythonTarget)
        self.function = function
        self._python = python
        self._env = dict(env)
        self._on_log = on_log
        self._config = json.dumps(
            {
                "code_dir": str(code_dir),
                "module": function.target.module,
                "function": function.target.function,
                "arn": arn,
                "memory_mb": function.memory_mb,
            }
        )
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._alive: set[_Worker] = set()  # every worker started and not yet killed
        self._starting = 0
        self._waiters: deque[asyncio.Future[_Worker]] = deque()
        self._generation = 0
        self._files: dict[str, tuple[int, int]] = {}
        self._closed = False
        self._warned = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self, label: str) -> _Worker:
        """A new worker with the handler imported; InitError if it cannot load."""
        now = datetime.now(timezone.utc)
        env = dict(self._env)
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = f"{now:%Y/%m/%d}/[$LATEST]{secrets.token_hex(16)}"
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                str(WORKER_SCRIPT),
                self._config,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                limit=_LINE_LIMIT,
                # Its own session: Ctrl-C at the terminal goes to wsconn, which decides when the
                # workers stop ($disconnect handlers still run during shutdown); killpg reaches all.
                start_new_session=True,
            )
        except OSError as exc:
            raise InitError(f"--python {self._python}: {exc.strerror or exc}") from None
        worker = _Worker(proc, self._on_log, label, self.function.memory_mb)
        self._alive.add(worker)
        worker.on_killed = self._alive.discard
        worker.generation = self._generation
        try:
            first = await worker.ready()
        except _WorkerExited:
            await worker.kill()
            code = worker.proc.returncode
            said = f": {worker.last_stderr}" if worker.last_stderr else ""
            raise InitError(
                f"--python {self._python} exited (status {code}) before loading the handler{said}"
            ) from None
        except BaseException:
            await worker.kill()
            raise
        if "init_error" in first:
            await worker.kill()
            raise InitError(describe_error(first["init_error"]))
        self._track(first.get("files", ()))
        runtime = self.function.runtime
        if runtime and first.get("runtime") != runtime and not self._warned:
            self._warned = True
            self._on_log(
                label,
                "stderr",
                f"wsconn: {self.function.name} is {runtime} on AWS, here it runs on "
                f"{first.get('runtime')} ({self._python})",
            )
        return worker

    def _track(self, files: Any) -> None:
        for path, mtime_ns, size in files:
            self._files[path] = (mtime_ns, size)

    def _changed(self) -> bool:
        for path, seen in self._files.items():
            try:
                stat = os.stat(path)
            except OSError:
                return True
            if (stat.st_mtime_ns, stat.st_size) != seen:
                return True
        return False

    def _reload_if_changed(self) -> None:
        if not self._files or not self._changed():
            return
        self._generation += 1
        self._files = {}
        idle, self._idle = self._idle, []
        for worker in idle:
            self._background(worker.kill())

    async def start(self, label: str) -> None:
        """Load the handler once in a worker (which stays warm); InitError if it cannot."""
        self._starting += 1
        try:
            worker = await asyncio.wait_for(self._spawn(label), INIT_TIMEOUT)
        except asyncio.TimeoutError:
            raise InitError(
                f"importing it took longer than {INIT_TIMEOUT:g} s (Lambda's limit for a cold start)"
            ) from None
        finally:
            self._starting -= 1
        self._release(worker)

    def _take_idle(self) -> _Worker | None:
        """The most recently used idle worker, now counted busy; None if none is idle."""
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                self._busy.add(worker)
                return worker
            self._background(worker.kill())  # died while idle (e.g. a thread of its own exited)
        return None

    async def _acquire(self, label: str) -> _Worker:
        """A worker, already counted busy (so concurrent callers see the pool's true size)."""
        worker = self._take_idle()
        if worker is not None:
            return worker
        if len(self._busy) + self._starting < MAX_WORKERS:
            self._starting += 1
            try:
                worker = await self._spawn(label)
            finally:
                self._starting -= 1
            self._busy.add(worker)
            return worker
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Timed out just as a worker was handed over: give it back rather than lose it.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._busy.discard(waiter.result())
                self._release(waiter.result())
            raise

    def _release(self, worker: _Worker) -> None:
        if self._closed or not worker.alive or worker.generation != self._generation:
            self._background(worker.kill())
            self._wake_one()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._busy.add(worker)
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _wake_one(self) -> None:
        # A slot came free (a worker died or retired): let a waiter start a fresh worker.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._background(self._hand_fresh(waiter))
                return

    async def _hand_fresh(self, waiter: asyncio.Future[_Worker]) -> None:
        self._starting += 1
        try:
            worker = await self._spawn(self.function.name)
        except BaseException as exc:
            if not waiter.done():
                waiter.set_exception(exc)
            else:
                self._wake_one()
            return
        finally:
            self._starting -= 1
        if waiter.done():
            self._release(worker)
        else:
            self._busy.add(worker)
            waiter.set_result(worker)

    async def invoke(self, event: dict[str, Any], *, label: str, request_id: str) -> Outcome:
        """Run the handler on ``event`` within the function's timeout."""
        timeout = self.function.timeout
        self._reload_if_changed()
        event_json = json.dumps(event)  # before taking a worker: an unserialisable event raises
        worker: _Worker | None = None
        try:
            worker = self._take_idle()
            if worker is None:
                # A cold start has Lambda's init limit, not the handler's timeout (as on Lambda);
                # waiting for a busy pool's free slot may take up to one timeout more.
                worker = await asyncio.wait_for(self._acquire(label), INIT_TIMEOUT + timeout)
            worker.label = label
            deadline_ms = int(time.time() * 1000 + timeout * 1000)
            request = (
                f'{{"id":{json.dumps(request_id)},"deadline":{deadline_ms},"event":{event_json}}}\n'
            ).encode()
            answer = await asyncio.wait_for(worker.call(request), timeout)
        except asyncio.CancelledError:
            # The caller gave up (e.g. the gateway is stopping): this worker's state is unknown.
            if worker is not None:
                self._busy.discard(worker)
                self._background(worker.kill())
                self._wake_one()
            raise
        except asyncio.TimeoutError:
            if worker is not None:
                self._busy.discard(worker)
                await worker.kill()
                self._wake_one()
            return Outcome(None, f"Task timed out after {timeout:.2f} seconds", timed_out=True)
        except InitError as exc:
            self._wake_one()  # the slot it would have taken is free again
            return Outcome(None, str(exc))
        except _WorkerExited as exc:
            assert worker is not None
            self._busy.discard(worker)
            await worker.kill()
            self._wake_one()
            return Outcome(None, str(exc))
        self._busy.discard(worker)
        self._track(answer.get("files", ()))
        self._release(worker)
        if "error" in answer:
            return Outcome(answer["error"], describe_error(answer["error"]))
        if "raw" in answer:
            raw: str = answer["raw"]
            try:
                return Outcome(json.loads(raw), None)
            except ValueError:
                return Outcome(raw, None)
        return Outcome(answer["ok"], None)

    async def close(self) -> None:
        """Kill every worker of this function."""
        self._closed = True
        workers = [*self._alive]
        self._idle = []
        self._busy = set()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        await asyncio.gather(*(worker.kill() for worker in workers), *self._tasks)


def new_request_id() -> str:
    """A Lambda-style request id (a UUID)."""
    return str(uuid.uuid4())
