"""Invoking a route's function: Python handlers in warm worker processes, or the Lambda Invoke API.

- ``parse_target`` / ``parse_env_file`` / ``default_python``: configuration (config.py)
- ``Backends``: ``check()`` once at start (every Python handler imported, or a one-line
  ConfigError), ``invoke()`` per event, ``aclose()`` at the end (every worker killed)
- workers.py: the worker pools (policy, timeouts, reload); _worker.py: the process itself
- invoke_api.py: ``lambda:NAME@URL`` targets
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsconn.errors import ConfigError
from wsconn.local.app import Function, LambdaTarget, PythonTarget
from wsconn.local.backends.config import (
    default_python,
    handler_environment,
    parse_env_file,
    parse_target,
)
from wsconn.local.backends.workers import MAX_WORKERS, FunctionPool, InitError, new_request_id

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "MAX_WORKERS",
    "Backends",
    "Invocation",
    "default_python",
    "parse_env_file",
    "parse_target",
]

# The account in the ARNs handlers see (invoked_function_arn), unless the gateway names its own.
DEFAULT_ACCOUNT_ID = "123456789012"


@dataclass(frozen=True)
class Invocation:
    """One invocation's result.

    ``payload`` is what the function returned (decoded JSON), or for a function error the
    ``{errorMessage, errorType, stackTrace}`` document; ``error`` is a one-line description of any
    failure (``ZeroDivisionError: division by zero``, ``Task timed out after 3.00 seconds``,
    ``Runtime.ExitError: ...``, ``cannot reach ...``), None on success.
    """

    payload: object | None
    error: str | None
    timed_out: bool
    duration_ms: float
    request_id: str


def _pool_key(function: Function) -> tuple[object, ...]:
    # Function holds a dict (env), so it is not hashable: equal functions share one pool.
    return (
        function.target,
        function.name,
        str(function.code_dir),
        tuple(sorted(function.env.items())),
        function.timeout,
        function.memory_mb,
        function.runtime,
    )


class Backends:
    """Runs functions for the gateway. Create, ``await check(...)``, ``invoke`` many, ``aclose``.

    ``python`` is the interpreter for Python handlers (None: ``default_python()``); ``on_log``
    receives ``(label, "stdout"|"stderr", line)`` for each line a handler prints (``label`` is the
    invoke's, or the function's name while it loads). ``env`` is layered over Lambda's variables
    and under each function's own env (the gateway's credentials, CA bundle, endpoint);
    ``region`` and ``account_id`` name the function's ARN and region variables.
    """

    def __init__(
        self,
        python: str | None,
        on_log: Callable[[str, str, str], None],
        *,
        env: Mapping[str, str] | None = None,
        region: str = "us-east-1",
        account_id: str = DEFAULT_ACCOUNT_ID,
    ) -> None:
        self.python = python or default_python()
        self._on_log = on_log
        self._env = dict(env or {})
        self._region = region
        self._account_id = account_id
        self._pools: dict[tuple[object, ...], FunctionPool] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _pool(self, function: Function) -> FunctionPool:
        key = _pool_key(function)
        pool = self._pools.get(key)
        if pool is None:
            code_dir = Path(function.code_dir).resolve()
            pool = FunctionPool(
                function,
                python=function.python or self.python,
                env=handler_environment(
                    function, code_dir=code_dir, region=self._region, run_env=self._env
                ),
                code_dir=code_dir,
                arn=f"arn:aws:lambda:{self._region}:{self._account_id}:function:{function.name}",
                on_log=self._on_log,
            )
            self._pools[key] = pool
        return pool

    async def check(self, functions: Iterable[Function]) -> None:
        """Load every Python handler once (each then stays warm); ConfigError on the first failure.

        ``lambda:`` targets are not contacted: their server may start after the gateway.
        """
        pools: dict[int, tuple[Function, FunctionPool]] = {}
        for function in functions:
            if not isinstance(function.target, PythonTarget):
                continue
            _check_python_function(function)
            pool = self._pool(function)
            pools[id(pool)] = (function, pool)
        results = await asyncio.gather(
            *(pool.start(function.name) for function, pool in pools.values()),
            return_exceptions=True,
        )
        for (function, _pool), result in zip(pools.values(), results, strict=True):
            if isinstance(result, InitError):
                raise ConfigError(f"{function.target} (in {function.code_dir}): {result}")
            if isinstance(result, BaseException):
                raise result

    async def invoke(self, function: Function, event: dict[str, Any], *, label: str) -> Invocation:
        """Run ``function`` on ``event`` (within ``function.timeout``); never raises for its failures."""
        started = time.perf_counter()
        if self._closed:  # nothing may start once aclose() has run: it would be left running
            return Invocation(None, "the gateway is stopping", False, 0.0, new_request_id())
        if isinstance(function.target, LambdaTarget):
            from wsconn.local.backends.invoke_api import invoke_lambda

            outcome, server_id = await invoke_lambda(self._client(), function, event)
            request_id = server_id or new_request_id()
        else:
            request_id = new_request_id()
            outcome = await self._pool(function).invoke(event, label=label, request_id=request_id)
        return Invocation(
            payload=outcome.payload,
            error=outcome.error,
            timed_out=outcome.timed_out,
            duration_ms=(time.perf_counter() - started) * 1000,
            request_id=request_id,
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            # Loopback servers (sam local, the RIE): no proxy from the environment.
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    async def aclose(self) -> None:
        """Kill every worker (and whatever it started); close the Invoke API client."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))
        if self._session is not None:
            await self._session.close()
            self._session = None


def _check_python_function(function: Function) -> None:
    code_dir = Path(function.code_dir)
    if not code_dir.is_dir():
        what = "does not exist" if not code_dir.exists() else "is not a directory"
        raise ConfigError(f"code directory {code_dir} {what} (for {function.target})")
    if function.runtime and not function.runtime.startswith("python"):
        raise ConfigError(
            f"function {function.name}: runtime {function.runtime} cannot run as a Python "
            "handler (serve it with the Lambda Invoke API and use lambda:NAME@URL)"
        )
