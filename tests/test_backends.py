"""wsconn.local.backends: real worker processes running handler files written by each test, and a
real Invoke API server on loopback (tests/lambda_server.py), checked against botocore's client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest

from tests.lambda_server import lambda_server
from wsconn.errors import ConfigError, ExitCode
from wsconn.local.app import Function, LambdaTarget, PythonTarget
from wsconn.local.backends import (
    MAX_WORKERS,
    Backends,
    Invocation,
    default_python,
    parse_env_file,
    parse_target,
)

T = TypeVar("T")
LogLine = tuple[str, str, str]


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def code(tmp_path: Path, source: str, module: str = "app") -> Path:
    """Write ``module``.py into tmp_path/code; the code dir."""
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / f"{module}.py").write_text(textwrap.dedent(source))
    return code_dir


def python_fn(
    code_dir: Path, function: str = "handler", module: str = "app", **kw: Any
) -> Function:
    kw.setdefault("name", function)
    return Function(PythonTarget(module, function), code_dir=code_dir, **kw)


@asynccontextmanager
async def backends(
    python: str | None = None, **kw: Any
) -> AsyncIterator[tuple[Backends, list[LogLine]]]:
    logs: list[LogLine] = []
    live = Backends(python, lambda label, stream, line: logs.append((label, stream, line)), **kw)
    try:
        yield live, logs
    finally:
        await live.aclose()


def ok(invocation: Invocation) -> Any:
    assert invocation.error is None, invocation.error
    assert not invocation.timed_out
    return invocation.payload


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("app:handler", PythonTarget("app", "handler")),
        ("pkg.sub.app:on_connect", PythonTarget("pkg.sub.app", "on_connect")),
        ("lambda:SendFn@http://127.0.0.1:3001", LambdaTarget("SendFn", "http://127.0.0.1:3001")),
        (
            "lambda:function@http://localhost:8080/",
            LambdaTarget("function", "http://localhost:8080"),
        ),
    ],
)
def test_parse_target(text: str, target: object) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("app.handler", "did you mean app:handler?"),
        ("app", "expected MODULE:FUNCTION"),
        ("app:", "expected MODULE:FUNCTION"),
        ("src/app:handler", "expected MODULE:FUNCTION"),
        ("app:handler:x", "expected MODULE:FUNCTION"),
        ("lambda:SendFn", "lambda:NAME@URL"),
        ("lambda:@http://127.0.0.1:3001", "lambda:NAME@URL"),
        ("lambda:SendFn@127.0.0.1:3001", "is not an http:// or https:// URL"),
    ],
)
def test_parse_target_refuses_malformed_text_in_one_line(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_target(text)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert says in caught.value.format_message()
    assert "\n" not in caught.value.format_message()


def test_parse_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_SHELL", "shell-value")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = tmp_path / ".env"
    path.write_text(
        textwrap.dedent(
            """\
            # a comment
            TABLE=chat
            export REGION_NAME=eu-west-1
            QUOTED="two words"  # trailing comment
            SINGLE='a # not a comment'
            EMPTY=
            URL=https://x.example/${TABLE}
            FROM_SHELL
            NOT_SET_ANYWHERE
            """
        )
    )
    assert parse_env_file(path) == {
        "TABLE": "chat",
        "REGION_NAME": "eu-west-1",
        "QUOTED": "two words",
        "SINGLE": "a # not a comment",
        "EMPTY": "",
        "URL": "https://x.example/chat",
        "FROM_SHELL": "shell-value",
    }


def test_parse_env_file_errors_are_one_line_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--env-file .*missing\.env: No such file"):
        parse_env_file(tmp_path / "missing.env")
    bad = tmp_path / "bad.env"
    bad.write_text("GOOD=1\nthis is not a variable\n")
    with pytest.raises(ConfigError, match=r"bad\.env, line 2: not KEY=VALUE"):
        parse_env_file(bad)


def test_default_python_is_the_active_virtualenvs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    assert default_python() == sys.executable
    venv, conda = tmp_path / "venv", tmp_path / "conda"
    for prefix in (venv, conda):
        (prefix / "bin").mkdir(parents=True)
        (prefix / "bin" / "python").write_text("")
    monkeypatch.setenv("CONDA_PREFIX", str(conda))
    assert default_python() == str(conda / "bin" / "python")
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    assert default_python() == str(venv / "bin" / "python")


# --- Python handlers: warm workers, context, outcomes ------------------------------------------

COUNTER = """
    import os
    print("loading", flush=True)
    count = 0

    def handler(event, context):
        global count
        count += 1
        return {"count": count, "pid": os.getpid(), "echo": event.get("body")}
