"""The Click group and commands: parse, call one library function (wsconn.calls), render.

Only click, wsconn.errors and other standard-library-only modules are imported at module level:
`wsconn --help` and shell completion must not pay for botocore, requests, rich or aiohttp.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

from wsconn import __version__
from wsconn.completion import data_value, profile_names
from wsconn.errors import ConfigError, ExitCode, UsageError, WsconnError, exit_code_table
from wsconn.limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_INTERVAL,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_DURATION,
    MAX_PAYLOAD,
    MAX_PROCESSES,
)
from wsconn.streams import Streams

if TYPE_CHECKING:
    from wsconn.calls import Bulk, Operation, Settings
    from wsconn.render import Output

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

EXIT_EPILOG = "\n\b\nExit codes:\n" + exit_code_table()
EPILOG = (
    "\b\nExamples:\n"
    "  wsconn send --endpoint https://abc123.execute-api.us-east-1.amazonaws.com/prod \\\n"
    "      R0oXAdfD0kwCH6w= 'hello'\n"
    "  wsconn status https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w=\n"
    "  wsconn disconnect --api-id abc123 --stage prod --region eu-west-1 R0oXAdfD0kwCH6w=\n"
    "  wsconn demo          # try it all against a local gateway, no AWS account needed\n"
    "\n\b\nEndpoint, in this order: a connection URL as CONNECTION; --endpoint URL;\n"
    "--api-id + --stage; WSCONN_ENDPOINT, AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI, AWS_ENDPOINT_URL.\n"
    + EXIT_EPILOG
)


class Options(NamedTuple):
    """The options every command shares; given before or after the subcommand."""

    endpoint: str | None = None
    api_id: str | None = None
    stage: str | None = None
    region: str | None = None
    profile: str | None = None
    output: str = "auto"
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    ca_bundle: str | None = None
    verbose: int = 0
    quiet: bool = False
    dry_run: bool = False

    def merged(self, values: dict[str, Any]) -> Options:
        """These options overridden by the ones given (not None, not 0) in `values`."""
        given = {k: v for k, v in values.items() if k in self._fields and v is not None}
        given["verbose"] = self.verbose + (values.get("verbose") or 0)
        merged = self._replace(**given)
        if merged.verbose and merged.quiet:
            raise UsageError("-q/--quiet and -v/--verbose contradict each other: give one")
        return merged

    def settings(self) -> Settings:
        from wsconn.calls import Settings

        return Settings(
            self.endpoint,
            self.api_id,
            self.stage,
            self.region,
            self.profile,
            self.timeout,
            self.retries,
            self.ca_bundle,
        )


def _stage(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise UsageError(
            "--stage is empty: an unquoted $default is expanded by the shell to nothing; "
            "quote it: --stage '$default'"
        )
    return value


def _region(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from wsconn.endpoint import check_region

    return None if value is None else check_region(value, "--region")


_SHARED_OPTIONS = [
    click.option(
        "--endpoint",
        "--endpoint-url",
        "endpoint",
        metavar="URL",
        help="Management endpoint URL: https://, http://, or the clients' wss:// or ws://.",
    ),
    click.option("--api-id", metavar="ID", help="API id; use with --stage (and --region)."),
    click.option(
        "--stage",
        metavar="NAME",
        callback=_stage,
        help="Stage name, e.g. prod or '$default' (quoted).",
    ),
    click.option(
        "--region",
        metavar="REGION",
        callback=_region,
        help="AWS region (default: from the host or profile).",
    ),
    click.option(
        "--profile",
        metavar="NAME",
        shell_complete=profile_names,
        help="AWS profile from ~/.aws/config (as the AWS CLI).",
    ),
    click.option(
        "-o",
        "--output",
        type=click.Choice(["auto", "text", "json"]),
        help="auto: rich on a terminal, text when piped; json: one object on stdout.",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        help=f"Connect and read timeout per attempt [default: {DEFAULT_TIMEOUT:g}].",
    ),
    click.option(
        "--retries",
        type=click.IntRange(min=0, max=10),
        metavar="N",
        help=f"Retries for 429, 5xx and connection errors [default: {DEFAULT_RETRIES}].",
    ),
    click.option(
        "--ca-bundle",
        type=click.Path(dir_okay=False),
        metavar="PATH",
        help="CA certificates to verify TLS with (default: AWS_CA_BUNDLE, then the system's).",
    ),
    click.option(
        "-v",
        "--verbose",
        count=True,
        help="Show on stderr how the call resolved, the canonical request and string-to-sign, "
        "the request and response, and timings (secrets redacted).",
    ),
    click.option(
        "-q",
        "--quiet",
        is_flag=True,
        default=None,
        help="On stderr only the one-line error: no explanation, no confirmation, no progress.",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        default=None,
        help="Resolve and sign, then print the request as a curl command instead of sending it.",
    ),
    # Read by main() from the arguments, since it must work even when parsing fails.
    click.option(
        "--debug", is_flag=True, default=None, help="Show tracebacks for internal errors."
    ),
]
# Options that change nothing `config` shows: left out of its --help.
_NOT_FOR_CONFIG = {"verbose", "quiet", "dry_run"}


def shared_options(command: F) -> F:
    for option in reversed(_SHARED_OPTIONS):
        command = option(command)
    return command


def config_options(command: click.Command) -> click.Command:
    """The shared options that change what `config` resolves (not -v, -q, --dry-run)."""
    command.params = [p for p in command.params if p.name not in _NOT_FOR_CONFIG]
    return command


# A real connection id may start with '-' (15 of [A-Za-z0-9_-], then '='): Click would read it
# as an option. Such a token is marked so Click takes it as an argument, and unmarked after.
_DASH_ID = re.compile(r"-[A-Za-z0-9_-]{14}=")
_MARK = "\x00"
_CONNECTIONS = re.compile(r"/(?:@|%40)connections(?:/|$)", re.IGNORECASE)


class ConnectionCommand(click.Command):
    """A command whose CONNECTION may be an id that starts with '-', as real ids can."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {
            name
            for param in self.params
            if isinstance(param, click.Option) and not param.is_flag and not param.count
            for name in param.opts
        }
        marked = [
            _MARK + arg
            if _DASH_ID.fullmatch(arg) and (i == 0 or args[i - 1] not in takes_value)
            else arg
            for i, arg in enumerate(args)
        ]
        try:
            return super().parse_args(ctx, marked)
        except click.UsageError as error:
            connection = ctx.params.get("connection")
            extra_arguments = type(error) is click.UsageError  # not a bad option or value
            if extra_arguments and isinstance(connection, str) and _is_endpoint_url(connection):
                # `send wss://.../prod ID hi`: the endpoint was given where the connection goes.
                raise UsageError(
                    f"{connection} is an endpoint, not a connection: pass it with "
                    f"--endpoint {shlex.quote(connection)} and give the connection id as "
                    "CONNECTION"
                ) from None
            raise


