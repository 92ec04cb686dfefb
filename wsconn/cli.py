"""The Click group and commands: parse, call one library function (wsconn.calls), render.

The commands that need the local extra (local, demo, listen) are defined in cli_local.py and
registered here; what every command shares is in cli_options.py.

Only click, wsconn.errors and other standard-library-only modules are imported at module level:
`wsconn --help` and shell completion must not pay for botocore, requests, rich or aiohttp.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from wsconn import __version__
from wsconn.cli_local import demo, listen, local
from wsconn.cli_options import EXIT_EPILOG, Options, checked_region, streams_of
from wsconn.completion import data_value, profile_names
from wsconn.errors import ExitCode, UsageError, WsconnError
from wsconn.limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_INTERVAL,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_PAYLOAD,
    MAX_PROCESSES,
)
from wsconn.streams import Streams

if TYPE_CHECKING:
    from wsconn.calls import Bulk, Operation
    from wsconn.render import Output

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

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


def _stage(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise UsageError(
            "--stage is empty: an unquoted $default is expanded by the shell to nothing; "
            "quote it: --stage '$default'"
        )
    return value


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
        callback=checked_region,
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


def _output(ctx: click.Context, opts: Options) -> Output:
    from wsconn.render import Output

    return Output(opts.output, opts.verbose, opts.quiet, streams_of(ctx))


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


# Defined in cli_local.py (their options are most of their length); commands list sorted in --help.
for _command in (local, demo, listen):
    cli.add_command(_command)


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
    streams = streams_of(ctx)
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
    streams = streams_of(ctx)
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
        problem.show(file=streams_of(ctx).stderr)
        problem.shown = True
    if problems:
        raise problems[0]


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
