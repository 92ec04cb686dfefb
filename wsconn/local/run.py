"""`wsconn local` and `wsconn demo`: the local gateway as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import queue
import shlex
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import click

from wsconn.errors import ConfigError, ExitCode, InternalError, UsageError
from wsconn.limits import LOCAL_STAGE
from wsconn.local.console import DemoPrinter, EventPrinter
from wsconn.local.credentials import (
    GENERATED_SOURCE,
    LocalCredentials,
    generate_credentials,
    resolve_credentials,
)
from wsconn.local.flags import BackendOptions, LoadedApp, load_app
from wsconn.local.gateway import GatewayConfig, GatewayThread, serve
from wsconn.render import printf_escape

if TYPE_CHECKING:
    from wsconn.local.template import TemplateApp


def run_local(
    *,
    host: str,
    port: int,
    stage: str | None,
    region: str | None,
    profile: str | None,
    json_events: bool,
    auth: bool,
    idle_timeout: float,
    max_duration: float,
    fault_rate: float = 0.0,
    fault_statuses: tuple[int, ...] = (500,),
    retry_after: float | None = None,
    latency: float = 0.0,
    clock_skew: float = 0.0,
    deny_methods: tuple[str, ...] = (),
    expired_token: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    backend: BackendOptions,
    python: str | None = None,
    list_routes: bool = False,
    list_json: bool = False,
) -> None:
    """Serve until Ctrl-C or SIGTERM (then every client is closed with 1001 and this returns).

    `stage` None: the template's one Stage's name, else "dev". `list_routes`: print the routes
    (as one JSON object with `list_json`) instead of serving.
    """
    from wsconn.auth import AwsConfig

    region = region or AwsConfig(profile).configured_region() or "us-east-1"
    loaded = load_app(
        backend, region=region, stage=stage, shell_env=dict(os.environ), python=python
    )
    app, template = loaded.app, loaded.template
    stage = stage or loaded.stage or LOCAL_STAGE
    if list_routes:
        _print_routes(loaded, stage, as_json=list_json)
        return
    for line in _template_lines(template):
        click.echo(f"wsconn local: {line}", err=True)
    tls = _tls_context(tls_cert, tls_key)
    credentials, source = resolve_credentials(profile)
    config = GatewayConfig(
        host=host,
        port=port,
        stage=stage,
        region=region,
        idle_timeout=idle_timeout,
        max_duration=max_duration,
        auth=auth,
        credentials=credentials,
        credential_source=source,
        fault_rate=fault_rate,
        fault_statuses=fault_statuses,
        retry_after=retry_after,
        latency=latency,
        clock_skew=clock_skew,
        deny_methods=deny_methods,
        expired_token=expired_token,
        tls=tls,
        app=app,
        python=python,
    )
    _quiet_logs()
    printer = EventPrinter(json_events, *_client_setup(source, credentials, profile, tls_cert))
    for note in loaded.notes:
        printer.warn(note)
    if not auth:
        printer.warn(
            "signature checking is OFF (--no-auth): every request is accepted, signed or not"
        )
    if fault_rate:
        printer.warn(
            f"injecting faults: {fault_rate:.0%} of management requests answer "
            + "/".join(str(status) for status in fault_statuses)
        )
    try:
        asyncio.run(_until_stopped(serve(config, printer)))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {_os_words(exc)}") from None


def _os_words(exc: OSError) -> str:
    """The OS's words for a failed bind, and what to do when the port is taken.

    asyncio's own message holds a Python repr of the address ("('127.0.0.1', 8080)").
    """
    if not exc.errno:
        return exc.strerror or str(exc)
    words = os.strerror(exc.errno)
    words = words[:1].lower() + words[1:]
    if exc.errno == errno.EADDRINUSE:
        words += " (is another wsconn local running? --port 0 picks any free port)"
    return words


def _template_lines(template: TemplateApp | None) -> list[str]:
    if template is None:
        return []
    from wsconn.local.template import startup_lines

    return startup_lines(template)


def _print_routes(loaded: LoadedApp, stage: str, *, as_json: bool) -> None:
    """`wsconn local --list`: the routes on stdout; with a template, what it noted on stderr."""
    from wsconn.local.template import list_json, list_text, listed_routes

    app, template = loaded.app, loaded.template
    routes = template.routes if template is not None else listed_routes(app)
    if app.catch_all is not None:
        routes = (*routes, *listed_routes(app, catch_all_only=True))
    if as_json:
        about = {"template": str(template.path), "api": template.api} if template else {}
        data = list_json(app.route_selection, routes, **about, stage=stage)
        click.echo(json.dumps(data, ensure_ascii=False))
    else:
        click.echo(list_text(app.route_selection, routes))
    if template is not None:
        for note in template.warnings():
            click.echo(f"wsconn local: WARNING: {note}", err=True)


def _client_setup(
    source: str, credentials: LocalCredentials, profile: str | None, tls_cert: str | None
) -> tuple[list[tuple[str, str]], str]:
    """What the banner tells a client's shell to set besides the endpoint and region, and a note.

    The generated pair is printed (it is good for this gateway only); a user's own secret never is.
    """
    client_env: list[tuple[str, str]] = []
    if source == GENERATED_SOURCE:
        client_env = [
            ("AWS_ACCESS_KEY_ID", credentials.access_key),
            ("AWS_SECRET_ACCESS_KEY", credentials.secret_key),
        ]
        note = (
            "\n  # no AWS credentials were found: it trusts this generated key pair, good for "
            "this gateway only"
        )
    elif profile:
        client_env = [("AWS_PROFILE", profile)]
        note = ""
    else:
        note = f"\n  # with the AWS credentials this shell has ({source}): the gateway trusts them"
    if tls_cert:
        note += (
            f"\n  # https with {tls_cert}: if its CA is not trusted by default, "
            "also export AWS_CA_BUNDLE=/path/to/ca.pem"
        )
    return client_env, note


async def _until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` until Ctrl-C or SIGTERM cancels it; a second Ctrl-C quits at once (exit 130).

    asyncio.run() turns Ctrl-C into a cancellation of the main task only from Python 3.11; on 3.10
    KeyboardInterrupt escapes the loop, the clients' sessions are cancelled mid-close (1006) and
    the command exits 130. Handling the signals here behaves the same on every version. A signal
    the parent ignores (SIGINT in a shell's background job) stays ignored.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    handled: list[int] = []
    stopping = False

    def stop(signum: int) -> None:
        nonlocal stopping
        if stopping and signum == signal.SIGINT:
            _quit_now()
        stopping = True
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue  # ignored by whoever started us: leave it so
        try:
            loop.add_signal_handler(signum, stop, signum)
        except NotImplementedError:  # Windows: no add_signal_handler
            signal.signal(signum, lambda sig, _frame: loop.call_soon_threadsafe(stop, sig))
        handled.append(signum)
    try:
        await task
    finally:
        for handled_signum in handled:
            _restore(loop, handled_signum)


def _quit_now() -> None:
    """A second Ctrl-C: leave at once, as asked, without waiting for the shutdown in progress.

    Not KeyboardInterrupt: asyncio.run() would cancel aiohttp's tasks mid-shutdown, and aiohttp
    logs tracebacks for that. The kernel closes every socket as the process ends.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write("wsconn: interrupted\n")
        sys.stderr.flush()
    os._exit(ExitCode.INTERRUPTED)


