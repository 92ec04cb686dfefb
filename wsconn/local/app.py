"""What a local backend app is: its routes, the functions behind them, its `$connect` auth.

Plain data, built from `wsconn local`'s flags or from a SAM / CloudFormation template, and read by
the gateway (which route runs what) and the backends (how a function is invoked). Nothing here
imports aiohttp: the template reader and ``--list`` use it without starting a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_ROUTE_SELECTION = "$request.body.action"
# Who the local gateway says it is: the apiId in events and ARNs, and a template's Ref to its API.
LOCAL_API_ID = "local"
LOCAL_ACCOUNT = "123456789012"
# API Gateway's integration timeout (seconds): the default and the ceiling of a handler's time.
DEFAULT_HANDLER_TIMEOUT = 29.0
# Lambda's memory sizes (MB): its default, and the range a function may be given.
DEFAULT_MEMORY_MB = 128
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10240


@dataclass(frozen=True)
class PythonTarget:
    """A Python handler: ``function`` in ``module``, imported from the function's code dir."""

    module: str
    function: str

    def __str__(self) -> str:
        return f"{self.module}:{self.function}"


@dataclass(frozen=True)
class LambdaTarget:
    """A function behind the Lambda Invoke API: ``POST {url}/2015-03-31/functions/{name}/invocations``."""

    name: str
    url: str

    def __str__(self) -> str:
        return f"lambda:{self.name}@{self.url}"


Target = PythonTarget | LambdaTarget


@dataclass(frozen=True)
class Function:
    """One function as Lambda would run it: what to call, where its code is, its environment."""

    target: Target
    # The function's name in its Lambda context (a template's logical id; from flags
    # `module-function` for a Python target, NAME for lambda:NAME@URL).
    name: str
    code_dir: Path = Path(".")
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_HANDLER_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB
    # The Lambda runtime named by a template (e.g. "python3.12", "nodejs20.x"); None from flags.
    runtime: str | None = None
    # The interpreter for a Python target when not the run's --python (a template function whose
    # runtime's python3.X was found on PATH); None: the run's.
    python: str | None = None


@dataclass(frozen=True)
class Route:
    """A route key and what answers it.

    ``function`` is None when the integration cannot be run here; ``unavailable`` then says why
    (e.g. a Node.js function without ``--lambda-endpoint``) and the route answers as a failing
    integration does on AWS.
    """

    key: str
    function: Function | None
    two_way: bool = False
    unavailable: str | None = None


@dataclass(frozen=True)
class Authorizer:
    """A REQUEST authorizer on ``$connect`` and where its identity comes from."""

    function: Function
    # As AWS writes them: "route.request.header.Auth", "route.request.querystring.token".
    identity_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class App:
    """A WebSocket API's backend: route selection, routes by key, and ``$connect`` auth."""

    route_selection: str = DEFAULT_ROUTE_SELECTION
    routes: Mapping[str, Route] = field(default_factory=dict)
    connect_auth: Literal["none", "iam"] = "none"
    authorizer: Authorizer | None = None
    # `--handler`: the route for any key a message selects that has no route of its own (the
    # event's routeKey is that key, so one function can dispatch on it); None on AWS-shaped apps.
    catch_all: Route | None = None
    # API Gateway's integration timeout (seconds; a template's TimeoutInMillis, 29 s by default
    # there): a function still running then fails its route while it runs on to its own timeout.
    # None (flags): the function's own timeout (--handler-timeout) is the only limit.
    integration_timeout: float | None = None

    @property
    def has_backend(self) -> bool:
        """Whether any route is configured (without one, every frame answers Forbidden)."""
        return bool(self.routes) or self.catch_all is not None
