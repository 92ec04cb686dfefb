"""The Click group and commands: parse, call the layer below, hand the result to render.

Only click and wsconn.errors are imported at module level: `wsconn --help` and shell completion
must not pay for botocore, requests, rich or aiohttp.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

from wsconn import __version__
from wsconn.errors import ConfigError, ExitCode, WsconnError, exit_code_table

if TYPE_CHECKING:
    from wsconn.auth import AwsConfig
    from wsconn.client import ManagementClient
    from wsconn.endpoint import Endpoint, Target
    from wsconn.render import Output

T = TypeVar("T")
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
    "\n\b\nEndpoint, in this order: a connection URL as CONNECTION_ID; --endpoint URL;\n"
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
    timeout: float = 10.0
    retries: int = 3
    ca_bundle: str | None = None
    verbose: int = 0
    dry_run: bool = False

    def merged(self, values: dict[str, Any]) -> Options:
        """These options overridden by the ones given (not None, not 0) in `values`."""
        given = {k: v for k, v in values.items() if k in self._fields and v is not None}
        given["verbose"] = self.verbose + (values.get("verbose") or 0)
        return self._replace(**given)


_SHARED_OPTIONS = [
    click.option(
        "--endpoint",
        "--endpoint-url",
        "endpoint",
        metavar="URL",
        help="Management endpoint URL: https://, http://, or the clients' wss:// or ws://.",
    ),
    click.option("--api-id", metavar="ID", help="API id; use with --stage (and --region)."),
    click.option("--stage", metavar="NAME", help="Stage name, e.g. prod or $default."),
    click.option(
        "--region",
        metavar="REGION",
        callback=lambda _ctx, _param, value: _region(value),
        help="AWS region (default: from the host or profile).",
    ),
    click.option(
        "--profile", metavar="NAME", help="AWS profile from ~/.aws/config (as the AWS CLI)."
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
        help="Connect and read timeout per attempt [default: 10].",
    ),
    click.option(
        "--retries",
        type=click.IntRange(min=0, max=10),
        metavar="N",
        help="Retries for 429, 5xx and connection errors [default: 3].",
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


# A real connection id may start with '-' (15 of [A-Za-z0-9_-], then '='): Click would read it
# as an option. Such a token is marked so Click takes it as an argument, and unmarked after.
_DASH_ID = re.compile(r"-[A-Za-z0-9_-]{14}=")
_MARK = "\x00"


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
        return super().parse_args(ctx, marked)


def _unmark(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    return value[1:] if value and value.startswith(_MARK) else value


_BULK_OPTIONS = [
    click.option(
        "--ids",
        metavar="FILE|-",
        help="Many connections: one id or connection URL per line (- for stdin); "
        "blank lines and # comments skipped.",
    ),
    click.option(
        "-j",
        "--concurrency",
        type=click.IntRange(1, 256),
        metavar="N",
        help="With --ids: requests in flight [default: 16].",
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
    click.option("--unique", is_flag=True, default=None, help="With --ids: skip ids listed twice."),
]


class Bulk(NamedTuple):
    """The fan-out options, when --ids is given."""

    ids: str
    concurrency: int
    rate: float | None
    gone_out: str | None
    failed_out: str | None
    unique: bool


def _bulk(values: dict[str, Any], connection: str | None) -> Bulk | None:
    """The fan-out options, or None for a single call; usage errors for a mix of the two."""
    from wsconn.errors import UsageError

    ids = values.get("ids")
    extra = [
        name
        for name in ("concurrency", "rate", "gone_out", "failed_out", "unique")
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
    return Bulk(
        ids,
        values.get("concurrency") or 16,
        values.get("rate"),
        values.get("gone_out"),
        values.get("failed_out"),
        bool(values.get("unique")),
    )


def bulk_options(command: F) -> F:
    for option in reversed(_BULK_OPTIONS):
        command = option(command)
    return command


def _region(value: str | None) -> str | None:
    from wsconn.endpoint import check_region

    return None if value is None else check_region(value, "--region")


def shared_options(command: F) -> F:
    for option in reversed(_SHARED_OPTIONS):
        command = option(command)
    return command


def _options(ctx: click.Context, values: dict[str, Any]) -> Options:
    parent: Options = ctx.find_object(Options) or Options()
    return parent.merged(values)


@click.group(context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.version_option(__version__, "--version", prog_name="wsconn")
@shared_options
@click.pass_context
def cli(ctx: click.Context, /, **values: Any) -> None:
    """Send to, inspect and disconnect Amazon API Gateway WebSocket connections.

    Each call is signed with AWS SigV4 using the same credentials the AWS CLI would use.
    """
    ctx.obj = Options().merged(values)


@cli.command(cls=ConnectionCommand, epilog=EXIT_EPILOG)
@click.argument("connection", required=False, callback=_unmark)
@click.argument("message", required=False, callback=_unmark)
@click.option(
    "-d",
    "--data",
    metavar="TEXT|@FILE|@-",
    help="The message: TEXT, @FILE (bytes as they are), or @- for stdin.",
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
    """Send MESSAGE to one connection (POST @connections/{id}).

    CONNECTION is a connection id or a whole connection URL. The message is MESSAGE, -d TEXT,
    -d @FILE, -d @-, or standard input when piped: exactly those bytes, at most 131072.

    \b
    Examples:
      wsconn send --endpoint https://abc123.execute-api.us-east-1.amazonaws.com/prod R0oXAdfD0kwCH6w= hi
      echo '{"type":"ping"}' | wsconn send R0oXAdfD0kwCH6w=
      wsconn send -d @image.png https://abc123.execute-api.eu-west-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w=
      jq -r .connectionId conns.json | wsconn send --ids - -d '{"type":"refresh"}' --gone-out gone.txt
    """
    from wsconn.message import read_message

    opts = _options(ctx, values)
    bulk = _bulk(values, connection)
    if bulk is not None:
        from wsconn.errors import UsageError

        if data is None or message is not None:
            raise UsageError("with --ids, give the message with -d TEXT or -d @FILE")
        if data == "@-" and bulk.ids == "-":
            raise UsageError("standard input cannot hold both the ids and the message")
        payload = read_message(None, data, wait=opts.timeout)
        ctx.exit(
            _run_bulk(
                opts,
                bulk,
                "sent",
                "POST",
                payload,
                lambda c, cid: c.post_to_connection(cid, payload),
            )
        )
    out = _output(opts)
    try:
        payload = read_message(message, data, wait=opts.timeout)
    except WsconnError as error:
        out.failed(error, None)
        raise
    out.sent(
        _call(
            opts,
            out,
            connection or "",
            "POST",
            payload,
            lambda c, cid: c.post_to_connection(cid, payload),
        )
    )


@cli.command(cls=ConnectionCommand, epilog=EXIT_EPILOG)
@click.argument("connection", required=False, callback=_unmark)
@click.option(
    "--watch", is_flag=True, help="Poll until the connection is gone (then exit 3); Ctrl-C stops."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="With --watch: time between polls.",
)
@bulk_options
@shared_options
@click.pass_context
def status(
    ctx: click.Context, /, connection: str | None, watch: bool, interval: float, **values: Any
) -> None:
    """Show one connection's state (GET @connections/{id}).

    Connected at, last active, idle time, source IP, user agent, and the time left until the
    10-minute idle timeout and the 2-hour limit. Exit 3 if it is gone.

    \b
    Examples:
      wsconn status --endpoint wss://abc123.execute-api.us-east-1.amazonaws.com/prod R0oXAdfD0kwCH6w=
      wsconn status -o json "$CALLBACK_URL/@connections/$ID" | jq .lastActiveAt
      wsconn status --ids ids.txt -o json | jq -r 'select(.outcome == "connected") | .connectionId'
      wsconn status --watch --interval 5 "$CONNECTION_URL"
    """
    opts = _options(ctx, values)
    bulk = _bulk(values, connection)
    if bulk is not None:
        if watch:
            from wsconn.errors import UsageError

            raise UsageError("--watch follows one connection: give CONNECTION, not --ids")
        ctx.exit(
            _run_bulk(opts, bulk, "connected", "GET", b"", lambda c, cid: c.get_connection(cid))
        )
    out = _output(opts)
    if watch:
        _call(opts, out, connection or "", "GET", b"", lambda c, cid: _watch(c, cid, out, interval))
        return
    out.status(_call(opts, out, connection or "", "GET", b"", lambda c, cid: c.get_connection(cid)))


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
      wsconn disconnect "$(cat stuck-connection-url.txt)" && echo closed
      wsconn disconnect --ids stuck.txt --rate 50 --failed-out retry.txt
    """
    opts = _options(ctx, values)
    bulk = _bulk(values, connection)
    if bulk is not None:
        ctx.exit(
            _run_bulk(
                opts, bulk, "disconnected", "DELETE", b"", lambda c, cid: c.delete_connection(cid)
            )
        )
    out = _output(opts)
    out.disconnected(
        _call(opts, out, connection or "", "DELETE", b"", lambda c, cid: c.delete_connection(cid))
    )


