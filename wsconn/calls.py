"""The call pipeline: settings resolved once, an operation as a value, and the four ways to call.

    options -> resolve() -> endpoint, region, credentials, CA bundle (each with its source)
            -> a client for that endpoint -> an Operation on one id, or on each line of --ids

`wsconn config` shows `Resolver.report()`, which runs the very steps `resolve()` runs (so what it
shows is what a call uses); a single call, --dry-run, --ids and `status --watch` are all built on
`resolve()` and an `Operation`. Nothing here writes to a terminal: results and errors go back to
the caller, progress goes to a renderer it is given.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from wsconn.auth import AwsConfig, Credentials, Signer
from wsconn.endpoint import (
    Endpoint,
    Target,
    check_region,
    decode_connection_id,
    is_url,
    parse_connection_url,
    resolve_target,
)
from wsconn.errors import ConfigError, ConnectionGone, UsageError, WsconnError
from wsconn.limits import DEFAULT_CONCURRENCY, DEFAULT_RETRIES, DEFAULT_TIMEOUT
from wsconn.timestamps import iso_ms

if TYPE_CHECKING:
    from wsconn.client import ConnectionInfo, ManagementClient, Pacer, Prepared, Result, Tracer
    from wsconn.fanout import ClientCache, Renderer

R = TypeVar("R", "Result", "ConnectionInfo")

# What `wsconn config` resolves the endpoint with when no CONNECTION is given: any id will do.
_ANY_ID = "CONNECTION_ID"


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the user gave that decides where and how a call goes (None: not given)."""

    endpoint: str | None = None
    api_id: str | None = None
    stage: str | None = None
    region: str | None = None
    profile: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    ca_bundle: str | None = None


@dataclass(frozen=True)
class Resolved:
    """Everything one endpoint's calls need, each with where it came from."""

    endpoint: Endpoint  # its .source says where it came from
    region: str
    region_source: str
    credentials: Credentials  # its .source: botocore's method (env, sso, ...)
    ca_bundle: str | None  # None: the default CA store
    ca_bundle_source: str
    timeout: float
    retries: int

    def describe(self) -> dict[str, str | None]:
        """How it resolved, for --dry-run and -v (the access key masked, no secret)."""
        return {
            "endpoint": self.endpoint.url,
            "endpointSource": self.endpoint.source,
            "region": self.region,
            "regionSource": self.region_source,
            "credentialSource": self.credentials.source,
            "accessKeyId": mask(self.credentials.access_key),
            "sessionToken": "set" if self.credentials.token else None,
        }

    def client(
        self,
        *,
        tracer: Tracer | None = None,
        connections: int = 1,
        pacer: Pacer | None = None,
    ) -> ManagementClient:
        """A client for this endpoint (its pool sized for `connections` in flight)."""
        from wsconn.client import ManagementClient

        return ManagementClient(
            self.endpoint,
            Signer(self.credentials, self.region),
            timeout=self.timeout,
            retries=self.retries,
            verify=self.ca_bundle or True,
            tracer=tracer,
            connections=connections,
            pacer=pacer,
            region_source=self.region_source,
        )


@dataclass(frozen=True)
class Setting:
    """One row of `wsconn config`: a value (None: unresolved or unset) and where it came from,
    or the problem that kept it from resolving. `name` and `source_key` are its JSON keys."""

    name: str
    label: str  # the row's name on a terminal
    value: str | int | float | None
    source: str
    source_key: str | None
    problem: WsconnError | None = None