def _status_list(_ctx: click.Context, _param: click.Parameter, text: str) -> tuple[int, ...]:
    try:
        statuses = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        statuses = ()
    if not statuses or not all(400 <= status <= 599 for status in statuses):
        raise click.BadParameter(
            f"{text!r}: give HTTP error statuses separated by commas, e.g. 429,500",
            param_hint="'--fault-status'",
        )
    return statuses


class LocalCommand(click.Command):
    """`wsconn local`: `--parameter-overrides` takes the Key=Value words after it, as SAM CLI's does."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        spread: list[str] = []
        state = ""  # "value": the option's own value comes next; "more": further pairs may
        for arg in args:
            if state == "more" and not arg.startswith("-") and "=" in arg:
                spread += ["--parameter-overrides", arg]
                continue
            spread.append(arg)
            if state == "value":
                state = "more"
            elif arg == "--parameter-overrides":
                state = "value"
            else:
                state = "more" if arg.startswith("--parameter-overrides=") else ""
        return super().parse_args(ctx, spread)


def _is_endpoint_url(text: str) -> bool:
    return "://" in text and not _CONNECTIONS.search(text)


def _unmark(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    return value[1:] if value and value.startswith(_MARK) else value


class _Processes(click.ParamType):  # type: ignore[type-arg]  # generic in newer click
    """-P: a number of worker processes, or auto (one per core)."""

    name = "processes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if value == "auto":
            return max(1, os.cpu_count() or 1)
        if not value.isdigit() or not 1 <= int(value) <= MAX_PROCESSES:
            self.fail(f"{value!r} is not a number of processes (1-{MAX_PROCESSES}) or auto")
        return int(value)


_BULK_OPTIONS = [
    click.option(
        "--ids",
        type=click.Path(dir_okay=False, allow_dash=True),
        metavar="FILE|-",
        help="Many connections: one id or connection URL per line (- for stdin); "
        "blank lines and # comments skipped.",
    ),
    click.option(
        "-j",
        "--concurrency",
        type=click.IntRange(1, 256),
        metavar="N",
        help=f"With --ids: requests in flight [default: {DEFAULT_CONCURRENCY}].",
    ),
    click.option(
        "-P",
        "--processes",
        type=_Processes(),
        metavar="N|auto",
        help="With --ids: worker processes, each with its own -j requests in flight "
        "(auto: one per core) [default: 1].",
    ),
    click.option(
        "--rate",
        type=click.FloatRange(min=0, min_open=True),
        metavar="R",
        help="With --ids: at most R requests per second in all.",
    ),
    click.option(
        "--gone-out",
        type=click.Path(dir_okay=False, writable=True),
        metavar="FILE",
        help="With --ids: write the ids that answered 410 (gone) here.",
    ),
    click.option(
        "--failed-out",
        type=click.Path(dir_okay=False, writable=True),
        metavar="FILE",
        help="With --ids: write the ids that failed or were not attempted here (re-run with --ids FILE).",
    ),
    click.option(
        "--unique", is_flag=True, default=None, help="With --ids: skip a connection listed twice."
    ),
]


def bulk_options(command: F) -> F:
    for option in reversed(_BULK_OPTIONS):
        command = option(command)
    return command


def _bulk(values: dict[str, Any], connection: str | None) -> Bulk | None:
    """The fan-out options, or None for a single call; usage errors for a mix of the two."""
    from wsconn.calls import Bulk

    ids = values.get("ids")
    extra = [
        name
        for name in ("concurrency", "processes", "rate", "gone_out", "failed_out", "unique")
        if values.get(name) is not None
    ]
    if ids is None:
        if extra:
            option = "--" + extra[0].replace("_", "-")
            raise UsageError(f"{option} goes with --ids FILE")
        if connection is None:
            raise UsageError("missing CONNECTION (a connection id or URL), or --ids FILE")
        return None
    if connection is not None:
        raise UsageError("give either CONNECTION or --ids FILE, not both")
    processes = values.get("processes") or 1
    if processes > 1:
        import multiprocessing

        if "fork" not in multiprocessing.get_all_start_methods():
            raise UsageError("-P/--processes needs fork(), which this platform lacks: use -j")
    return Bulk(
        ids,
        values.get("concurrency") or DEFAULT_CONCURRENCY,
        values.get("rate"),
        values.get("gone_out"),
        values.get("failed_out"),
        bool(values.get("unique")),
        processes,
    )


def _options(ctx: click.Context, values: dict[str, Any]) -> Options:
    parent: Options = ctx.find_object(Options) or Options()
    return parent.merged(values)


def _streams(ctx: click.Context) -> Streams:
    streams = ctx.meta.get("wsconn.streams")
    return streams if isinstance(streams, Streams) else Streams.from_sys()


def _output(ctx: click.Context, opts: Options) -> Output:
    from wsconn.render import Output

    return Output(opts.output, opts.verbose, opts.quiet, _streams(ctx))


@click.group(context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.version_option(__version__, "--version", prog_name="wsconn")
@shared_options
@click.pass_context
def cli(ctx: click.Context, /, **values: Any) -> None:
    """Send to, inspect and disconnect Amazon API Gateway WebSocket connections.

    Each call is signed with AWS SigV4 using the same credentials the AWS CLI would use.
    """
    ctx.meta["wsconn.streams"] = ctx.obj if isinstance(ctx.obj, Streams) else Streams.from_sys()
    ctx.obj = Options().merged(values)


def _run(
    ctx: click.Context,
    opts: Options,
    connection: str | None,
    operation: Operation[Any],
    bulk: Bulk | None,
    show: Callable[[Output, Any], None],
) -> None:
    """One call, its dry run, or its fan-out over --ids; the result rendered, the exit code set."""
    from wsconn import calls

    out = _output(ctx, opts)
    settings = opts.settings()
    if bulk is not None:
        ctx.exit(_run_bulk(ctx, opts, bulk, operation))
    try:
        if opts.dry_run:
            planned = calls.dry_run(settings, connection or "", operation)
            out.dry_run(planned.prepared, planned.settings)
            return
        result = calls.call(settings, connection or "", operation, tracer=out.tracer())
    except WsconnError as error:
        out.failed(error)
        raise
    show(out, result)


def _run_bulk(ctx: click.Context, opts: Options, bulk: Bulk, operation: Operation[Any]) -> int:
    """Fan one operation out over --ids; every line gets a result. Returns the run's exit code."""
    from wsconn import calls
    from wsconn.render import BulkOutput

    settings = opts.settings()
    streams = _streams(ctx)
    if opts.dry_run:
        printer = _output(ctx, opts)
        for planned in calls.dry_run_each(settings, bulk, operation):
            printer.dry_run(planned.prepared, planned.settings)
        return ExitCode.OK
    out = BulkOutput(
        opts.output,
        operation.success,
        streams,
        quiet=opts.quiet,
        verbose=opts.verbose,
        table=operation.method == "GET",
    )
    tracer = _output(ctx, opts).tracer()
    done = calls.fan_out(settings, bulk, operation, out, tracer=tracer)
    if done.input_abandoned:
        # The reader thread is still blocked on the input: interpreter shutdown would wait for
        # its lock (and abort). The lists are closed, the output flushed: leave now.
        streams.stdout.flush()
        streams.stderr.flush()
        os._exit(done.exit_code)
    return done.exit_code