"""


def test_module_state_survives_between_invocations(tmp_path: Path) -> None:
    function = python_fn(code(tmp_path, COUNTER))

    async def scenario() -> None:
        async with backends() as (live, logs):
            await live.check([function])
            first = ok(await live.invoke(function, {"body": "a"}, label="r"))
            second = ok(await live.invoke(function, {"body": "b"}, label="r"))
            assert (first["count"], second["count"]) == (1, 2)
            assert first["pid"] == second["pid"]
            assert second["echo"] == "b"
            # Imported once, at check(), labelled with the function's name.
            assert logs.count(("handler", "stdout", "loading")) == 1

    run(scenario())


def test_context_is_lambda_shaped_and_counts_down(tmp_path: Path) -> None:
    code_dir = code(
        tmp_path,
        """
        import time

        def handler(event, context):
            first = context.get_remaining_time_in_millis()
            time.sleep(0.2)
            return {
                "remaining": [first, context.get_remaining_time_in_millis()],
                "aws_request_id": context.aws_request_id,
                "function_name": context.function_name,
                "function_version": context.function_version,
                "invoked_function_arn": context.invoked_function_arn,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "identity": [context.identity.cognito_identity_id,
                             context.identity.cognito_identity_pool_id],
                "client_context": context.client_context,
            }
        """,
    )
    function = python_fn(code_dir, name="ChatFunction", memory_mb=256, timeout=5)

    async def scenario() -> None:
        async with backends(region="eu-west-1", account_id="111122223333") as (live, _):
            invocation = await live.invoke(function, {}, label="r")
        context = ok(invocation)
        assert context["aws_request_id"] == invocation.request_id
        assert context["function_name"] == "ChatFunction"
        assert context["function_version"] == "$LATEST"
        assert context["invoked_function_arn"] == (
            "arn:aws:lambda:eu-west-1:111122223333:function:ChatFunction"
        )
        assert context["memory_limit_in_mb"] == "256"  # a string, as Lambda's runtime gives it
        assert context["log_group_name"] == "/aws/lambda/ChatFunction"
        assert "/[$LATEST]" in context["log_stream_name"]
        assert context["identity"] == [None, None]
        assert context["client_context"] is None
        first, later = context["remaining"]
        assert 0 < later < first <= 5000
        assert first - later >= 200

    run(scenario())


def test_handler_errors_and_logs(tmp_path: Path) -> None:
    code_dir = code(
        tmp_path,
        """
        import decimal, logging, sys
        logger = logging.getLogger()
        logger.setLevel(logging.INFO)

        def fails(event, context):
            print("about to fail")
            return 1 / 0

        def unserialisable(event, context):
            return {"ids": {1, 2}}

        def decimals(event, context):
            return {"n": decimal.Decimal("42"), "x": decimal.Decimal("1.5")}

        def chatty(event, context):
            print("line one\\nline two")
            sys.stderr.write("to stderr\\n")
            sys.stdout.write("no newline at the end")
            logger.info("through logging")
            return None
        """,
    )

    async def scenario() -> None:
        async with backends() as (live, logs):
            failed = await live.invoke(python_fn(code_dir, "fails"), {}, label="boom")
            assert failed.error == "ZeroDivisionError: division by zero"
            assert not failed.timed_out
            assert isinstance(failed.payload, dict)
            assert failed.payload["errorType"] == "ZeroDivisionError"
            assert ("boom", "stdout", "about to fail") in logs
            assert ("boom", "stderr", "[ERROR] ZeroDivisionError: division by zero") in logs
            assert any("return 1 / 0" in line for _, _, line in logs)

            marshal = await live.invoke(python_fn(code_dir, "unserialisable"), {}, label="m")
            assert marshal.error == (
                "Runtime.MarshalError: Unable to marshal response: "
                "Object of type set is not JSON serializable"
            )

            assert ok(await live.invoke(python_fn(code_dir, "decimals"), {}, label="d")) == {
                "n": 42,
                "x": 1.5,
            }

            logs.clear()
            chatty = await live.invoke(python_fn(code_dir, "chatty"), {}, label="talk")
            assert ok(chatty) is None
            assert logs[:3] == [
                ("talk", "stdout", "line one"),
                ("talk", "stdout", "line two"),
                ("talk", "stderr", "to stderr"),
            ]
            # A print without a newline ends at the end of the invocation.
            assert logs[4] == ("talk", "stdout", "no newline at the end")
            label, stream, line = logs[3]
            assert (label, stream) == ("talk", "stdout")
            assert line.startswith("[INFO]\t") and line.endswith(
                f"\t{chatty.request_id}\tthrough logging"
            )

    run(scenario())


CRASHES = """
    import ctypes, os, time
    calls = 0
    hoard = []

    def count():
        global calls
        calls += 1
        return calls

    def sleeps():
        time.sleep(60)

    def spins():
        while True:
            pass

    def exits():
        os._exit(3)

    def segfaults():
        ctypes.string_at(0)

    def leaks():
        hoard.append(bytearray(40 * 1024 * 1024))
        hoard[-1][::4096] = b"x" * len(hoard[-1][::4096])  # touch every page
        return len(hoard)

    def handler(event, context):
        return globals()[event["do"]]()

    def other(event, context):
        return count()
