"""The pytest plugin: ``wsconn_local``, local gateways as a fixture for a backend's own tests.

``pip install "wsconn[local]"`` registers it (entry point ``pytest11``). pytest loads every
installed plugin in every project of the environment, so this module imports only pytest and the
standard library: the gateway (``wsconn.local``, aiohttp) is imported inside the fixture.

::

    def test_chat(wsconn_local):
        gw = wsconn_local(handler="app:handler", env={"table_name": "chat"})
        alice, bob = gw.connect(query={"name": "alice"}), gw.connect(query={"name": "bob"})
        alice.send('{"action": "sendmessage", "msg": "hi"}')
        assert bob.receive(timeout=5) == "alice: hi"
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

if TYPE_CHECKING:
    import aiohttp

    from wsconn.local.credentials import LocalCredentials
    from wsconn.local.flags import BackendOptions
    from wsconn.local.gateway import GatewayConfig, GatewayThread

WAIT = 10.0  # seconds a call waits by default before failing the test

Event = dict[str, Any]

# `wsconn local`'s options that describe the backend (passed to the CLI's own app builder) ...
_APP_OPTIONS = {
    "handler",
    "route",
    "routes",
    "code_dir",
    "route_selection",
    "two_way",
    "env",
    "env_file",
    "handler_timeout",
    "memory_size",
    "authorizer",
    "identity_source",
    "connect_auth",
    "template",
}
# ... those that go with template= (as `wsconn local --template`'s) ...
_TEMPLATE_OPTIONS = {"parameter_overrides", "env_vars", "lambda_endpoint", "api"}
# ... and those that describe the gateway (GatewayConfig's fields, under the CLI's names).
_GATEWAY_OPTIONS = {
    "stage",
    "region",
    "idle_timeout",
    "max_duration",
    "no_auth",
    "fault_rate",
    "fault_status",
    "retry_after",
    "latency",
    "clock_skew",
    "deny",
    "expired_token",
    "python",
}


class ConnectionClosed(Exception):
    """The client's connection is closed: nothing more will arrive."""


class Client:
    """A WebSocket client of one local gateway (its frames are read in the background)."""

    def __init__(self, loop: _Loop, ws: aiohttp.ClientWebSocketResponse, connection_id: str):
        self.connection_id = connection_id
        self._loop = loop
        self._ws = ws
        self._frames: queue.Queue[str | bytes | None] = queue.Queue()
        self._closed = threading.Event()
        self.close_code: int | None = None  # set once the connection is closed
        self.close_reason: str = ""
        loop.submit(self._read())

    async def _read(self) -> None:
        import aiohttp

        try:
            async for message in self._ws:
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._frames.put(message.data)
                elif message.type == aiohttp.WSMsgType.CLOSE:
                    self.close_reason = str(message.extra or "")
        finally:
            self.close_code = self._ws.close_code
            self._frames.put(None)
            self._closed.set()

    def send(self, data: str | bytes) -> None:
        """Send a text frame (str) or a binary frame (bytes)."""
        send = self._ws.send_str(data) if isinstance(data, str) else self._ws.send_bytes(data)
        self._loop.run(send, WAIT)

    def receive(self, timeout: float = WAIT) -> str | bytes:
        """The next frame (text as str, binary as bytes); TimeoutError if none comes in time,
        ConnectionClosed once the connection is closed and every frame was read."""
        try:
            frame = self._frames.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.connection_id} received nothing in {timeout:g}s") from None
        if frame is None:
            self._frames.put(None)  # closed stays closed
            raise ConnectionClosed(
                f"{self.connection_id} is closed ({self.close_code} {self.close_reason})".rstrip()
            )
        return frame

    def close(self, code: int = 1000) -> None:
        """Close with `code` and wait for the server's answer."""
        if not self._ws.closed:
            self._loop.run(self._ws.close(code=code), WAIT)
        self.wait_closed()

    def wait_closed(self, timeout: float = WAIT) -> int | None:
        """Wait until the connection is closed (by either side); its close code."""
        if not self._closed.wait(timeout):
            raise TimeoutError(f"{self.connection_id} still open after {timeout:g}s")
        return self.close_code

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


