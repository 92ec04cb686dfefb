"""An :class:`App` from ``wsconn local``'s command-line flags (``--handler``, ``--route`` ...).

Every mistake is a one-line :class:`ConfigError` (exit 8), raised before anything listens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wsconn.errors import ConfigError
from wsconn.local import routes
from wsconn.local.app import (
    DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_ROUTE_SELECTION,
    App,
    Authorizer,
    Function,
    PythonTarget,
    Route,
    Target,
)
from wsconn.local.backends import parse_env_file, parse_target

_IDENTITY_PREFIXES = ("route.request.header.", "route.request.querystring.")


def parse_env(pairs: Sequence[str], env_files: Sequence[str]) -> dict[str, str]:
    """``--env-file`` files in order, then ``--env KEY=VALUE`` pairs (the last one wins)."""
    env: dict[str, str] = {}
    for path in env_files:
        env.update(parse_env_file(path))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or key != key.strip():
            raise ConfigError(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def parse_identity_sources(text: str) -> tuple[str, ...]:
    """``route.request.header.NAME`` / ``route.request.querystring.NAME``, comma-separated."""
    sources = tuple(part.strip() for part in text.split(",") if part.strip())
    for source in sources:
        if not source.startswith(_IDENTITY_PREFIXES) or source.endswith("."):
            raise ConfigError(
                f"--identity-source {source!r}: expected route.request.header.NAME or "
                "route.request.querystring.NAME (comma-separated)"
            )
    if not sources:
        raise ConfigError("--identity-source: give at least one source")
    return sources


def app_from_flags(
    *,
    handler: str | None = None,
    route: Sequence[str] = (),
    code_dir: str | None = None,
    route_selection: str = DEFAULT_ROUTE_SELECTION,
    two_way: Sequence[str] = (),
    env: Sequence[str] = (),
    env_file: Sequence[str] = (),
    handler_timeout: float = DEFAULT_HANDLER_TIMEOUT,
    authorizer: str | None = None,
    identity_source: str | None = None,
    connect_auth: str = "none",
) -> App:
    """The app the flags describe. ``--handler`` answers ``$connect``, ``$disconnect``,
    ``$default`` and any key a message selects; each ``--route KEY=TARGET`` wins for its key."""
    directory = Path(code_dir) if code_dir is not None else Path(".")
    if code_dir is not None and not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise ConfigError(f"--code-dir {code_dir} {what}")
    try:
        routes.check_selection_expression(route_selection)
    except routes.SelectionError as exc:
        raise ConfigError(f"--route-selection {exc}") from None
    if handler_timeout <= 0:
        raise ConfigError(f"--handler-timeout {handler_timeout:g}: must be more than 0 seconds")
    variables = parse_env(env, env_file)
    functions: dict[str, Function] = {}

    def function(text: str) -> Function:
        # One Function per target text, so routes sharing a handler share its warm workers.
        if text not in functions:
            target = parse_target(text)
            functions[text] = Function(
                target=target,
                name=_function_name(text, target),
                code_dir=directory,
                env=dict(variables),
                timeout=handler_timeout,
            )
        return functions[text]

    targets: dict[str, str] = {}
    for item in route:
        key, sep, target = item.partition("=")
        key, target = key.strip(), target.strip()
        if not sep or not key or not target:
            raise ConfigError(f"--route {item!r}: expected KEY=TARGET (e.g. sendmessage=chat:send)")
        if key in targets:
            raise ConfigError(f"--route {key}: given twice")
        if key.startswith("$") and key not in (routes.CONNECT, routes.DISCONNECT, routes.DEFAULT):
            raise ConfigError(
                f"--route {key}: the predefined keys are $connect, $disconnect, $default"
            )
        targets[key] = target
    if handler is not None:
        for key in (routes.CONNECT, routes.DISCONNECT, routes.DEFAULT):
            targets.setdefault(key, handler)

    all_two_way = "*" in two_way
    named_two_way = {key for key in two_way if key != "*"}
    for key in named_two_way:
        if key in (routes.CONNECT, routes.DISCONNECT):
            raise ConfigError(f"--two-way {key}: only message routes answer the caller")
        if key not in targets and handler is None:
            raise ConfigError(f"--two-way {key}: no such route (give --route {key}=TARGET)")
        # With --handler, a two-way key is a route of the handler's own.
        targets.setdefault(key, handler or "")
    app_routes = {
        key: Route(
            key=key,
            function=function(target),
            two_way=key not in (routes.CONNECT, routes.DISCONNECT)
            and (all_two_way or key in named_two_way),
        )
        for key, target in targets.items()
    }
    catch_all = (
        Route(key="*", function=function(handler), two_way=all_two_way)
        if handler is not None
        else None
    )
    guard: Authorizer | None = None
    if authorizer is not None:
        sources = parse_identity_sources(identity_source) if identity_source is not None else ()
        guard = Authorizer(function=function(authorizer), identity_sources=sources)
    elif identity_source is not None:
        raise ConfigError("--identity-source needs --authorizer")
    if connect_auth not in ("none", "iam"):
        raise ConfigError(f"--connect-auth {connect_auth}: expected none or iam")
    if connect_auth == "iam" and guard is not None:
        raise ConfigError(
            "--authorizer with --connect-auth iam: a $connect route has one authorization type "
            "(AWS_IAM or CUSTOM), not both"
        )
    return App(
        route_selection=route_selection,
        routes=app_routes,
        connect_auth="iam" if connect_auth == "iam" else "none",
        authorizer=guard,
        catch_all=catch_all,
    )


def _function_name(text: str, target: Target) -> str:
    """A valid Lambda function name for a target: ``module-function``, or the Lambda name."""
    if isinstance(target, PythonTarget):
        return f"{target.module.replace('.', '-')}-{target.function}"
    return target.name