SEND_HELP = """Send MESSAGE to one connection (POST @connections/{id}).

    CONNECTION is a connection id or a whole connection URL. The message is MESSAGE, -d MESSAGE,
    -d @FILE, -d @-, or standard input when piped: exactly those bytes, at most {MAX_PAYLOAD}.

    \b
    Examples:
      wsconn send --endpoint https://abc123.execute-api.us-east-1.amazonaws.com/prod R0oXAdfD0kwCH6w= hi
      echo '{"type":"ping"}' | wsconn send https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w=
      wsconn send -d @image.png https://abc123.execute-api.eu-west-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w=
      jq -r .connectionId conns.json | wsconn send --endpoint https://abc123.execute-api.us-east-1.amazonaws.com/prod --ids - -d '{"type":"refresh"}' --gone-out gone.txt
    """.replace("{MAX_PAYLOAD}", str(MAX_PAYLOAD))


@cli.command(cls=ConnectionCommand, epilog=EXIT_EPILOG, help=SEND_HELP)
@click.argument("connection", required=False, callback=_unmark)
@click.argument("message", required=False, callback=_unmark)
@click.option(
    "-d",
    "--data",
    metavar="MESSAGE|@FILE|@-",
    shell_complete=data_value,
    help="The message itself, @FILE (its bytes as they are), or @- for stdin.",
)
@bulk_options
@shared_options
@click.pass_context
def send(
    ctx: click.Context,
    /,
    connection: str | None,
    message: str | None,
    data: str | None,
    **values: Any,
) -> None:
    from wsconn import calls
    from wsconn.message import read_message

    opts = _options(ctx, values)
    streams = _streams(ctx)
    if (
        values.get("ids") is not None
        and connection is not None
        and message is None
        and data is None
    ):
        raise UsageError(
            f"with --ids, the message goes in -d: --ids {shlex.quote(values['ids'])} "
            f"-d {shlex.quote(connection)}"
        )
    bulk = _bulk(values, connection)
    if bulk is not None:
        if data is None or message is not None:
            raise UsageError("with --ids, give the message with -d MESSAGE or -d @FILE")
        if data == "@-" and bulk.ids == "-":
            raise UsageError("standard input cannot hold both the ids and the message")
    try:
        payload = read_message(
            message, data, streams.stdin_bytes, streams.stdin_is_terminal, wait=opts.timeout
        )
    except WsconnError as error:
        if bulk is None:
            error.connection_id = calls.given_id(connection or "")
            _output(ctx, opts).failed(error)
        raise
    _run(ctx, opts, connection, calls.send(payload), bulk, lambda out, result: out.sent(result))