class _Loop:
    """An asyncio loop in a daemon thread, for the clients of one test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="wsconn-testing-clients", daemon=True
        )
        self._thread.start()
        self._session: aiohttp.ClientSession | None = None

    def submit(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Any, timeout: float) -> Any:
        return self.submit(coroutine).result(timeout)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            async def make() -> aiohttp.ClientSession:
                return aiohttp.ClientSession()

            self._session = self.run(make(), WAIT)
        return self._session

    def stop(self) -> None:
        if self._session is not None:
            self.run(self._session.close(), WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()


class _Events:
    """The gateway's JSON events so far, appended from its thread; waitable."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._changed = threading.Condition()

    def append(self, event: Event) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def all(self) -> list[Event]:
        with self._changed:
            return list(self._events)

    def wait(self, match: Callable[[Event], bool], timeout: float, after: int = 0) -> Event:
        found: list[Event] = []

        def ready() -> bool:
            found[:] = [event for event in self._events[after:] if match(event)][:1]
            return bool(found)

        with self._changed:
            if not self._changed.wait_for(ready, timeout=timeout):
                raise TimeoutError(f"no such event in {timeout:g}s; the events: {self._events}")
        return found[0]


class LocalGateway:
    """One running `wsconn local` gateway, as ``wsconn_local(...)`` returns it."""

    def __init__(self, thread: GatewayThread, events: _Events, loop: _Loop) -> None:
        self._thread = thread
        self._events = events
        self._loop = loop
        self._connect_lock = threading.Lock()
        self.region: str = thread.config.region
        self.stage: str = thread.config.stage

    @property
    def endpoint(self) -> str:
        """The @connections endpoint, e.g. ``http://127.0.0.1:PORT/dev``."""
        return self._thread.endpoint

    @property
    def ws_url(self) -> str:
        """The clients' URL, e.g. ``ws://127.0.0.1:PORT/dev``."""
        return self._thread.ws_url

    @property
    def events(self) -> list[Event]:
        """The gateway's JSON events so far (as `wsconn local --json` prints them)."""
        return self._events.all()

    def wait_for(self, event: str | None = None, timeout: float = WAIT, **fields: Any) -> Event:
        """The first event (past or coming) named `event` whose fields equal `fields`."""

        def match(candidate: Event) -> bool:
            return (event is None or candidate.get("event") == event) and all(
                candidate.get(name) == value for name, value in fields.items()
            )

        return self._events.wait(match, timeout)

    def connect(
        self,
        *,
        query: Mapping[str, str] | Sequence[tuple[str, str]] | str | None = None,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = (),
        sign: bool = False,
        timeout: float = WAIT,
    ) -> Client:
        """A connected client (its `$connect` ran and passed), with its `.connection_id`.

        `sign=True` SigV4-signs the upgrade (for ``connect_auth="iam"``). A refused handshake
        raises ``aiohttp.WSServerHandshakeError`` (its ``.status`` is the HTTP status).
        """
        from yarl import URL

        from wsconn.listen import ListenRequest, prepare

        text = query if isinstance(query, str) else urlencode(query or {})
        url = self.ws_url + (f"?{text}" if text else "")
        handshake = prepare(
            ListenRequest(
                url=url,
                headers=tuple((headers or {}).items()),
                sign="headers" if sign else "none",
                region=self.region,
            )
        )
        # One handshake at a time: the gateway's next `connect` event is this client's.
        with self._connect_lock:
            before = len(self._events.all())
            ws = self._loop.run(
                self._loop.session().ws_connect(
                    URL(handshake.target, encoded=True),
                    headers=list(handshake.headers),
                    protocols=tuple(subprotocols),
                ),
                timeout,
            )
            connected = self._events.wait(
                lambda event: event.get("event") == "connect", timeout, after=before
            )
        return Client(self._loop, ws, str(connected["connectionId"]))

    # -- the @connections API, through wsconn's own client ---------------------------------------

    def post_to_connection(self, connection_id: str, data: str | bytes) -> None:
        """POST a message to a connection (ConnectionGone if it is not connected)."""
        payload = data.encode() if isinstance(data, str) else data
        self._call(lambda client: client.post_to_connection(connection_id, payload))

    def get_connection(self, connection_id: str) -> dict[str, Any]:
        """GET a connection: ``{"connectedAt", "identity": {"sourceIp", "userAgent"},
        "lastActiveAt"}``, as the service answers it."""
        info = self._call(lambda client: client.get_connection(connection_id))
        return dict(info.fields)

    def delete_connection(self, connection_id: str) -> None:
        """DELETE a connection: the gateway closes that client (1000)."""
        self._call(lambda client: client.delete_connection(connection_id))

    def _call(self, call: Callable[[Any], Any]) -> Any:
        from wsconn.calls import Resolver, Settings
        from wsconn.endpoint import parse_endpoint

        settings = Settings(region=self.region, timeout=WAIT, retries=0)
        client = (
            Resolver(settings).for_endpoint(parse_endpoint(self.endpoint, "wsconn_local")).client()
        )
        try:
            return call(client)
        finally:
            client.close()