class Resolver:
    """Each resolution step, once: where a connection goes, the region, credentials, CA bundle.

    `resolve()` runs them in order and raises the first problem; `report()` runs the same steps
    and keeps going, for `wsconn config`.
    """

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.aws = AwsConfig(settings.profile)

    def target(self, connection: str) -> Target:
        """Where CONNECTION (an id or a URL) goes, by the documented order."""
        settings = self.settings
        target = resolve_target(
            connection,
            endpoint=settings.endpoint,
            api_id=settings.api_id,
            stage=settings.stage,
            region=lambda: settings.region or self._configured_region()[0],
            environ=self.environ,
        )
        host_region = target.endpoint.host_region
        if settings.region and host_region and settings.region != host_region:
            raise UsageError(
                f"--region {settings.region} contradicts the endpoint's host "
                f"{target.endpoint.netloc}, which is in {host_region}: drop --region "
                "or fix the endpoint"
            )
        return target

    def region(self, endpoint: Endpoint | None) -> tuple[str, str]:
        """--region, else the execute-api host's region, else AWS_REGION / the profile's."""
        if self.settings.region:
            return self.settings.region, "--region"
        if endpoint is not None and endpoint.host_region:
            return endpoint.host_region, f"the host {endpoint.netloc}"
        region, source = self._configured_region()
        if not region:
            where = f"{endpoint.netloc}: the host does not name one" if endpoint else "calls"
            raise ConfigError(
                f"no region for {where}; pass --region or set AWS_REGION (or the profile's region)"
            )
        return region, source

    def _configured_region(self) -> tuple[str | None, str]:
        region, source = self.aws.configured_region_and_source()
        if region:
            check_region(region, source)
        return region, source

    def credentials(self) -> Credentials:
        return self.aws.credentials()

    def ca_bundle(self) -> tuple[str | None, str]:
        """--ca-bundle, else AWS_CA_BUNDLE / the profile's ca_bundle, else the default store."""
        if self.settings.ca_bundle:
            bundle, source = self.settings.ca_bundle, "--ca-bundle"
        else:
            found, source = self.aws.ca_bundle_and_source()
            if not found:
                return None, "default"
            bundle = found
        if not os.path.isfile(bundle):
            raise ConfigError(f"CA bundle {bundle} is not a readable file (from {source})")
        return bundle, source

    def for_endpoint(self, endpoint: Endpoint) -> Resolved:
        region, region_source = self.region(endpoint)
        credentials = self.credentials()
        bundle, bundle_source = self.ca_bundle()
        return Resolved(
            endpoint,
            region,
            region_source,
            credentials,
            bundle,
            bundle_source,
            self.settings.timeout,
            self.settings.retries,
        )

    def resolve(self, connection: str) -> tuple[Resolved, str]:
        """Everything a call to CONNECTION needs, and its decoded connection id."""
        target = self.target(connection)
        return self.for_endpoint(target.endpoint), target.connection_id

    def report(self, connection: str | None) -> list[Setting]:
        """Every setting as `resolve()` finds it, with the problem of each that cannot resolve.

        The same steps as `resolve()`, in the same order, each given the same inputs: what this
        shows is what a call would use.
        """
        rows: list[Setting] = []
        endpoint: Endpoint | None = None

        def add(
            name: str,
            label: str,
            step: Callable[[], tuple[str | int | float | None, str]],
            source_key: str | None = None,
        ) -> None:
            key = source_key if source_key is not None else f"{name}Source"
            try:
                value, source = step()
            except WsconnError as problem:
                rows.append(Setting(name, label, None, "", key, problem))
            else:
                rows.append(Setting(name, label, value, source, key))

        def endpoint_step() -> tuple[str, str]:
            nonlocal endpoint
            endpoint = self.target(connection or _ANY_ID).endpoint
            return endpoint.url, endpoint.source

        def credentials_step() -> tuple[str, str]:
            credentials = self.credentials()
            return mask(credentials.access_key), credentials.source

        def token_step() -> tuple[str | None, str]:
            credentials = self.credentials()
            return ("set" if credentials.token else None), credentials.source

        settings = self.settings
        add("endpoint", "endpoint", endpoint_step)
        add("region", "region", lambda: self.region(endpoint))
        add("profile", "profile", self.aws.profile_and_source)
        add("accessKeyId", "access key", credentials_step, "credentialSource")
        if rows[-1].problem is None:
            add("sessionToken", "session token", token_step, "")
        add("timeout", "timeout", lambda: (settings.timeout, _given(settings.timeout, "--timeout")))
        add("retries", "retries", lambda: (settings.retries, _given(settings.retries, "--retries")))
        add("caBundle", "CA bundle", self.ca_bundle)
        return rows