@cli.command(cls=ConnectionCommand, epilog=EXIT_EPILOG)
@click.argument("connection", required=False, callback=_unmark)
@click.option(
    "--watch", is_flag=True, help="Poll until the connection is gone (then exit 3); Ctrl-C stops."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help=f"With --watch: time between polls [default: {DEFAULT_INTERVAL:g}].",
)
@bulk_options
@shared_options
@click.pass_context
def status(
    ctx: click.Context,
    /,
    connection: str | None,
    watch: bool,
    interval: float | None,
    **values: Any,
) -> None:
    """Show one connection's state (GET @connections/{id}).

    Connected at, last active, idle time, source IP, user agent, and the time left until the
    10-minute idle timeout and the 2-hour limit. Exit 3 if it is gone.

    \b
    Examples:
      wsconn status --endpoint wss://abc123.execute-api.us-east-1.amazonaws.com/prod R0oXAdfD0kwCH6w=
      wsconn status -o json https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w= | jq .lastActiveAt
      wsconn status --endpoint https://abc123.execute-api.us-east-1.amazonaws.com/prod --ids ids.txt -o json | jq -r 'select(.outcome == "connected") | .connectionId'
      wsconn status --watch --interval 5 https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w=
    """
    from wsconn import calls

    opts = _options(ctx, values)
    if interval is not None and not watch:
        raise UsageError("--interval goes with --watch")
    bulk = _bulk(values, connection)
    if watch and bulk is not None:
        raise UsageError("--watch follows one connection: give CONNECTION, not --ids")
    if watch and not opts.dry_run:
        out = _output(ctx, opts)
        try:
            with out.watch() as view:
                calls.watch(
                    opts.settings(),
                    connection or "",
                    interval or DEFAULT_INTERVAL,
                    view,
                    tracer=out.tracer(),
                )
        except WsconnError as error:
            out.failed(error)
            raise
        return
    _run(ctx, opts, connection, calls.STATUS, bulk, lambda out, info: out.status(info))


