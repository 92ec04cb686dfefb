"""One warm "container" of a Python Lambda function, for ``wsconn local``.

Run by file path under the app's interpreter (``python _worker.py CONFIG_JSON``): it imports only
the standard library, never wsconn or anything third-party, so any virtualenv can run it. Keep it
working on Python 3.8+ (the app's interpreter may be older than wsconn's).

The parent talks to it over the original stdin/stdout, one JSON object per line:
  in:  {"id": request id, "deadline": epoch ms, "event": {...}}
  out: {"ready": true, "files": [...]} | {"init_error": {...}}   once, after importing the handler
       {"log": "stdout"|"stderr", "line": "..."}                  whenever the handler prints
       {"id": ..., "ok": <result>, "files": [...]} | {"id": ..., "error": {...}, "files": [...]}
"files" lists [path, mtime_ns, size] of the code-dir sources imported since the last report
(stat before reading), so the parent can tell when an edit needs a fresh worker.
The handler's own stdin is /dev/null, its fd 1 is fd 2 (raw writes land on the stderr pipe), and
sys.stdout / sys.stderr are line streams that go over the protocol, in order with the results.
"""

from __future__ import annotations

import decimal
import faulthandler
import importlib
import importlib.machinery
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO, Any

_send_lock = threading.Lock()
_out: IO[bytes]
_code_dir = ""
_loaded: list[list[object]] = []  # [path, mtime_ns, size] not yet reported
_request_id = ""
# Lambda's limits: a synchronous response's size, and a log line (longer ones are cut).
MAX_RESPONSE = 6291556
MAX_LOG_LINE = 256 * 1024


def _send(message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    with _send_lock:
        _out.write(data)
        _out.flush()


def _send_raw(data: bytes) -> None:
    with _send_lock:
        _out.write(data)
        _out.flush()


class _LineStream:
    """sys.stdout / sys.stderr: each complete line becomes one ``log`` message."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self._fd = fd
        self._partial = ""
        self._lock = threading.Lock()
        self.buffer = _BinaryView(self)

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            _send({"log": self.name, "line": line[:MAX_LOG_LINE]})
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def end_of_invocation(self) -> None:
        with self._lock:
            partial, self._partial = self._partial, ""
        if partial:
            _send({"log": self.name, "line": partial[:MAX_LOG_LINE]})

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


class _BinaryView:
    """``sys.stdout.buffer`` for handlers that write bytes."""

    def __init__(self, stream: _LineStream) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        self._stream.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        pass


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles code-dir modules from their source every time, never from a cached .pyc.

    A .pyc is trusted when the source's mtime (in whole seconds) and size match: an edit within
    the same second that keeps the size would otherwise run the old code after a reload.
    """

    def get_code(self, fullname: str) -> Any:
        stat = os.stat(self.path)
        _loaded.append([self.path, stat.st_mtime_ns, stat.st_size])
        return self.source_to_code(self.get_data(self.path), self.path)


def _is_code_dir(path: str) -> bool:
    """Whether ``path`` is the code dir or below it, and not below a sys.path entry inside it
    (a virtualenv's site-packages in the project folder is not the function's code)."""
    path = os.path.abspath(path or ".")
    if path != _code_dir and not path.startswith(_code_dir + os.sep):
        return False
    for entry in sys.path:
        entry = os.path.abspath(entry or ".")
        if len(entry) > len(_code_dir) and (path == entry or path.startswith(entry + os.sep)):
            return False
    return True


def _code_dir_finder(path: str) -> Any:
    if not _is_code_dir(path):
        raise ImportError("not the code dir")
    return importlib.machinery.FileFinder(
        path,
        (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
    )


class _CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self) -> None:
        self.cognito_identity_id = None
        self.cognito_identity_pool_id = None


class LambdaContext:
    """The ``context`` argument, with the attributes Lambda's Python runtime gives it."""

    def __init__(self, request_id: str, deadline_ms: int, arn: str) -> None:
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        # A string, as on Lambda (the runtime reads it from the environment).
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = arn
        self.tenant_id = None
        self.client_context = None
        self.identity = _CognitoIdentity()
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        remaining = self._deadline_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, message: str) -> None:
        sys.stdout.write(str(message))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"function_name={self.function_name},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _request_id
        return True


