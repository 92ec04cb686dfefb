"""An :class:`App` from ``wsconn local``'s command-line flags (``--handler``, ``--route`` ...),
and with ``--template``, the template's app with those flags on top.

Every mistake is a one-line :class:`ConfigError` (exit 8), raised before anything listens.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsconn.errors import ConfigError
from wsconn.local import routes
from wsconn.local.app import (
    DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_MEMORY_MB,
    DEFAULT_ROUTE_SELECTION,
    MAX_MEMORY_MB,
    MIN_MEMORY_MB,
    App,
    Authorizer,
    Function,
    PythonTarget,
    Route,
    Target,
)
from wsconn.local.backends import parse_env_file, parse_target

if TYPE_CHECKING:
    from wsconn.local.template import TemplateApp

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
    memory_size: int = DEFAULT_MEMORY_MB,
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
    if not MIN_MEMORY_MB <= memory_size <= MAX_MEMORY_MB:
        raise ConfigError(
            f"--memory-size {memory_size}: Lambda allows {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MB"
        )
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
                memory_mb=memory_size,
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


@dataclass(frozen=True)
class BackendOptions:
    """`wsconn local`'s options that describe the app. None where a template's value may stand:
    the option was not given."""

    handler: str | None = None
    route: Sequence[str] = ()
    code_dir: str | None = None
    route_selection: str | None = None
    two_way: Sequence[str] = ()
    env: Sequence[str] = ()
    env_file: Sequence[str] = ()
    handler_timeout: float | None = None
    memory_size: int | None = None
    authorizer: str | None = None
    identity_source: str | None = None
    connect_auth: str | None = None
    template: str | None = None
    env_vars: str | None = None
    parameter_overrides: Sequence[str] = ()
    lambda_endpoint: str | None = None
    api: str | None = None


# Options that only mean something with --template.
_TEMPLATE_ONLY = {
    "env_vars": "--env-vars",
    "parameter_overrides": "--parameter-overrides",
    "lambda_endpoint": "--lambda-endpoint",
    "api": "--api",
}


@dataclass(frozen=True)
class LoadedApp:
    """The app `wsconn local` runs, the template it came from (if any), and what to say at start."""

    app: App
    template: TemplateApp | None
    notes: tuple[str, ...]  # about the template's Python runtimes against the interpreter

    @property
    def stage(self) -> str | None:
        """The template's one Stage's name (or --stage over it), if it names one."""
        return self.template.stage if self.template is not None else None


def load_app(
    options: BackendOptions,
    *,
    region: str,
    stage: str | None,
    shell_env: dict[str, str],
    python: str | None = None,
) -> LoadedApp:
    """The app as `wsconn local` (and the pytest plugin) runs it: the flags' app, or the
    template's with the flags on top; Python runtimes checked against `python`."""
    if options.template is None:
        for name, option in _TEMPLATE_ONLY.items():
            if getattr(options, name) not in (None, (), []):
                raise ConfigError(f"{option} needs --template")
    app = app_from_flags(
        handler=options.handler,
        route=options.route,
        code_dir=options.code_dir,
        route_selection=options.route_selection or DEFAULT_ROUTE_SELECTION,
        two_way=() if options.template else options.two_way,
        env=options.env,
        env_file=options.env_file,
        handler_timeout=(
            DEFAULT_HANDLER_TIMEOUT if options.handler_timeout is None else options.handler_timeout
        ),
        memory_size=DEFAULT_MEMORY_MB if options.memory_size is None else options.memory_size,
        authorizer=options.authorizer,
        identity_source=options.identity_source,
        connect_auth=options.connect_auth or "none",
    )
    template = None
    if options.template is not None:
        try:
            from wsconn.local.template import read_app
        except ImportError as exc:
            if exc.name and exc.name.split(".")[0] == "yaml":
                raise ConfigError(
                    'reading templates needs the "local" extra (PyYAML is not installed): '
                    'pip install "wsconn[local]"'
                ) from None
            raise
        template = read_app(
            options.template,
            flags=app,
            parameter_overrides=options.parameter_overrides,
            env_vars=options.env_vars,
            lambda_endpoint=options.lambda_endpoint,
            api=options.api,
            region=region,
            shell_env=shell_env,
            two_way=options.two_way,
            env=parse_env(options.env, options.env_file),
            handler_timeout=options.handler_timeout,
            route_selection=options.route_selection,
            connect_auth=app.connect_auth if options.connect_auth is not None else None,
            stage=stage,
        )
        app = template.app
    app, notes = _python_runtimes(app, python)
    return LoadedApp(app, template, notes)


def _python_runtimes(app: App, python: str | None) -> tuple[App, tuple[str, ...]]:
    """A template's python3.X runtimes against the interpreter's version (said once at start)."""
    runtimes = {
        function.runtime
        for function in [
            *(route.function for route in app.routes.values()),
            app.authorizer.function if app.authorizer else None,
        ]
        if function is not None and (function.runtime or "").startswith("python3")
    }
    if not runtimes:
        return app, ()
    from wsconn.local.backends import default_python
    from wsconn.local.template import python_runtimes

    interpreter = python or default_python()
    try:
        version = subprocess.run(
            [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return app, ()  # a broken --python is reported when the handlers load
    return python_runtimes(app, version, explicit=python is not None)


def _function_name(text: str, target: Target) -> str:
    """A valid Lambda function name for a target: ``module-function``, or the Lambda name."""
    if isinstance(target, PythonTarget):
        return f"{target.module.replace('.', '-')}-{target.function}"
    return target.name