def _restore(loop: asyncio.AbstractEventLoop, signum: int) -> None:
    """Put back the signal's Python default (KeyboardInterrupt for SIGINT)."""
    try:
        loop.remove_signal_handler(signum)
    except NotImplementedError:
        default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, default)


def _quiet_logs() -> None:
    """No tracebacks on a user's terminal: aiohttp answers malformed requests with 400 itself
    (its log would print a traceback for each), and the gateway's own failures are `error`
    events; what remains is one line each."""

    class OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            cause = f" ({record.exc_info[1]!r})" if record.exc_info else ""
            return f"wsconn local: {record.getMessage()}{cause}"

    logging.getLogger("aiohttp").addHandler(logging.NullHandler())
    logging.getLogger("aiohttp").propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine())
    gateway_log = logging.getLogger("wsconn.local")
    gateway_log.addHandler(handler)
    gateway_log.setLevel(logging.WARNING)
    gateway_log.propagate = False


def _tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from PEM files, or None for plain http/ws."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot use {cert} / {key} for TLS: {exc}") from None
    return context


@dataclass
class _Client:
    """A WebSocket client in its own thread, as a browser or app would be."""

    url: str
    received: queue.Queue[tuple[str, str | bytes]] = field(default_factory=queue.Queue)
    close_code: int | None = None
    closed: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True).start()

    async def _run(self) -> None:
        headers = {"User-Agent": "wsconn-demo-client/1.0"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(self.url, headers=headers) as ws,
            ):
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        self.received.put(("text", message.data))
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        self.received.put(("binary", message.data))
                self.close_code = ws.close_code
        finally:
            self.closed.set()