def _given(value: object, option: str) -> str:
    defaults = {"--timeout": DEFAULT_TIMEOUT, "--retries": DEFAULT_RETRIES}
    return "default" if value == defaults[option] else option


def resolve(settings: Settings, connection: str) -> tuple[Resolved, str]:
    """Everything a call to CONNECTION needs (see Resolver), and its connection id."""
    return Resolver(settings).resolve(connection)


def mask(access_key: str) -> str:
    """An access key id shown by its last 4 characters only."""
    return "*" * max(0, len(access_key) - 4) + access_key[-4:]


def given_id(connection: str) -> str | None:
    """The connection id a user typed, as far as it can be read (for reporting a failure)."""
    text = connection.strip()
    if not text:
        return None
    if is_url(text):
        try:
            return parse_connection_url(text).connection_id
        except WsconnError:
            return None
    return decode_connection_id(text)


# -- operations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation(Generic[R]):
    """One @connections operation: its HTTP method and body, the client call that makes it,
    and the word a success is reported with. Dry-run signs `method` and `body`; a call runs
    `invoke`, which sends the same."""

    method: str
    body: bytes
    success: str
    invoke: Callable[[ManagementClient, str, bytes], R]

    def call(self, client: ManagementClient, connection_id: str) -> R:
        return self.invoke(client, connection_id, self.body)


def send(message: bytes) -> Operation[Result]:
    """PostToConnection: deliver `message` to the client."""
    return Operation("POST", message, "sent", lambda c, cid, body: c.post_to_connection(cid, body))


STATUS: Operation[ConnectionInfo] = Operation(
    "GET", b"", "connected", lambda c, cid, _body: c.get_connection(cid)
)
DISCONNECT: Operation[Result] = Operation(
    "DELETE", b"", "disconnected", lambda c, cid, _body: c.delete_connection(cid)
)


# -- one call -------------------------------------------------------------------------------


def _failing(error: WsconnError, connection: str, connection_id: str | None) -> WsconnError:
    """The error, with the connection id it concerns (the one given, if it never resolved)."""
    if error.connection_id is None:
        error.connection_id = connection_id or given_id(connection)
    return error


def call(
    settings: Settings,
    connection: str,
    operation: Operation[R],
    *,
    tracer: TraceSink | None = None,
) -> R:
    """Resolve, then make one call. A WsconnError carries the connection id it concerns."""
    with _one_client(settings, connection, tracer) as (_, client, connection_id):
        return operation.call(client, connection_id)


@contextmanager
def _one_client(
    settings: Settings, connection: str, tracer: TraceSink | None = None
) -> Iterator[tuple[Resolved, ManagementClient, str]]:
    """Resolve once (traced), a client for the block (closed after it), and the connection id;
    a WsconnError raised on the way or in the block carries the connection id it concerns."""
    connection_id: str | None = None
    try:
        resolved, connection_id = resolve(settings, connection)
        if tracer is not None:
            tracer.resolved(resolved.describe())
        client = resolved.client(tracer=tracer)
        try:
            yield resolved, client, connection_id
        finally:
            client.close()
    except WsconnError as error:
        raise _failing(error, connection, connection_id) from None


@dataclass(frozen=True)
class DryRun:
    """A signed request, printed instead of sent, and how its settings resolved."""

    prepared: Prepared
    settings: dict[str, str | None]


def dry_run(settings: Settings, connection: str, operation: Operation[R]) -> DryRun:
    """Resolve and sign one call without sending it."""
    with _one_client(settings, connection) as (resolved, client, connection_id):
        return DryRun(
            client.prepare(operation.method, connection_id, operation.body), resolved.describe()
        )