def _backend(options: dict[str, Any]) -> BackendOptions:
    """`wsconn local`'s app options from the fixture's keyword arguments (which also take
    mappings for ``env``/``routes`` and single strings where the CLI repeats an option)."""
    from wsconn.local.flags import BackendOptions

    template = options.pop("template", None)
    template_only = {name: options.pop(name) for name in _TEMPLATE_OPTIONS & set(options)}
    if template is None and template_only:
        raise TypeError(f"{sorted(template_only)[0]}= goes with template=")
    env = options.pop("env", ())
    if isinstance(env, Mapping):
        env = [f"{key}={value}" for key, value in env.items()]
    routes = options.pop("routes", None)
    route = list(options.pop("route", ()))
    if isinstance(routes, Mapping):
        route += [f"{key}={target}" for key, target in routes.items()]
    elif routes is not None:
        route += list(routes)
    two_way = options.pop("two_way", ())
    overrides = template_only.pop("parameter_overrides", ())
    return BackendOptions(
        route=route,
        env=env,
        two_way=[two_way] if isinstance(two_way, str) else list(two_way),
        template=template,
        parameter_overrides=[overrides] if isinstance(overrides, str) else list(overrides),
        **template_only,
        **options,
    )


def _config(credentials: LocalCredentials, options: dict[str, Any]) -> GatewayConfig:
    import os

    from wsconn.limits import LOCAL_STAGE
    from wsconn.local.flags import load_app
    from wsconn.local.gateway import GatewayConfig

    known = _APP_OPTIONS | _TEMPLATE_OPTIONS | _GATEWAY_OPTIONS
    unknown = set(options) - known
    if unknown:
        raise TypeError(
            f"wsconn_local() got unknown options {sorted(unknown)}; it takes `wsconn local`'s: "
            + ", ".join(sorted(known))
        )
    gateway = {name: options.pop(name) for name in _GATEWAY_OPTIONS & set(options)}
    region = gateway.pop("region", "us-east-1")
    stage = gateway.pop("stage", None)
    statuses = gateway.pop("fault_status", (500,))
    if isinstance(statuses, str):
        statuses = tuple(int(part) for part in statuses.split(","))
    elif isinstance(statuses, int):
        statuses = (statuses,)
    deny = gateway.pop("deny", ())
    # As `wsconn local` builds it: the flags, or the template with the flags on top; a
    # template's python3.X runtime under its own interpreter.
    loaded = load_app(
        _backend(options),
        region=region,
        stage=stage,
        shell_env=dict(os.environ),
        python=gateway.get("python"),
    )
    return GatewayConfig(
        port=0,
        region=region,
        stage=stage or loaded.stage or LOCAL_STAGE,
        credentials=credentials,
        credential_source="wsconn_local",
        auth=not gateway.pop("no_auth", False),
        fault_statuses=tuple(statuses),
        deny_methods=(deny,) if isinstance(deny, str) else tuple(deny),
        app=loaded.app,
        **gateway,
    )


@pytest.fixture
def wsconn_local(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., LocalGateway]]:
    """Start a local gateway per call, with `wsconn local`'s options as keyword arguments
    (``handler="app:handler"``, ``env={...}``, ``idle_timeout=5``, ``connect_auth="iam"`` ...).

    Each listens on a free loopback port and trusts a key pair made for this test, exported to
    the test's environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``) so
    that boto3 and wsconn sign for it. Every gateway is stopped when the test ends.
    """
    started: list[tuple[GatewayThread, _Loop]] = []
    credentials: list[LocalCredentials] = []

    def start(**options: Any) -> LocalGateway:
        try:
            from wsconn.local.credentials import generate_credentials
            from wsconn.local.gateway import GatewayThread
        except ImportError as exc:
            pytest.fail(
                f'wsconn_local needs the "local" extra ({exc.name} is not installed): '
                'pip install "wsconn[local]"',
                pytrace=False,
            )

        if not credentials:
            credentials.append(generate_credentials())
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials[0].access_key)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials[0].secret_key)
            for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CREDENTIAL_EXPIRATION"):
                monkeypatch.delenv(name, raising=False)
        config = _config(credentials[0], dict(options))
        monkeypatch.setenv("AWS_REGION", config.region)
        monkeypatch.setenv("AWS_DEFAULT_REGION", config.region)
        events = _Events()
        thread = GatewayThread(config, on_event=events.append)
        thread.start()
        loop = _Loop()
        started.append((thread, loop))
        return LocalGateway(thread, events, loop)

    try:
        yield start
    finally:
        for thread, loop in reversed(started):
            thread.stop()
            loop.stop()