def run_demo() -> None:
    """Start a gateway on a free port, connect a client, and run real wsconn commands against it."""
    out = DemoPrinter()
    credentials = generate_credentials()
    config = GatewayConfig(port=0, region="us-east-1", credentials=credentials)
    connected: queue.Queue[str] = queue.Queue()

    def on_event(event: dict[str, object]) -> None:
        if event["event"] == "connect":
            connected.put(str(event["connectionId"]))

    # The commands run as separate processes with only the generated keys: the user's own
    # credentials, profile and endpoint settings are neither used nor needed.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WSCONN_"))}
    env.update(
        AWS_ACCESS_KEY_ID=credentials.access_key,
        AWS_SECRET_ACCESS_KEY=credentials.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        NO_PROXY="127.0.0.1,localhost",
    )
    with GatewayThread(config, on_event=on_event) as gateway:
        out.title(
            f"A local gateway is listening: WebSocket {gateway.ws_url}, "
            f"management API {gateway.endpoint}/@connections/{{id}} (SigV4 checked)."
        )
        client = _Client(gateway.ws_url)
        client.start()
        try:
            connection_id = connected.get(timeout=10)
        except queue.Empty:
            raise InternalError("the demo's WebSocket client could not connect") from None
        out.note(f"A WebSocket client connected; its connection id is {connection_id}")
        out.note(
            "The commands below run with a throwaway key pair this gateway trusts; to paste them "
            f"while it runs: export AWS_ACCESS_KEY_ID={credentials.access_key} "
            f"AWS_SECRET_ACCESS_KEY={credentials.secret_key} AWS_DEFAULT_REGION=us-east-1"
        )

        def wsconn(*args: str, expect: int, stdin: bytes | None = None) -> None:
            shown = "wsconn " + " ".join(shlex.quote(a) for a in args)
            if stdin is not None:
                shown = f"printf {shlex.quote(printf_escape(stdin))} | {shown}"
            out.command(shown)
            done = subprocess.run(
                [sys.executable, "-m", "wsconn", *args],
                input=stdin if stdin is not None else b"",
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            out.output(
                done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
            )
            out.exit_code(done.returncode, expect)
            if done.returncode != expect:
                raise InternalError(f"`{shown}` exited {done.returncode}, expected {expect}")

        def client_received() -> None:
            try:
                kind, data = client.received.get(timeout=10)
            except queue.Empty:
                raise InternalError("the client received nothing") from None
            out.received(kind, data)

        endpoint = ["--endpoint", gateway.endpoint]
        wsconn("send", *endpoint, connection_id, "Hello from wsconn!", expect=0)
        client_received()
        wsconn("send", *endpoint, connection_id, expect=0, stdin=b"\x00\x01binary\xff")
        client_received()
        wsconn("status", *endpoint, connection_id, expect=0)
        wsconn("disconnect", *endpoint, connection_id, expect=0)
        client.closed.wait(10)
        out.note(f"The client saw the connection close (code {client.close_code}).")
        wsconn("send", *endpoint, connection_id, "anyone there?", expect=3)
        out.note(
            "Exit 3 means gone: the connection is closed, never existed, or is still in $connect."
        )
    out.done(
        "Done: the gateway is stopped. Next: `wsconn local` to keep one running, "
        "and `wsconn --help` for every option."
    )
