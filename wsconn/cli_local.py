"""The commands that need the local extra: `wsconn local`, `wsconn demo` and `wsconn listen`.

Registered on the group by cli.py. Like cli.py, only click and standard-library-only modules at
module level (`wsconn --help` and completion import this); each command parses, calls one
library function and renders.
"""

from __future__ import annotations

from typing import Any

import click

from wsconn.cli_options import EXIT_EPILOG, Options, checked_region, streams_of
from wsconn.errors import ConfigError, WsconnError
from wsconn.limits import IDLE_TIMEOUT, LOCAL_STAGE, MAX_DURATION


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


@click.command(
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
    "--stage",
    "local_stage",
    default=LOCAL_STAGE,
    show_default=True,
    metavar="NAME",
    help="Stage name.",
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
    type=click.Path(),
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
    type=click.Path(),
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
    "--memory-size",
    type=int,
    metavar="MB",
    help="Memory of the --handler/--route functions, enforced as Lambda does [default: 128, "
    "Lambda's]; a template's functions keep their MemorySize.",
)
@click.option(
    "--python",
    "python_path",
    metavar="PATH",
    type=click.Path(),
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
    type=click.Path(),
    help="Run the WebSocket API of this SAM / CloudFormation template (a file, or a directory "
    "with template.yaml/.yml/.json); --handler/--route win for their keys.",
)
@click.option(
    "--env-vars",
    metavar="FILE",
    type=click.Path(),
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
    memory_size: int | None,
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
            memory_size=memory_size,
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


@click.command(
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


@click.command(epilog=EXIT_EPILOG)
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
    callback=checked_region,
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
    streams = streams_of(ctx)
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