@cli.command(cls=ConnectionCommand, epilog=EXIT_EPILOG)
@click.argument("connection", required=False, callback=_unmark)
@bulk_options
@shared_options
@click.pass_context
def disconnect(ctx: click.Context, /, connection: str | None, **values: Any) -> None:
    """Disconnect one client (DELETE @connections/{id}).

    \b
    Examples:
      wsconn disconnect --api-id abc123 --stage prod --region us-east-1 R0oXAdfD0kwCH6w=
      wsconn disconnect https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w= && echo closed
      wsconn disconnect --api-id abc123 --stage prod --region us-east-1 --ids stuck.txt --rate 50 --failed-out retry.txt
    """
    from wsconn import calls

    opts = _options(ctx, values)
    bulk = _bulk(values, connection)
    _run(
        ctx, opts, connection, calls.DISCONNECT, bulk, lambda out, result: out.disconnected(result)
    )


@config_options
@cli.command(cls=ConnectionCommand, epilog=EXIT_EPILOG)
@click.argument("connection", required=False, callback=_unmark)
@click.option(
    "--check",
    is_flag=True,
    help="Print nothing when every setting resolves; else say what is missing (exit 8).",
)
@shared_options
@click.pass_context
def config(ctx: click.Context, /, connection: str | None, check: bool, **values: Any) -> None:
    """Show how each setting resolves, and from where (like `aws configure list`).

    Endpoint and its source, region and its source, profile, credential source with the access
    key id masked to its last 4 characters, timeout, retries and CA bundle: resolved exactly as
    a call resolves them. Give CONNECTION (an id or URL) to resolve the endpoint as a call with
    it would. Nothing is sent. When a setting cannot resolve, says why and exits 8.

    \b
    Examples:
      wsconn config
      wsconn config --profile prod -o json | jq -r .region
      wsconn config https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w=
      wsconn config --check --endpoint https://abc123.execute-api.us-east-1.amazonaws.com/prod
    """
    from wsconn.calls import Resolver

    opts = _options(ctx, values)
    rows = Resolver(opts.settings()).report(connection)
    out = _output(ctx, opts)
    if not check or out.mode == "json":
        out.settings(rows)
    problems = [row.problem for row in rows if row.problem is not None]
    for problem in problems:
        problem.show(file=_streams(ctx).stderr)
        problem.shown = True
    if problems:
        raise problems[0]