"""


@pytest.mark.parametrize(
    ("action", "timeout", "error"),
    [
        ("sleeps", 0.5, "Task timed out after 0.50 seconds"),
        ("spins", 0.5, "Task timed out after 0.50 seconds"),
        ("exits", 10, "Runtime.ExitError: Runtime exited with error: exit status 3"),
        (
            "segfaults",
            10,
            "Runtime.ExitError: Runtime exited with error: signal: segmentation fault",
        ),
    ],
)
def test_a_crashing_or_hanging_handler_costs_that_invocation_only(
    tmp_path: Path, action: str, timeout: float, error: str
) -> None:
    code_dir = code(tmp_path, CRASHES)
    function = python_fn(code_dir, timeout=timeout)
    other = python_fn(code_dir, "other", timeout=timeout)

    async def scenario() -> None:
        async with backends() as (live, logs):
            await live.check([function, other])
            assert ok(await live.invoke(function, {"do": "count"}, label="r")) == 1
            assert ok(await live.invoke(other, {}, label="o")) == 1
            failed = await live.invoke(function, {"do": action}, label="r")
            assert failed.error == error
            assert failed.timed_out == ("timed out" in error)
            # The next invocation gets a fresh worker (a cold start: module state is new) ...
            assert ok(await live.invoke(function, {"do": "count"}, label="r")) == 1
            # ... and another function's warm worker never noticed.
            assert ok(await live.invoke(other, {}, label="o")) == 2
        if action == "segfaults":  # the crash says where it happened
            assert ("r", "stderr", "Fatal Python error: Segmentation fault") in logs
            assert any(line.endswith(" in segfaults") and "app.py" in line for _, _, line in logs)

    run(scenario())


def test_a_leaking_handler_is_stopped_at_its_memory_size(tmp_path: Path) -> None:
    function = python_fn(code(tmp_path, CRASHES), memory_mb=128)

    async def scenario() -> None:
        async with backends() as (live, _):
            results = [await live.invoke(function, {"do": "leaks"}, label="r") for _ in range(6)]
        errors = [r.error for r in results if r.error]
        assert errors, "the hoard never reached 128 MB"
        assert errors[0].startswith(
            "Runtime.OutOfMemory: Runtime exited with error: signal: killed"
        )
        assert "of 128 MB" in errors[0]
        # The invocation after the one that was killed starts again from a fresh worker.
        failed_at = next(i for i, r in enumerate(results) if r.error)
        assert ok(results[failed_at + 1]) == 1

    run(scenario())


def test_memory_size_flag_gives_flag_functions_room_lambda_would(tmp_path: Path) -> None:
    from wsconn.local.flags import app_from_flags

    code_dir = code(
        tmp_path,
        """
        def handler(event, context):
            hoard = b"x" * (200 * 1024 * 1024)  # written, so every page is resident
            return len(hoard) // (1024 * 1024)
        """,
    )

    def function(**flags: Any) -> Function:
        found = (
            app_from_flags(handler="app:handler", code_dir=str(code_dir), **flags)
            .routes["$default"]
            .function
        )
        assert found is not None
        return found

    small, roomy = function(), function(memory_size=512)
    assert (small.memory_mb, roomy.memory_mb) == (128, 512)

    async def scenario() -> None:
        async with backends() as (live, _):
            refused = await live.invoke(small, {}, label="r")
            assert refused.error and refused.error.startswith("Runtime.OutOfMemory")
            assert ok(await live.invoke(roomy, {}, label="r")) == 200

    run(scenario())
    with pytest.raises(ConfigError, match="128 to 10240 MB"):
        function(memory_size=64)


def test_concurrent_invocations_run_in_parallel_workers(tmp_path: Path) -> None:
    # The first invocation waits for a file that only the second one creates: run one at a time,
    # they would deadlock until the timeout.
    code_dir = code(
        tmp_path,
        """
        import os, time

        def handler(event, context):
            if "touch" in event:
                open(event["touch"], "w").close()
            while "wait_for" in event and not os.path.exists(event["wait_for"]):
                time.sleep(0.01)
            return os.getpid()
        """,
    )
    function = python_fn(code_dir, timeout=20)
    flag = str(tmp_path / "flag")

    async def scenario() -> None:
        async with backends() as (live, _):
            await live.check([function])
            waiting = asyncio.ensure_future(live.invoke(function, {"wait_for": flag}, label="a"))
            await asyncio.sleep(0.1)
            touching = await live.invoke(function, {"touch": flag}, label="b")
            waited = await waiting
            assert ok(waited) != ok(touching)

    run(scenario())


def test_invocations_beyond_the_pool_wait_for_a_free_worker(tmp_path: Path) -> None:
    code_dir = code(
        tmp_path,
        """
        import os, time

        def handler(event, context):
            time.sleep(0.2)
            return os.getpid()
        """,
    )
    function = python_fn(code_dir, timeout=30)

    async def scenario() -> None:
        async with backends() as (live, _):
            pids = set()
            for _round in range(3):  # the first starts the workers, the next ones reuse them
                results = await asyncio.gather(
                    *(live.invoke(function, {}, label="r") for _ in range(MAX_WORKERS * 2))
                )
                pids |= {ok(result) for result in results}
        assert len(pids) == MAX_WORKERS

    run(scenario())


def test_a_cancelled_invocation_frees_its_worker(tmp_path: Path) -> None:
    code_dir = code(tmp_path, CRASHES)
    function = python_fn(code_dir, timeout=30)

    async def scenario() -> None:
        async with backends() as (live, _):
            stuck = [
                asyncio.ensure_future(live.invoke(function, {"do": "sleeps"}, label="r"))
                for _ in range(MAX_WORKERS)
            ]
            await asyncio.sleep(0.5)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
            # Every slot of the pool is free again: this does not wait 60 s for a sleeper.
            assert ok(await live.invoke(function, {"do": "count"}, label="r")) == 1

    run(scenario())


def test_check_refuses_what_cannot_load_in_one_line(tmp_path: Path) -> None:
    code_dir = code(tmp_path, "import json\nvalue = 1 / 0\n", module="broken")
    code(tmp_path, "import not_installed_anywhere\n", module="needs")
    code(tmp_path, "def handler(event, context)\n    return 1\n", module="typo")
    code(tmp_path, "handler = 42\n", module="notcallable")
    cases: list[tuple[Function, str]] = [
        (
            python_fn(code_dir, module="broken"),
            f"broken:handler (in {code_dir}): ZeroDivisionError: division by zero "
            "(broken.py, line 2)",
        ),
        (
            python_fn(code_dir, module="needs"),
            "Runtime.ImportModuleError: Unable to import module 'needs': "
            "No module named 'not_installed_anywhere' (needs.py, line 1)",
        ),
        (
            python_fn(code_dir, module="typo"),
            "Runtime.UserCodeSyntaxError: Syntax error in module 'typo'",
        ),
        (
            python_fn(code_dir, module="missing"),
            "Unable to import module 'missing': No module named 'missing'",
        ),
        (
            python_fn(code_dir, module="notcallable"),
            "Handler 'handler' on module 'notcallable' is not callable",
        ),
        (python_fn(code_dir, module="fine"), "Handler 'handler' missing on module 'fine'"),
        (python_fn(tmp_path / "nowhere"), f"code directory {tmp_path / 'nowhere'} does not exist"),
        (
            python_fn(code_dir, runtime="nodejs20.x"),
            "runtime nodejs20.x cannot run as a Python handler",
        ),
    ]
    code(tmp_path, "def other(event, context):\n    return 1\n", module="fine")

    async def scenario() -> None:
        for function, says in cases:
            async with backends() as (live, _):
                with pytest.raises(ConfigError) as caught:
                    await live.check([function])
            message = caught.value.format_message()
            assert says in message
            assert "\n" not in message and "Traceback" not in message
            assert caught.value.exit_code == ExitCode.CONFIG

    run(scenario())


def test_a_cold_start_has_lambdas_init_limit_not_the_handlers_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsconn.local.backends import workers

    code_dir = code(
        tmp_path,
        """
        import os, time
        time.sleep(float(os.environ["IMPORT_SECONDS"]))

        def handler(event, context):
            return context.get_remaining_time_in_millis()
        """,
    )
    monkeypatch.setattr(workers, "INIT_TIMEOUT", 1.0)
    slow_import = python_fn(code_dir, timeout=0.3, env={"IMPORT_SECONDS": "0.6"})
    hanging_import = python_fn(code_dir, timeout=0.3, env={"IMPORT_SECONDS": "60"})

    async def scenario() -> None:
        async with backends() as (live, _):
            # An import slower than the handler's timeout: the first event still gets it all.
            remaining = ok(await live.invoke(slow_import, {}, label="r"))
            assert 0 < remaining <= 300
            with pytest.raises(ConfigError, match=r"importing it took longer than 1 s"):
                await live.check([hanging_import])

    run(scenario())


def test_check_refuses_an_interpreter_that_does_not_exist(tmp_path: Path) -> None:
    function = python_fn(code(tmp_path, COUNTER))

    async def scenario() -> None:
        async with backends(python=str(tmp_path / "no-python")) as (live, _):
            with pytest.raises(ConfigError, match=r"--python .*no-python: No such file"):
                await live.check([function])

    run(scenario())


def test_check_shows_why_an_interpreter_could_not_start(tmp_path: Path) -> None:
    fake = tmp_path / "python2"
    fake.write_text("#!/bin/sh\necho 'SyntaxError: invalid syntax' >&2\nexit 1\n")
    fake.chmod(0o755)
    function = python_fn(code(tmp_path, COUNTER))

    async def scenario() -> None:
        async with backends(python=str(fake)) as (live, _):
            with pytest.raises(ConfigError) as caught:
                await live.check([function])
        assert caught.value.format_message() == (
            f"configuration: app:handler (in {function.code_dir}): --python {fake} exited "
            "(status 1) before loading the handler: SyntaxError: invalid syntax"
        )

    run(scenario())


def test_a_response_over_lambdas_6_mb_is_an_error(tmp_path: Path) -> None:
    code_dir = code(
        tmp_path,
        """
        def handler(event, context):
            return "x" * event["size"]
        """,
    )
    function = python_fn(code_dir)

    async def scenario() -> None:
        async with backends() as (live, _):
            big = await live.invoke(function, {"size": 6_300_000}, label="r")
            assert big.error is not None
            assert big.error.startswith("Function.ResponseSizeTooLarge: Response payload size")
            assert (
                ok(await live.invoke(function, {"size": 6_000_000}, label="r")) == "x" * 6_000_000
            )

    run(scenario())


def test_an_edit_takes_effect_on_the_next_event_without_dropping_one(tmp_path: Path) -> None:
    source = """
        import time
        def handler(event, context):
            time.sleep(event.get("sleep", 0))
            return "{version}"
    """
    code_dir = code(tmp_path, source.format(version="v1"))
    code(tmp_path, "WORD = 'one'\n", module="helper")
    (code_dir / "app.py").write_text(
        textwrap.dedent(source.format(version="v1")) + "from helper import WORD\n"
        "def word(event, context):\n    return WORD\n"
    )
    function = python_fn(code_dir, timeout=10)
    word = python_fn(code_dir, "word", name="handler", timeout=10)

    async def scenario() -> None:
        async with backends() as (live, _):
            await live.check([function])
            assert ok(await live.invoke(function, {}, label="r")) == "v1"
            slow = asyncio.ensure_future(live.invoke(function, {"sleep": 0.5}, label="r"))
            await asyncio.sleep(0.1)
            # Same size, same second: only the content differs (a .pyc would not notice).
            app = code_dir / "app.py"
            app.write_text(app.read_text().replace("v1", "v2"))
            assert ok(await live.invoke(function, {}, label="r")) == "v2"
            assert ok(await slow) == "v1"  # the invocation in flight finished on the old code
            assert ok(await live.invoke(word, {}, label="r")) == "one"
            # A module the handler imports counts too.
            (code_dir / "helper.py").write_text("WORD = 'two'\n")
            assert ok(await live.invoke(word, {}, label="r")) == "two"
        assert not list(code_dir.glob("__pycache__")), "workers wrote bytecode into the code dir"

    run(scenario())


def test_aclose_leaves_nothing_running(tmp_path: Path) -> None:
    code_dir = code(
        tmp_path,
        """
        import os, subprocess, sys

        def handler(event, context):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            return [os.getpid(), child.pid]
        """,
    )
    function = python_fn(code_dir)

    async def scenario() -> list[int]:
        async with backends() as (live, _):
            pids: list[int] = ok(await live.invoke(function, {}, label="r"))
        return pids

    worker, child = run(scenario())
    for pid in (worker, child):
        deadline = time.monotonic() + 5
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent, e.g. init) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return True


def test_nothing_starts_after_aclose_and_a_failing_log_sink_stalls_nothing(tmp_path: Path) -> None:
    code_dir = code(tmp_path, "def handler(event, context):\n    print('hi')\n    return 1\n")
    function = python_fn(code_dir)

    def broken_sink(label: str, stream: str, line: str) -> None:
        raise BrokenPipeError("the console went away")

    async def scenario() -> None:
        live = Backends(None, broken_sink)
        try:
            assert ok(await live.invoke(function, {}, label="r")) == 1
        finally:
            await live.aclose()
        late = await live.invoke(function, {}, label="r")
        assert late.error == "the gateway is stopping"
        assert live._pools == {}  # no pool (and so no worker) was made for it

    run(scenario())


def test_environment_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCONN_SHELL_CLUTTER", "should not reach handlers")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    code_dir = code(
        tmp_path,
        """
        import os

        def handler(event, context):
            return {"env": dict(os.environ), "cwd": os.getcwd()}
        """,
    )
    env_file = tmp_path / ".env"
    env_file.write_text("TABLE_NAME=chat\nexport SHARED=from-file\n")
    function = python_fn(
        code_dir,
        name="ChatFunction",
        memory_mb=512,
        runtime="python3.12",
        env={**parse_env_file(env_file), "AWS_REGION": "ap-south-1"},
    )

    async def scenario() -> dict[str, Any]:
        async with backends(
            region="eu-west-1", env={"AWS_ACCESS_KEY_ID": "AKIDRUN", "SHARED": "from-run"}
        ) as (live, _):
            answer: dict[str, Any] = ok(await live.invoke(function, {}, label="r"))
        return answer

    answer = run(scenario())
    env = answer["env"]
    assert answer["cwd"] == str(code_dir)
    assert env["TABLE_NAME"] == "chat"
    assert env["SHARED"] == "from-file"  # the function's env wins over the run's
    assert env["AWS_ACCESS_KEY_ID"] == "AKIDRUN"
    assert env["AWS_REGION"] == "ap-south-1"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "ChatFunction"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
    assert env["_HANDLER"] == "app.handler"
    assert env["LAMBDA_TASK_ROOT"] == str(code_dir)
    assert env["TZ"] == ":UTC"
    assert env["PATH"] == os.environ["PATH"]
    assert "WSCONN_SHELL_CLUTTER" not in env
    assert "PYTHONPATH" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env  # wsconn's own credentials come only via the run env


def test_callbacks_to_loopback_bypass_a_configured_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.invalid:3128")
    monkeypatch.setenv("NO_PROXY", ".corp.invalid")
    code_dir = code(tmp_path, "import os\ndef handler(e, c):\n    return dict(os.environ)\n")

    async def scenario() -> dict[str, str]:
        async with backends() as (live, _):
            env: dict[str, str] = ok(await live.invoke(python_fn(code_dir), {}, label="r"))
        return env

    env = run(scenario())
    assert env["HTTPS_PROXY"] == "http://proxy.corp.invalid:3128"
    assert env["NO_PROXY"] == ".corp.invalid,127.0.0.1,localhost"
    assert env["no_proxy"] == "127.0.0.1,localhost"


def test_a_runtime_other_than_the_interpreters_is_pointed_out_once(tmp_path: Path) -> None:
    this = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    code_dir = code(tmp_path, COUNTER)

    async def scenario(runtime: str) -> list[LogLine]:
        async with backends() as (live, logs):
            function = python_fn(code_dir, runtime=runtime)
            await live.check([function])
            await live.invoke(function, {}, label="r")
        return [line for line in logs if line[1] == "stderr"]

    assert run(scenario(this)) == []
    assert run(scenario("python3.7")) == [
        (
            "handler",
            "stderr",
            f"wsconn: handler is python3.7 on AWS, here it runs on {this} ({default_python()})",
        )
    ]


def test_a_virtualenv_with_nothing_installed_runs_handlers(tmp_path: Path) -> None:
    venv = tmp_path / "appvenv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A dependency of the app, installed only in the app's virtualenv.
    Path(site, "appdep.py").write_text("GREETING = 'from the app venv'\n")
    # Output before the worker's first line (a sitecustomize that prints) is shown, not fatal.
    Path(site, "sitecustomize.py").write_text("print(42)\nprint('site says hi')\n")
    code_dir = code(
        tmp_path,
        """
        import importlib.util, sys
        import appdep

        def handler(event, context):
            return {
                "greeting": appdep.GREETING,
                "prefix": sys.prefix,
                "third_party": [name for name in ("wsconn", "boto3", "aiohttp", "click")
                                if importlib.util.find_spec(name) is not None],
            }
        """,
    )
    function = python_fn(code_dir)

    async def scenario() -> tuple[dict[str, Any], list[LogLine]]:
        async with backends(python=str(python)) as (live, logs):
            await live.check([function])
            answer: dict[str, Any] = ok(await live.invoke(function, {}, label="r"))
        return answer, logs

    answer, logs = run(scenario())
    assert answer == {"greeting": "from the app venv", "prefix": str(venv), "third_party": []}
    assert logs[:2] == [("handler", "stdout", "42"), ("handler", "stdout", "site says hi")]


def test_the_worker_script_is_python_38_and_stdlib_only() -> None:
    # It runs under the app's interpreter, which may be older than wsconn's and has nothing else.
    import ast

    from wsconn.local.backends.workers import WORKER_SCRIPT

    tree = ast.parse(WORKER_SCRIPT.read_text(), feature_version=(3, 8))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


# --- lambda: targets and the Invoke API --------------------------------------------------------


def _echo(event: Any) -> Any:
    return {"statusCode": 200, "body": event["body"]}


def _fails(event: Any) -> Any:
    raise ValueError("bad input")


def test_the_test_invoke_api_server_answers_as_botocore_expects() -> None:
    with lambda_server({"Echo": _echo, "Fails": _fails}) as server:
        client = boto3.client("lambda", endpoint_url=server.url, region_name="us-east-1")
        answer = client.invoke(FunctionName="Echo", Payload=json.dumps({"body": "hi"}))
        assert answer["StatusCode"] == 200
        assert "FunctionError" not in answer
        assert json.loads(answer["Payload"].read()) == {"statusCode": 200, "body": "hi"}

        failed = client.invoke(FunctionName="Fails", Payload=b"{}")
        assert failed["FunctionError"] == "Unhandled"
        error = json.loads(failed["Payload"].read())
        assert (error["errorType"], error["errorMessage"]) == ("ValueError", "bad input")

        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="Nope", Payload=b"{}")


def _lambda_fn(name: str, url: str, **kw: Any) -> Function:
    return Function(LambdaTarget(name, url), name=name, **kw)


def test_lambda_targets_over_the_invoke_api() -> None:
    with lambda_server({"Echo": _echo, "Fails": _fails}) as server:

        async def scenario() -> None:
            async with backends() as (live, _):
                await live.check([_lambda_fn("Echo", server.url)])  # not contacted
                assert not server.received
                echoed = await live.invoke(
                    _lambda_fn("Echo", server.url), {"body": "hi"}, label="r"
                )
                assert ok(echoed) == {"statusCode": 200, "body": "hi"}
                name, headers, event = server.received[-1]
                assert (name, event) == ("Echo", {"body": "hi"})
                assert headers["X-Amz-Invocation-Type"] == "RequestResponse"

                failed = await live.invoke(_lambda_fn("Fails", server.url), {}, label="r")
                assert failed.error == "ValueError: bad input"
                assert isinstance(failed.payload, dict)
                assert failed.payload["errorType"] == "ValueError"
                assert not failed.timed_out

                missing = await live.invoke(_lambda_fn("Nope", server.url), {}, label="r")
                assert missing.error == (
                    "Invoke API answered 404 ResourceNotFoundException: Function not found: Nope"
                )

        run(scenario())


def test_lambda_target_unreachable_and_timeout() -> None:
    with lambda_server({}) as server:
        closed_url = server.url
    with lambda_server({"Echo": _echo}, delay=1.5) as slow:

        async def scenario() -> None:
            async with backends() as (live, _):
                gone = await live.invoke(_lambda_fn("Echo", closed_url), {}, label="r")
                assert gone.error is not None and gone.error.startswith(
                    f"cannot reach {closed_url}/2015-03-31/functions/Echo/invocations"
                )
                assert not gone.timed_out
                late = await live.invoke(_lambda_fn("Echo", slow.url, timeout=0.3), {}, label="r")
                assert late.timed_out
                assert late.error == "Task timed out after 0.30 seconds"

        run(scenario())


def test_invoke_api_server_request_id_is_the_invocations() -> None:
    with lambda_server({"Echo": _echo}) as server:

        async def scenario() -> Invocation:
            async with backends() as (live, _):
                return await live.invoke(_lambda_fn("Echo", server.url), {"body": "x"}, label="r")

        invocation = run(scenario())
        assert invocation.request_id == server.request_ids[-1]