@cli.command(cls=ConnectionCommand, epilog=EXIT_EPILOG)
@click.argument("connection", required=False, callback=_unmark)
@shared_options
@click.pass_context
def config(ctx: click.Context, /, connection: str | None, **values: Any) -> None:
    """Show how each setting resolves, and from where (like `aws configure list`).

    Endpoint and its source, region and its source, profile, credential source with the access
    key id masked to its last 4 characters, timeout, retries and CA bundle. Give CONNECTION (an
    id or URL) to resolve the endpoint as a call with it would. Nothing is sent.

    \b
    Examples:
      wsconn config
      wsconn config --profile prod -o json | jq .region
      wsconn config "$CONNECTION_URL"
    """
    from wsconn.auth import AwsConfig

    opts = _options(ctx, values)
    aws = AwsConfig(opts.profile)
    rows: list[tuple[str, str | None, str]] = []

    def row(name: str, resolve: Callable[[], tuple[str | None, str]]) -> None:
        try:
            value, source = resolve()
        except WsconnError as error:
            value, source = None, error.format_message()
        rows.append((name, value, source))

    def endpoint() -> tuple[str | None, str]:
        target = _resolve(opts, aws, connection or "CONNECTION_ID")
        return target.endpoint.url, target.endpoint.source

    def region() -> tuple[str | None, str]:
        if opts.region:
            return opts.region, "--region"
        try:
            host_region = _resolve(opts, aws, connection or "CONNECTION_ID").endpoint.host_region
        except WsconnError:
            host_region = None
        if host_region:
            return host_region, "the endpoint's host"
        return aws.configured_region_and_source()

    def credentials() -> tuple[str | None, str]:
        from wsconn.client import mask

        found = aws.credentials()
        token = ", session token set" if found.token else ""
        return f"access key {mask(found.access_key)}{token}", found.source

    def ca_bundle() -> tuple[str | None, str]:
        if opts.ca_bundle:
            return opts.ca_bundle, "--ca-bundle"
        bundle, source = aws.ca_bundle_and_source()
        return (bundle, source) if bundle else ("the default CA store (certifi)", "default")

    row("endpoint", endpoint)
    row("region", region)
    row("profile", aws.profile_and_source)
    row("credentials", credentials)
    defaults = Options()
    row(
        "timeout",
        lambda: (f"{opts.timeout:g}s", _given(opts.timeout, defaults.timeout, "--timeout")),
    )
    row("retries", lambda: (str(opts.retries), _given(opts.retries, defaults.retries, "--retries")))
    row("ca bundle", ca_bundle)
    _output(opts).settings(rows)