@cli.command(
    cls=LocalCommand,
    epilog="Exit status: 0 once stopped by Ctrl-C or SIGTERM (every client closed with 1001); "
    "2 for a usage error; 8 if it cannot listen, read the TLS files or the template, load a "
    "handler, or import the local extra.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDRESS",
    help="Address to listen on.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    metavar="PORT",
    help="0 = any free port.",
)
@click.option(
    "--stage", "local_stage", default="dev", show_default=True, metavar="NAME", help="Stage name."
)
@click.option(
    "--region",
    "local_region",
    metavar="REGION",
    help="Region signatures must be scoped to [default: AWS_REGION / profile's, else us-east-1].",
)
@click.option(
    "--profile", "local_profile", metavar="NAME", help="Trust this profile's credentials."
)
@click.option("--json", "json_events", is_flag=True, help="One JSON object per event on stdout.")
@click.option("--no-auth", is_flag=True, help="Accept any request, signed or not (loudly).")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=IDLE_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Close a client after this long without messages.",
)
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    default=MAX_DURATION,
    show_default=True,
    metavar="SECONDS",
    help="Close a client after this long in all.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    metavar="SHARE",
    help="Fail this share of management requests (0-1), for testing retries.",
)
@click.option(
    "--fault-status",
    default="500",
    callback=_status_list,
    show_default=True,
    metavar="CODES",
    help="Statuses injected faults answer, e.g. 429,500,503.",
)
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Send Retry-After on injected 429s.",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help="Delay every management answer by this long.",
)
@click.option(
    "--clock-skew",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Run the gateway's clock this far ahead (negative: behind), to test clock skew.",
)
@click.option(
    "--deny",
    type=click.Choice(["POST", "GET", "DELETE"]),
    multiple=True,
    help="Answer this method with AccessDeniedException, as IAM would (repeatable).",
)
@click.option(
    "--expired-token",
    is_flag=True,
    help="Answer requests signed with the session token with ExpiredTokenException.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True),
    metavar="PEM",
    help="Serve https and wss with this certificate (chain); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True),
    metavar="PEM",
    help="Its private key.",
)
@click.option(
    "--connect-auth",
    type=click.Choice(["none", "iam"]),
    default="none",
    show_default=True,
    help="iam: upgrades must be SigV4-signed (headers or presigned URL), as an AWS_IAM $connect.",
)
@click.option(
    "--handler",
    metavar="TARGET",
    help="Run MODULE:FUNCTION (or lambda:NAME@URL) for $connect, $disconnect and every message.",
)
@click.option(
    "--route",
    "route_specs",
    multiple=True,
    metavar="KEY=TARGET",
    help="Run TARGET for route KEY, e.g. 'sendmessage=chat:send' (repeatable; wins over --handler).",
)
@click.option(
    "--code-dir",
    metavar="DIR",
    help="Where Python handlers are imported from [default: the current directory].",
)
@click.option(
    "--route-selection",
    default="$request.body.action",
    show_default=True,
    metavar="EXPR",
    help="The route selection expression, e.g. '${request.body.service}/${request.body.action}'.",
)
@click.option(
    "--two-way",
    multiple=True,
    metavar="KEY",
    help="Send the route's returned body back to the caller (repeatable; '*' for all).",
)
@click.option(
    "--env",
    "env_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A variable in the handlers' environment (repeatable).",
)
@click.option(
    "--env-file",
    "env_files",
    multiple=True,
    metavar="FILE",
    help="Dotenv lines for the handlers' environment (--env wins).",
)
@click.option(
    "--handler-timeout",
    type=float,
    default=29.0,
    show_default=True,
    metavar="SECONDS",
    help="How long an invocation may run (API Gateway's integration limit is 29 s).",
)
@click.option(
    "--python",
    "python_path",
    metavar="PATH",
    help="The interpreter for Python handlers [default: $VIRTUAL_ENV's, else wsconn's].",
)
@click.option(
    "--authorizer",
    metavar="TARGET",
    help="A REQUEST authorizer on $connect: MODULE:FUNCTION or lambda:NAME@URL.",
)
@click.option(
    "--identity-source",
    metavar="SOURCES",
    help="Where its identity is: route.request.header.NAME / route.request.querystring.NAME, comma-separated.",
)
@click.option(
    "--template",
    "template_path",
    metavar="PATH",
    help="Run the WebSocket API of this SAM / CloudFormation template (a file, or a directory "
    "with template.yaml/.yml/.json); --handler/--route win for their keys.",
)
@click.option(
    "--env-vars",
    metavar="FILE",
    help='With --template: SAM CLI\'s env file, {"FunctionId": {"VAR": "value"}, "Parameters": {...}}.',
)
@click.option(
    "--parameter-overrides",
    multiple=True,
    metavar="'KEY=VALUE ...'",
    help="With --template: the template's parameters as SAM CLI takes them: 'A=1 B=2' or A=1 B=2.",
)
@click.option(
    "--lambda-endpoint",
    metavar="URL",
    help="With --template: invoke functions in other runtimes through this Lambda Invoke API "
    "(e.g. sam local start-lambda's http://127.0.0.1:3001).",
)
@click.option(
    "--api",
    "api_id",
    metavar="LOGICAL_ID",
    help="With --template: which WebSocket API, when it defines several.",
)
@click.option(
    "--list",
    "list_routes",
    is_flag=True,
    help="Print the route selection expression and the routes, then exit (nothing listens).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["auto", "text", "json"]),
    help="With --list: json prints the routes as one JSON object.",
)
@click.pass_context
def local(
    ctx: click.Context,
    host: str,
    port: int,
    local_stage: str,
    local_region: str | None,
    local_profile: str | None,
    json_events: bool,
    no_auth: bool,
    idle_timeout: float,
    max_duration: float,
    fault_rate: float,
    fault_status: tuple[int, ...],
    retry_after: float | None,
    latency: float,
    clock_skew: float,
    deny: tuple[str, ...],
    expired_token: bool,
    tls_cert: str | None,
    tls_key: str | None,
    connect_auth: str,
    handler: str | None,
    route_specs: tuple[str, ...],
    code_dir: str | None,
    route_selection: str,
    two_way: tuple[str, ...],
    env_pairs: tuple[str, ...],
    env_files: tuple[str, ...],
    handler_timeout: float,
    python_path: str | None,
    authorizer: str | None,
    identity_source: str | None,
    template_path: str | None,
    env_vars: str | None,
    parameter_overrides: tuple[str, ...],
    lambda_endpoint: str | None,
    api_id: str | None,
    list_routes: bool,
    output: str | None,
) -> None:
    """Run a local API Gateway WebSocket endpoint with a faithful @connections API.

    WebSocket clients connect to ws://HOST:PORT/STAGE; the management API answers at
    http://HOST:PORT/STAGE/@connections/{id} with AWS's statuses, error types and SigV4 checks,
    trusting the credentials your AWS CLI would use (or a generated pair it prints).
    Needs the local extra: pip install "wsconn[local]". Ctrl-C stops it (exit 0).

    \b
    Examples:
      wsconn local --port 8080 --stage dev --region us-east-1
      wsconn local --json --idle-timeout 5 | tee events.jsonl
      wsconn local --fault-rate 0.2 --fault-status 429,503 --retry-after 1   # test retries
      wsconn local --handler app:handler --env TABLE=chat     # run your backend's handler
      wsconn local --route 'sendmessage=chat:send' --route '$default=chat:other' --two-way '*'
      wsconn local --template template.yaml --env-vars env.json --parameter-overrides 'Stage=dev'
      wsconn local --template template.yaml --list

    \b
    Then, in the shell that runs a client (the banner prints these lines for the gateway
    it started, with the keys to export when it generated them):
      export WSCONN_ENDPOINT=http://127.0.0.1:8080/dev AWS_REGION=us-east-1
      wsconn send "$ID" hi   # ID: a connection id from a connect event
    """
    from click.core import ParameterSource

    run = _local_extra()
    from wsconn.local.flags import BackendOptions

    def given(name: str) -> Any:
        """The option's value if the user gave it, else None (a template's value stands)."""
        source = ctx.get_parameter_source(name)
        chosen = source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        return ctx.params[name] if chosen else None

    parent = ctx.find_object(Options)
    chosen_output = output or (parent.output if parent is not None else "auto")
    run.run_local(
        host=host,
        port=port,
        stage=given("local_stage"),
        region=local_region,
        profile=local_profile,
        json_events=json_events,
        auth=not no_auth,
        idle_timeout=idle_timeout,
        max_duration=max_duration,
        fault_rate=fault_rate,
        fault_statuses=fault_status,
        retry_after=retry_after,
        latency=latency,
        clock_skew=clock_skew,
        deny_methods=deny,
        expired_token=expired_token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        backend=BackendOptions(
            handler=handler,
            route=route_specs,
            code_dir=code_dir,
            route_selection=given("route_selection"),
            two_way=two_way,
            env=env_pairs,
            env_file=env_files,
            handler_timeout=given("handler_timeout"),
            authorizer=authorizer,
            identity_source=identity_source,
            connect_auth=given("connect_auth"),
            template=template_path,
            env_vars=env_vars,
            parameter_overrides=parameter_overrides,
            lambda_endpoint=lambda_endpoint,
            api=api_id,
        ),
        python=python_path,
        list_routes=list_routes,
        list_json=chosen_output == "json" or json_events,
    )