class _LambdaLogHandler(logging.Handler):
    """Each record is its own entry (as in CloudWatch), never glued to a partial print line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        for line in text.split("\n"):
            _send({"log": "stdout", "line": line[:MAX_LOG_LINE]})


def _lambda_logging() -> None:
    """The root logger as Lambda's runtime sets it up: one handler, Lambda's line format."""
    handler = _LambdaLogHandler()
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


def _json_default(value: object) -> object:
    # Lambda's encoder writes a Decimal (DynamoDB's numbers) as a JSON number.
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return float("nan")
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _user_location(error: BaseException) -> str:
    """``(file.py, line N)`` of the deepest frame in the code dir, for import errors."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if _is_code_dir(os.path.dirname(frame.filename)):
            return f" ({os.path.relpath(frame.filename, _code_dir)}, line {frame.lineno})"
    return ""


def _import_handler(module_name: str, function_name: str) -> Callable[..., Any] | dict[str, str]:
    """The handler, or the init error Lambda's runtime would report."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        message = f"Unable to import module '{module_name}': {exc}"
        if exc.name != module_name.split(".")[0] and exc.name != module_name:
            message += _user_location(exc)
        return {"errorType": "Runtime.ImportModuleError", "errorMessage": message}
    except ImportError as exc:
        message = f"Unable to import module '{module_name}': {exc}{_user_location(exc)}"
        return {"errorType": "Runtime.ImportModuleError", "errorMessage": message}
    except SyntaxError as exc:
        return {
            "errorType": "Runtime.UserCodeSyntaxError",
            "errorMessage": f"Syntax error in module '{module_name}': {exc}",
        }
    except BaseException as exc:  # anything the module raises (even SystemExit) fails the init
        return {"errorType": type(exc).__name__, "errorMessage": f"{exc}{_user_location(exc)}"}
    handler = getattr(module, function_name, None)
    if handler is None:
        return {
            "errorType": "Runtime.HandlerNotFound",
            "errorMessage": f"Handler '{function_name}' missing on module '{module_name}'",
        }
    if not callable(handler):
        return {
            "errorType": "Runtime.HandlerNotFound",
            "errorMessage": f"Handler '{function_name}' on module '{module_name}' is not callable",
        }
    return handler  # type: ignore[no-any-return]


def _open_status() -> int | None:
    try:
        return os.open("/proc/self/status", os.O_RDONLY)
    except OSError:
        return None


# VmHWM is this process's peak RSS since exec. (ru_maxrss would not do: Linux carries the peak of
# the process that spawned us, wsconn's, across exec.) Without /proc the memory size is not enforced.
_status_fd = _open_status()


def _peak_rss_mb() -> float:
    if _status_fd is None:
        return 0.0
    data = os.pread(_status_fd, 8192, 0)
    start = data.find(b"VmHWM:")
    if start < 0:
        return 0.0
    return int(data[start + 6 : data.index(b"kB", start)]) / 1024


def _watchdog(parent: int, memory_mb: int) -> None:
    """Exit when wsconn is gone (even killed, while a handler loops), and enforce the memory size
    as Lambda does: past it the process is killed (the parent reports Runtime.OutOfMemory)."""
    while True:
        time.sleep(0.1)
        if os.getppid() != parent:
            os._exit(1)
        _enforce_memory(memory_mb)


def _enforce_memory(memory_mb: int) -> None:
    peak = _peak_rss_mb()
    if memory_mb and peak > memory_mb:
        _send({"oom": round(peak)})
        os.kill(os.getpid(), 9)


def _taken_files() -> list[list[object]]:
    files = list(_loaded)
    del _loaded[: len(files)]
    return files


def main() -> None:
    global _out, _code_dir, _request_id
    config = json.loads(sys.argv[1])
    del sys.argv[1:]  # the handler sees a plain argv, as under Lambda's bootstrap
    _code_dir = os.path.abspath(config["code_dir"])
    # This script's own folder (wsconn's package) must not shadow anything: the code dir replaces it.
    sys.path[0] = _code_dir
    os.chdir(_code_dir)
    sys.dont_write_bytecode = True  # like Lambda's read-only task root: no __pycache__ litter
    sys.path_hooks.insert(0, _code_dir_finder)
    sys.path_importer_cache.clear()

    # The protocol keeps the original pipes; the handler gets /dev/null and the line streams.
    sys.stdout.flush()  # what ran before us (a sitecustomize) printed: it goes first, as is
    sys.stderr.flush()
    inp = os.fdopen(os.dup(0), "rb")
    _out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)  # noqa: SIM115 (the handler's stdin, for the process's life)
    stdout, stderr = _LineStream("stdout", 1), _LineStream("stderr", 2)
    sys.stdout = sys.__stdout__ = stdout  # type: ignore[misc,assignment]
    sys.stderr = sys.__stderr__ = stderr  # type: ignore[misc,assignment]
    os.environ.setdefault(
        "AWS_EXECUTION_ENV", f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    watchdog = threading.Thread(target=_watchdog, args=(os.getppid(), config["memory_mb"]))
    watchdog.daemon = True
    watchdog.start()
    _lambda_logging()
    faulthandler.enable(file=2)  # a crash says where: the Python stack on the stderr pipe

    handler = _import_handler(config["module"], config["function"])
    if isinstance(handler, dict):
        stdout.end_of_invocation()
        stderr.end_of_invocation()
        _send({"init_error": handler})
        return
    stdout.end_of_invocation()
    stderr.end_of_invocation()
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    _send({"ready": True, "files": _taken_files(), "runtime": version})
    arn = config["arn"]
    memory_mb = config["memory_mb"]

    while True:
        line = inp.readline()
        if not line:
            return
        request = json.loads(line)
        _request_id = request["id"]
        context = LambdaContext(_request_id, request["deadline"], arn)
        try:
            result = handler(request["event"], context)
        except Exception as exc:
            error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:]),
            }
            # Lambda's runtime logs an unhandled error, with its traceback, before answering.
            stderr.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n")
            trace = (
                exc.__traceback__.tb_next if exc.__traceback__ else None
            )  # not this loop's frame
            stderr.write("".join(traceback.format_exception(type(exc), exc, trace)))
            stdout.end_of_invocation()
            stderr.end_of_invocation()
            _send({"id": _request_id, "error": error, "files": _taken_files()})
            continue
        stdout.end_of_invocation()
        stderr.end_of_invocation()
        _enforce_memory(memory_mb)  # the watchdog may not have looked since the last allocation
        try:
            if isinstance(result, (bytes, bytearray)):
                payload = json.dumps(bytes(result).decode("utf-8", "replace"))
                kind = "raw"
            else:
                payload = json.dumps(result, default=_json_default)
                kind = "ok"
        except (TypeError, ValueError, OverflowError) as exc:
            error = {
                "errorMessage": f"Unable to marshal response: {exc}",
                "errorType": "Runtime.MarshalError",
                "stackTrace": [],
            }
            _send({"id": _request_id, "error": error, "files": _taken_files()})
            continue
        if len(payload) > MAX_RESPONSE:
            error = {
                "errorMessage": f"Response payload size ({len(payload)} bytes) exceeded maximum "
                f"allowed payload size ({MAX_RESPONSE} bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
                "stackTrace": [],
            }
            _send({"id": _request_id, "error": error, "files": _taken_files()})
            continue
        files = json.dumps(_taken_files())
        head = json.dumps(_request_id)
        _send_raw(f'{{"id":{head},"{kind}":{payload},"files":{files}}}\n'.encode())


if __name__ == "__main__":
    main()