def _watch(client: ManagementClient, connection_id: str, out: Output, interval: float) -> None:
    """Poll one connection until it is gone: the ConnectionGone error ends it (exit 3)."""
    import time
    from datetime import datetime, timezone

    from wsconn.errors import ConnectionGone

    last_seen: datetime | None = None
    with out.watch() as view:
        while True:
            try:
                info = client.get_connection(connection_id)
            except ConnectionGone:
                view.gone(connection_id, last_seen)
                raise
            last_seen = datetime.now(timezone.utc)
            view.poll(info, interval)
            time.sleep(interval)


def _same_file(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


def _given(value: object, default: object, option: str) -> str:
    return "default" if value == default else option


@cli.command(epilog=EXIT_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="0 = any free port.",
)
@click.option("--stage", "local_stage", default="dev", show_default=True, help="Stage name.")
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
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Close a client after this long without messages.",
)
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    default=7200.0,
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
def local(
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
    fault_status: str,
    retry_after: float | None,
    latency: float,
    clock_skew: float,
    deny: tuple[str, ...],
    expired_token: bool,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run a local API Gateway WebSocket endpoint with a faithful @connections API.

    WebSocket clients connect to ws://HOST:PORT/STAGE; the management API answers at
    http://HOST:PORT/STAGE/@connections/{id} with AWS's statuses, error types and SigV4 checks,
    trusting the credentials your AWS CLI would use (or a generated pair it prints).
    Needs the local extra: pip install "wsconn[local]". Ctrl-C stops it (exit 0).

    \b
    Examples:
      wsconn local --port 8080 --stage dev
      wsconn local --json --idle-timeout 5 | tee events.jsonl
      WSCONN_ENDPOINT=http://127.0.0.1:8080/dev wsconn send "$ID" hi
      wsconn local --fault-rate 0.2 --fault-status 429,503 --retry-after 1   # test retries
    """
    _local_extra().run_local(
        host=host,
        port=port,
        stage=local_stage,
        region=local_region,
        profile=local_profile,
        json_events=json_events,
        auth=not no_auth,
        idle_timeout=idle_timeout,
        max_duration=max_duration,
        fault_rate=fault_rate,
        fault_statuses=_status_list(fault_status),
        retry_after=retry_after,
        latency=latency,
        clock_skew=clock_skew,
        deny_methods=deny,
        expired_token=expired_token,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


def _status_list(text: str) -> tuple[int, ...]:
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


@cli.command(epilog=EXIT_EPILOG)
def demo() -> None:
    """Walk through send, status and disconnect against a local gateway: no AWS account needed.

    Starts the local gateway on a free loopback port with a generated key pair, connects a
    WebSocket client, runs real wsconn command lines against it and shows what the client
    received. Leaves nothing running. Needs the local extra: pip install "wsconn[local]".
    """
    _local_extra().run_demo()


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


def _output(opts: Options) -> Output:
    from wsconn.render import Output

    return Output(opts.output, opts.verbose)


def _resolve(opts: Options, config: AwsConfig, connection: str) -> Target:
    """The target step: where CONNECTION (an id or a URL) goes, by the documented order."""
    from wsconn.endpoint import resolve_target

    return resolve_target(
        connection,
        endpoint=opts.endpoint,
        api_id=opts.api_id,
        stage=opts.stage,
        region=lambda: opts.region or config.configured_region(),
        environ=os.environ,
    )


def _open(opts: Options, config: AwsConfig, endpoint: Endpoint, **extra: Any) -> ManagementClient:
    from wsconn.client import open_client

    return open_client(
        endpoint,
        config,
        region=opts.region,
        timeout=opts.timeout,
        retries=opts.retries,
        ca_bundle=opts.ca_bundle,
        **extra,
    )


def _call(
    opts: Options,
    out: Output,
    connection: str,
    method: str,
    body: bytes,
    call: Callable[[ManagementClient, str], T],
) -> T:
    """Resolve the target and credentials, make one call; report a failure in the output mode.

    With --dry-run the signed request is printed (as a curl command) instead, and the command
    ends there with exit 0.
    """
    from wsconn.auth import AwsConfig

    connection_id: str | None = None
    try:
        config = AwsConfig(opts.profile)
        target = _resolve(opts, config, connection)
        connection_id = target.connection_id
        tracer = out.tracer()
        client = _open(opts, config, target.endpoint, tracer=tracer)
        if tracer is not None:
            tracer.resolved(client.describe())
        try:
            if opts.dry_run:
                out.dry_run(client.prepare(method, connection_id, body), client.describe())
                raise click.exceptions.Exit(ExitCode.OK)
            return call(client, connection_id)
        finally:
            client.close()
    except WsconnError as error:
        out.failed(error, connection_id)
        raise


def _run_bulk(
    opts: Options,
    bulk: Bulk,
    success_word: str,
    method: str,
    body: bytes,
    call: Callable[[ManagementClient, str], Any],
) -> int:
    """Fan one call out over --ids; every id gets a result line. Returns the run's exit code.

    With --dry-run, each id's signed request is printed instead (one curl command a line).
    """
    from wsconn import fanout
    from wsconn.auth import AwsConfig
    from wsconn.render import BulkOutput

    config = AwsConfig(opts.profile)
    config.credentials()  # no credentials: say so once, before reading a single id
    pacer = fanout.RunPacer(bulk.rate, threading.Event())

    def resolve(line: str) -> tuple[Endpoint, str]:
        target = _resolve(opts, config, line)
        return target.endpoint, target.connection_id

    def make(endpoint: Endpoint) -> ManagementClient:
        return _open(opts, config, endpoint, connections=bulk.concurrency, pacer=pacer)

    for listing in (bulk.gone_out, bulk.failed_out):
        if (
            listing
            and os.path.exists(listing)
            and bulk.ids != "-"
            and _same_file(bulk.ids, listing)
        ):
            from wsconn.errors import UsageError

            raise UsageError(
                f"{listing} is the --ids file: writing it would empty it before it is read; "
                "write the list to another file"
            )
    clients = fanout.ClientCache(make, resolve)
    if opts.dry_run:
        printer = _output(opts)
        try:
            with fanout.open_ids(bulk.ids) as ids:
                for line in fanout.read_ids(ids, bulk.unique):
                    client, connection_id = clients(line)
                    printer.dry_run(client.prepare(method, connection_id, body), client.describe())
        finally:
            clients.close()
        return ExitCode.OK
    out = BulkOutput(opts.output, success_word, None)
    if out.show_progress:
        out.total = fanout.count_ids(bulk.ids, bulk.unique)
    with (
        fanout.open_ids(bulk.ids) as ids,
        fanout.open_list(bulk.gone_out) as gone_out,
        fanout.open_list(bulk.failed_out) as failed_out,
    ):
        run = fanout.FanOut(
            ids=ids,
            unique=bulk.unique,
            concurrency=bulk.concurrency,
            pacer=pacer,
            client_for=clients,
            call=call,
        )
        try:
            code = fanout.run(run, out, gone_out=gone_out, failed_out=failed_out)
        finally:
            clients.close()
    if run.input_abandoned:
        # The reader thread is still blocked on the input: interpreter shutdown would wait for
        # its lock (and abort). The lists are closed, the output flushed: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> None:
    """The console script: Click's parsing, our exit codes, never a traceback for a user."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("WSCONN_DEBUG"))
    try:
        # Without standalone mode Click returns ctx.exit()'s code instead of exiting.
        code = cli.main(args=args, prog_name="wsconn", standalone_mode=False)
        sys.stdout.flush()  # here, so a reader gone away is handled below, not at exit
    except WsconnError as error:
        if not error.shown:
            error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.NoArgsIsHelpError as error:  # bare `wsconn`: the help, exit 2
        error.show()
        sys.exit(ExitCode.USAGE)
    except click.UsageError as error:  # Click's parsing errors, in our one-line form
        where = error.ctx.command_path if error.ctx else "wsconn"
        click.echo(f"wsconn: usage: {error.format_message()} (see '{where} --help')", err=True)
        sys.exit(ExitCode.USAGE)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("wsconn: interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be written; exit as a shell says.
        from wsconn.render import silence_stdout

        silence_stdout()
        sys.exit(ExitCode.BROKEN_PIPE)
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(
            f"wsconn: internal error: {type(exc).__name__}: {exc}. This is a bug in wsconn "
            f"{__version__}; please report it"
            + ("" if debug else " with the output of the same command run with --debug"),
            err=True,
        )
        sys.exit(ExitCode.INTERNAL)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)