@cli.command(
    epilog="Exit status: 0 when every step did what it shows; 1 if one did not (a bug: please "
    "report it); 8 without the local extra."
)
def demo() -> None:
    """Walk through send, status and disconnect against a local gateway: no AWS account needed.

    Starts the local gateway on a free loopback port with a generated key pair, connects a
    WebSocket client, runs real wsconn command lines against it and shows what the client
    received. Leaves nothing running. Needs the local extra: pip install "wsconn[local]".
    """
    _local_extra().run_demo()


@cli.command(epilog=EXIT_EPILOG)
@click.argument("url")
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Add a header to the upgrade request (repeatable).",
)
@click.option(
    "--subprotocol",
    "subprotocols",
    multiple=True,
    metavar="NAME",
    help="Offer this subprotocol (repeatable).",
)
@click.option(
    "--sign", is_flag=True, help="SigV4-sign the upgrade (IAM authorization on $connect)."
)
@click.option(
    "--presign", is_flag=True, help="Sign in the query string instead of headers (implies --sign)."
)
@click.option(
    "--region",
    "listen_region",
    metavar="REGION",
    callback=_region,
    help="Region to sign for (default: from the host, else AWS_REGION / profile).",
)
@click.option("--profile", "listen_profile", metavar="NAME", help="AWS profile to sign with.")
@click.option(
    "--whoami",
    is_flag=True,
    help="Learn this connection's id from the service (a probe answered by the Forbidden frame).",
)
@click.option(
    "--send",
    "sends",
    multiple=True,
    metavar="FRAME|@FILE",
    help="Send this frame after connecting (repeatable, in order; @FILE for a file's contents).",
)
@click.option(
    "-o",
    "--output",
    "listen_output",
    type=click.Choice(["auto", "text", "json"]),
    help="auto: rich on a terminal, one line per frame when piped; json: one event per line.",
)
@click.option(
    "--expect",
    "expects",
    multiple=True,
    metavar="REGEX",
    help="Stop (exit 0) once a message matching each REGEX has arrived (repeatable).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop (exit 0) after N messages; with --expect, they must be met within N.",
)
@click.option(
    "--timeout",
    "listen_timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Bound the whole run; an expectation not met by then exits 11.",
)
@click.option(
    "--keepalive",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Send a data frame when nothing was sent for this long (the idle timeout ignores pings).",
)
@click.option(
    "--keepalive-data",
    metavar="FRAME",
    help="The keep-alive frame [default: {}].",
)
@click.option(
    "--ca-bundle",
    "listen_ca_bundle",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="CA certificates to verify wss:// with (default: AWS_CA_BUNDLE, then certifi's).",
)
@click.option("--debug", is_flag=True, default=None, help="Show tracebacks for internal errors.")
@click.pass_context
def listen(
    ctx: click.Context,
    /,
    url: str,
    headers: tuple[str, ...],
    subprotocols: tuple[str, ...],
    sign: bool,
    presign: bool,
    listen_region: str | None,
    listen_profile: str | None,
    whoami: bool,
    sends: tuple[str, ...],
    listen_output: str | None,
    expects: tuple[str, ...],
    count: int | None,
    listen_timeout: float | None,
    keepalive: float | None,
    keepalive_data: str | None,
    listen_ca_bundle: str | None,
    debug: bool | None,
) -> None:
    """Connect to a WebSocket API as a client: print what arrives, send, check expectations.

    URL is wss:// or ws:// (an https:// stage URL is converted); its query string is kept.
    Lines piped on stdin are sent as text frames; on a terminal, lines typed at the prompt are.
    Without --expect/--count it runs until the server closes (1000/1001: exit 0) or Ctrl-C.
    Needs the local extra: pip install "wsconn[local]".

    \b
    Examples:
      wsconn listen wss://abc123.execute-api.eu-west-1.amazonaws.com/prod
      wsconn listen "$WS_URL" --sign --whoami -o json
      wsconn listen "$WS_URL" --send '{"action":"join"}' --expect '"joined"' --count 1 --timeout 10
      echo '{"action":"sendmessage","msg":"hi"}' | wsconn listen "$WS_URL?name=ci" --count 1
    """
    from wsconn.listen import listen, listen_request, prepare
    from wsconn.render import ListenOutput

    parent: Options = ctx.find_object(Options) or Options()
    streams = _streams(ctx)
    out = ListenOutput(listen_output or parent.output, streams)
    try:
        request = listen_request(
            url=url,
            headers=headers,
            subprotocols=subprotocols,
            sign=sign,
            presign=presign,
            profile=listen_profile or parent.profile,
            region=listen_region or parent.region,
            ca_bundle=listen_ca_bundle or parent.ca_bundle,
            whoami=whoami,
            sends=sends,
            expects=expects,
            count=count,
            timeout=listen_timeout,
            keepalive=keepalive,
            keepalive_data=keepalive_data,
            output_mode=out.mode,
            streams=streams,
        )
        listen(request, prepare(request), out, streams.stdin)
    except WsconnError as error:
        out.failed(error)
        raise
    finally:
        out.close()  # the terminal as it was, whatever happened