class TraceSink(Protocol):
    """What -v reports to: how a call resolved, then the client's trace (client.Tracer)."""

    def resolved(self, settings: Mapping[str, str | None]) -> None: ...

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> None: ...

    def signing(self, canonical_request: str, string_to_sign: str) -> None: ...

    def response(
        self,
        status: int,
        reason: str,
        headers: Mapping[str, str],
        body: bytes,
        timings: Mapping[str, float],
    ) -> None: ...

    def retry(self, attempt: int, delay: float, why: str) -> None: ...


# -- status --watch -------------------------------------------------------------------------


class WatchView(Protocol):
    """What `status --watch` reports to, poll by poll."""

    def poll(self, info: ConnectionInfo, interval: float) -> None: ...

    def gone(self, connection_id: str, last_seen: datetime | None, error: WsconnError) -> None:
        """The connection answered 410: `last_seen` is the last poll that found it connected
        (None: it never answered). The view's last state must show it gone."""


class ConnectionWentAway(ConnectionGone):
    """`status --watch` saw the connection, then a 410: it went away while watched."""


def watch(
    settings: Settings,
    connection: str,
    interval: float,
    view: WatchView,
    *,
    tracer: TraceSink | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll one connection until it is gone; ends with ConnectionGone (exit 3) or Ctrl-C."""
    with _one_client(settings, connection, tracer) as (_, client, connection_id):
        last_seen: datetime | None = None
        while True:
            try:
                info = client.get_connection(connection_id)
            except ConnectionGone as gone:
                raise _went_away(gone, connection_id, last_seen, view) from None
            last_seen = datetime.now(timezone.utc)
            view.poll(info, interval)
            sleep(interval)


def _went_away(
    gone: ConnectionGone, connection_id: str, last_seen: datetime | None, view: WatchView
) -> ConnectionGone:
    """The 410 that ends a watch, said as what was seen: it went away, or it never answered."""
    now = datetime.now(timezone.utc)
    label = f"{gone.http_status} {gone.error_type or 'Gone'}"
    error: ConnectionGone
    if last_seen is None:
        error = ConnectionGone(
            f"{connection_id} is not connected: it answered 410 to the first poll, so it was "
            f"never seen connected ({label})",
            http_status=gone.http_status,
            error_type=gone.error_type,
            detail=gone.detail,
        )
    else:
        error = ConnectionWentAway(
            f"{connection_id} went away: last seen connected at {iso_ms(last_seen)}, "
            f"gone by {iso_ms(now)} ({label})",
            http_status=gone.http_status,
            error_type=gone.error_type,
            detail=gone.detail,
        )
        # It was open and then closed: not the three meanings of a 410 on an unknown id.
        error.explanation = [
            "The client disconnected, was disconnected (DELETE, idle timeout, 2-hour limit), "
            "or its network went away."
        ]
    error.attempts, error.latency_ms, error.sent = gone.attempts, gone.latency_ms, gone.sent
    error.connection_id = connection_id
    view.gone(connection_id, last_seen, error)
    return error


# -- many ids -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bulk:
    """The fan-out options, when --ids is given."""

    ids: str
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None
    gone_out: str | None = None
    failed_out: str | None = None
    unique: bool = False
    processes: int = 1  # -P: worker processes, each with `concurrency` threads


@dataclass(frozen=True)
class FanOutResult:
    exit_code: int
    input_abandoned: bool  # stopped while the input still had not ended (a pipe left open)


def _check_lists(bulk: Bulk) -> None:
    for listing in (bulk.gone_out, bulk.failed_out):
        if (
            listing
            and os.path.exists(listing)
            and bulk.ids != "-"
            and _same_file(bulk.ids, listing)
        ):
            raise UsageError(
                f"{listing} is the --ids file: writing it would empty it before it is read; "
                "write the list to another file"
            )


def _same_file(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


def _unique_key(resolver: Resolver) -> Callable[[str], object]:
    """--unique: what makes two lines one connection (its endpoint and decoded id, not its
    spelling); a line that does not resolve is its own key."""

    def key(line: str) -> object:
        try:
            target = resolver.target(line)
        except WsconnError:
            return line
        return (target.endpoint.url, target.connection_id)

    return key


def fan_out(
    settings: Settings,
    bulk: Bulk,
    operation: Operation[R],
    out: Renderer,
    *,
    tracer: TraceSink | None = None,
) -> FanOutResult:
    """One operation over every line of --ids; every line gets exactly one result in `out`."""
    from wsconn import fanout

    resolver = Resolver(settings)
    resolver.credentials()  # no credentials: say so once, before reading a single id
    _check_lists(bulk)
    key = _unique_key(resolver) if bulk.unique else None
    out.begin(lambda: fanout.count_ids(bulk.ids, key))
    with (
        fanout.open_ids(bulk.ids) as ids,
        fanout.open_list(bulk.gone_out) as gone_out,
        fanout.open_list(bulk.failed_out) as failed_out,
    ):
        lines = fanout.read_ids(ids, key)  # read here: --unique holds across all workers
        if bulk.processes > 1:
            # One pacer for every process (--rate in all, a 429 slows them all), made before
            # the workers fork; each worker makes its own clients and pool after.
            shared = fanout.RunPacer(bulk.rate, fanout.StopFlag(), shared=True)
            run: fanout.FanOut | fanout.ProcessFanOut = fanout.ProcessFanOut(
                lines=lines,
                processes=bulk.processes,
                concurrency=bulk.concurrency,
                pacer=shared,
                clients=lambda pacer: _clients(resolver, tracer, bulk.concurrency, pacer),
                call=operation.call,
            )
            code = fanout.run(run, out, gone_out=gone_out, failed_out=failed_out)
            return FanOutResult(code, run.input_abandoned)
        pacer = fanout.RunPacer(bulk.rate, threading.Event())
        clients = _clients(resolver, tracer, bulk.concurrency, pacer)
        run = fanout.FanOut(
            lines=lines,
            concurrency=bulk.concurrency,
            pacer=pacer,
            client_for=clients,
            call=operation.call,
        )
        try:
            code = fanout.run(run, out, gone_out=gone_out, failed_out=failed_out)
        finally:
            clients.close()
    return FanOutResult(code, run.input_abandoned)


def dry_run_each(settings: Settings, bulk: Bulk, operation: Operation[R]) -> Iterator[DryRun]:
    """--dry-run with --ids: each line's signed request, in input order."""
    from wsconn import fanout

    resolver = Resolver(settings)
    resolver.credentials()
    key = _unique_key(resolver) if bulk.unique else None
    clients: dict[Endpoint, tuple[Resolved, ManagementClient]] = {}
    try:
        with fanout.open_ids(bulk.ids) as ids:
            for line in fanout.read_ids(ids, key):
                target = resolver.target(line)
                if target.endpoint not in clients:
                    resolved = resolver.for_endpoint(target.endpoint)
                    clients[target.endpoint] = resolved, resolved.client()
                resolved, client = clients[target.endpoint]
                prepared = client.prepare(operation.method, target.connection_id, operation.body)
                yield DryRun(prepared, resolved.describe())
    finally:
        for _resolved, client in clients.values():
            client.close()


def _clients(
    resolver: Resolver, tracer: TraceSink | None, concurrency: int, pacer: Pacer
) -> ClientCache:
    """One client per endpoint, made when a line first names it (lines may name several)."""
    from wsconn import fanout

    def make(endpoint: Endpoint) -> ManagementClient:
        resolved = resolver.for_endpoint(endpoint)
        if tracer is not None:
            tracer.resolved(resolved.describe())
        return resolved.client(tracer=tracer, connections=concurrency, pacer=pacer)

    def target(line: str) -> tuple[Endpoint, str]:
        found = resolver.target(line)
        return found.endpoint, found.connection_id

    return fanout.ClientCache(make, target)