def _local_extra() -> Any:
    """wsconn.local.run, or a one-line error naming the install command if aiohttp is missing."""
    try:
        from wsconn.local import run
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in {"aiohttp", "multidict", "yarl"}:
            raise ConfigError(
                f'the local gateway needs the "local" extra ({exc.name} is not installed): '
                'pip install "wsconn[local]"'
            ) from None
        raise
    return run


def _json_requested(args: list[str]) -> bool:
    """Whether the arguments ask for JSON output (read before parsing, which may fail)."""
    for i, arg in enumerate(args):
        if arg in ("-o", "--output") and i + 1 < len(args) and args[i + 1] == "json":
            return True
        if arg in ("-ojson", "--output=json"):
            return True
    return False


def main(argv: list[str] | None = None) -> None:
    """The console script: Click's parsing, our exit codes, never a traceback for a user."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("WSCONN_DEBUG"))
    streams = Streams.from_sys()  # the one decision about terminals, for every command

    def report(error: WsconnError) -> None:
        """A failure not yet shown: one line on stderr; with -o json, its object on stdout."""
        if _json_requested(args):
            from wsconn.render import error_fields, write_json

            write_json(streams, error_fields(error))
        error.show(file=streams.stderr)

    try:
        # Without standalone mode Click returns ctx.exit()'s code instead of exiting.
        code = cli.main(args=args, prog_name="wsconn", standalone_mode=False, obj=streams)
        streams.stdout.flush()  # here, so a reader gone away is handled below, not at exit
    except WsconnError as error:
        if not error.shown:
            report(error)
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.NoArgsIsHelpError as error:  # bare `wsconn`: the help, exit 2
        error.show()
        sys.exit(ExitCode.USAGE)
    except click.UsageError as error:  # Click's parsing errors, in our one-line form
        where = error.ctx.command_path if error.ctx else "wsconn"
        message = f"{error.format_message()} (see '{where} --help')"
        if _json_requested(args):
            from wsconn.render import error_fields, write_json

            write_json(streams, error_fields(UsageError(message)))
        click.echo(f"wsconn: usage: {message}", file=streams.stderr)
        sys.exit(ExitCode.USAGE)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("wsconn: interrupted", file=streams.stderr)
        sys.exit(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be written; exit as a shell says.
        streams.silence_stdout()
        sys.exit(ExitCode.BROKEN_PIPE)
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(
            f"wsconn: internal error: {type(exc).__name__}: {exc}. This is a bug in wsconn "
            f"{__version__}; please report it"
            + ("" if debug else " with the output of the same command run with --debug"),
            file=streams.stderr,
        )
        sys.exit(ExitCode.INTERNAL)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)
