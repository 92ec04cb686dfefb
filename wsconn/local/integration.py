"""The gateway's backend side: for each route, the event, the invocation, and what its answer does.

The gateway (sockets) asks three questions: may this upgrade connect (authorizer, then the
``$connect`` route), what goes back for this message (a two-way body, an error frame, nothing),
and it reports each close (``$disconnect``). Events are built by :mod:`wsconn.local.routes`;
functions are run by an invoker (:class:`wsconn.local.backends.Backends`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from wsconn.local import routes
from wsconn.local.app import App, Function
from wsconn.local.routes import Caller
from wsconn.timestamps import utc_now

if TYPE_CHECKING:
    from wsconn.local.backends import Backends, Invocation
    from wsconn.local.callbacks import CallbackListener
    from wsconn.local.credentials import LocalCredentials

Emit = Callable[..., None]


@dataclass(frozen=True)
class Refusal:
    """A refused upgrade: the HTTP status and body the client gets, and a short why."""

    status: int
    body: str
    reason: str


@dataclass(frozen=True)
class Admission:
    """The answer to an upgrade: refused, or accepted with headers for the 101 and its caller."""

    caller: Caller
    refusal: Refusal | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


# Headers of a $connect answer that are the handshake's own, never relayed into the 101.
_HANDSHAKE_HEADERS = {
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "content-length",
    "transfer-encoding",
    "content-type",
}
_UNAUTHORIZED = Refusal(401, '{"message":"Unauthorized"}', "")
_FORBIDDEN_BODY = '{"message":"Forbidden"}'
_INTERNAL_BODY = '{"message": "Internal server error"}'


def _is_unauthorized(error: str) -> bool:
    """Whether a failed authorizer raised ``Unauthorized`` (API Gateway's 401 convention)."""
    return error == "Unauthorized" or error.endswith(": Unauthorized")


class Integration:
    """Runs an :class:`App`'s routes for the gateway."""

    def __init__(
        self,
        app: App,
        invoker: Backends | None,
        emit: Emit,
        *,
        method_arn: str,
        prepare: Callable[[Function], Function] | None = None,
        callbacks: CallbackListener | None = None,
    ) -> None:
        self.app = app
        self.callbacks = callbacks
        self._invoker = invoker
        self._emit = emit
        self._method_arn = method_arn
        # Invocations API Gateway stopped waiting for (integration timeout), still running.
        self._running_on: set[asyncio.Future[Invocation]] = set()
        # Each function as the gateway runs it (``prepare``), one object per function as given.
        prepared: dict[int, Function] = {}

        def runtime(function: Function) -> Function:
            if id(function) not in prepared:
                prepared[id(function)] = prepare(function) if prepare else function
            return prepared[id(function)]

        self._functions: dict[str, Function | None] = {
            key: None if route.function is None else runtime(route.function)
            for key, route in app.routes.items()
        }
        self._authorizer = runtime(app.authorizer.function) if app.authorizer is not None else None
        catch_all = app.catch_all
        self._catch_all = (
            None if catch_all is None or catch_all.function is None else runtime(catch_all.function)
        )

    @classmethod
    async def start(
        cls,
        app: App,
        emit: Emit,
        *,
        method_arn: str,
        host: str,
        stage: str,
        region: str,
        credentials: LocalCredentials,
        account_id: str,
        python: str | None,
    ) -> Integration:
        """The app's backend, loaded: its callback listener bound (not yet listening) and every
        Python handler imported once (``ConfigError`` if one cannot load). With no route, an
        integration that runs nothing (every message answers Forbidden)."""
        if not app.has_backend and app.authorizer is None:
            return cls(app, None, emit, method_arn=method_arn)
        # Only with a backend: these bring in click (errors) and trustme (the run's CA).
        from wsconn.local.backends import Backends
        from wsconn.local.callbacks import (
            CallbackListener,
            callback_host,
            domain_name,
            handler_environment,
        )

        callbacks = CallbackListener(callback_host(host))

        def with_ca_bundle(function: Function) -> Function:
            # A function's own AWS_CA_BUNDLE (--env) still trusts the run's CA too.
            if "AWS_CA_BUNDLE" not in function.env:
                return function
            bundle = callbacks.bundle(function.env["AWS_CA_BUNDLE"])
            return dataclasses.replace(function, env={**function.env, "AWS_CA_BUNDLE": bundle})

        backends: Backends | None = None
        try:
            environment = handler_environment(
                f"https://{domain_name(callbacks.host, callbacks.port)}/{stage}",
                # What handlers trusted before: wsconn's own AWS_CA_BUNDLE (else certifi's).
                callbacks.bundle(os.environ.get("AWS_CA_BUNDLE") or None),
                credentials,
                region,
            )
            backends = Backends(
                python,
                lambda label, stream, line: emit("log", route=label, stream=stream, line=line),
                env=environment,
                region=region,
                account_id=account_id,
            )
            integration = cls(
                app,
                backends,
                emit,
                method_arn=method_arn,
                prepare=with_ca_bundle,
                callbacks=callbacks,
            )
            await backends.check(integration.functions)
        except BaseException:
            if backends is not None:
                with contextlib.suppress(Exception):
                    await backends.aclose()
            callbacks.close()
            raise
        return integration

    async def aclose(self) -> None:
        """Stop every worker and remove the run's CA bundles (after the listeners are closed)."""
        invoker, self._invoker = self._invoker, None
        try:
            if invoker is not None:
                await invoker.aclose()
        finally:
            if self.callbacks is not None:
                self.callbacks.close()

    @property
    def functions(self) -> list[Function]:
        """Every distinct function the app runs (authorizer included), for a check at start."""
        found: dict[int, Function] = {}
        for function in [*self._functions.values(), self._authorizer, self._catch_all]:
            if function is not None:
                found.setdefault(id(function), function)
        return list(found.values())

    async def _invoke(
        self, route_key: str, function: Function | None, event: dict[str, object]
    ) -> tuple[object, str | None]:
        """Invoke a route's function; (payload, error). Emits ``invoke``."""
        request_id = str(_request_id(event))
        if function is None or self._invoker is None:
            route = self.app.routes.get(route_key, self.app.catch_all)
            missing = (route.unavailable if route else None) or "no function to run"
            self._emit(
                "invoke",
                route=route_key,
                target=None,
                requestId=request_id,
                statusCode=None,
                durationMs=0.0,
                error=missing,
            )
            return None, missing
        call = asyncio.ensure_future(self._invoker.invoke(function, event, label=route_key))
        limit = self.app.integration_timeout
        if limit is not None and limit < function.timeout:
            await asyncio.wait({call}, timeout=limit)
        else:
            await call  # a cancelled wait (shutdown) cancels the invocation too
        if not call.done():
            # API Gateway gave up; the function runs on (its workers are the backends' to bound).
            self._running_on.add(call)
            call.add_done_callback(self._running_on.discard)
            late = f"Endpoint request timed out after {limit:g} s (the function runs on)"
            self._emit(
                "invoke",
                route=route_key,
                target=str(function.target),
                requestId=request_id,
                statusCode=504,
                durationMs=round((limit or 0) * 1000, 3),
                error=late,
            )
            return None, late
        result = call.result()
        error = result.error
        if result.timed_out and error is None:
            error = f"timed out after {function.timeout:g} s"
        status: int | None = None
        if error is None:
            try:
                status = routes.proxy_answer(result.payload).status
            except ValueError:
                status = None
        self._emit(
            "invoke",
            route=route_key,
            target=str(function.target),
            requestId=request_id,
            statusCode=status if error is None else 502,
            durationMs=round(result.duration_ms, 3),
            error=error,
        )
        return result.payload, error

    # -- $connect ---------------------------------------------------------------------------

    async def connect(
        self,
        caller: Caller,
        headers: Sequence[tuple[str, str]],
        query: Sequence[tuple[str, str]],
        port: int,
    ) -> Admission:
        """Authorizer, then the ``$connect`` route: who may connect, with which 101 headers."""
        now = utc_now()
        request_id = routes.new_request_id()
        event_headers = routes.connect_headers(headers, caller.source_ip, port, now)
        if self.app.authorizer is not None:
            admission = await self._authorize(
                caller, request_id, now, event_headers, query, self.app.authorizer.identity_sources
            )
            if admission.refusal is not None:
                return admission
            caller = admission.caller
        if routes.CONNECT not in self.app.routes:
            return Admission(caller)
        event = routes.connect_event(caller, request_id, now, event_headers, query)
        payload, error = await self._invoke(routes.CONNECT, self._functions[routes.CONNECT], event)
        if error is not None:
            return Admission(caller, Refusal(502, _INTERNAL_BODY, f"$connect failed: {error}"))
        try:
            answer = routes.proxy_answer(payload)
        except ValueError as exc:
            return Admission(caller, Refusal(502, _INTERNAL_BODY, f"$connect answer: {exc}"))
        if not 200 <= answer.status <= 299:
            return Admission(
                caller,
                Refusal(answer.status, answer.body or "", f"$connect answered {answer.status}"),
            )
        relayed = {
            name: value
            for name, value in answer.headers.items()
            if name.lower() not in _HANDSHAKE_HEADERS
        }
        return Admission(caller, headers=relayed)

    async def _authorize(
        self,
        caller: Caller,
        request_id: str,
        now: datetime,
        headers: Sequence[tuple[str, str]],
        query: Sequence[tuple[str, str]],
        sources: Sequence[str],
    ) -> Admission:
        missing = routes.missing_identity(sources, headers, query)
        if missing is not None:
            return Admission(
                caller, dataclasses.replace(_UNAUTHORIZED, reason=f"no identity in {missing}")
            )
        connect = routes.connect_event(caller, request_id, now, headers, query)
        event = routes.authorizer_event(connect, self._method_arn)
        started = utc_now()
        payload, error = await self._invoke("authorizer", self._authorizer, event)
        latency = int((utc_now() - started).total_seconds() * 1000)
        if error is not None:
            if _is_unauthorized(error):
                return Admission(
                    caller, dataclasses.replace(_UNAUTHORIZED, reason="authorizer: Unauthorized")
                )
            return Admission(caller, Refusal(500, _INTERNAL_BODY, f"authorizer failed: {error}"))
        try:
            verdict = routes.authorizer_verdict(payload, self._method_arn)
        except ValueError as exc:
            return Admission(caller, Refusal(500, _INTERNAL_BODY, f"authorizer answer: {exc}"))
        if not verdict.allowed:
            return Admission(caller, Refusal(403, _FORBIDDEN_BODY, "authorizer denied"))
        context: dict[str, object] = {"principalId": verdict.principal_id, **verdict.context}
        context["integrationLatency"] = latency
        return Admission(dataclasses.replace(caller, authorizer=context))

    # -- messages and $disconnect -----------------------------------------------------------

    async def message(self, caller: Caller, body: str) -> str | None:
        """Run the route a message selects; the text frame to send back, if any."""
        request_id = routes.new_request_id()
        catch_all = self.app.catch_all
        key = routes.select_route(
            self.app.route_selection, body, self.app.routes.keys(), catch_all=catch_all is not None
        )
        if key is None:
            return routes.error_frame(routes.FORBIDDEN, caller.connection_id, request_id)
        route = self.app.routes.get(key, catch_all)
        assert route is not None
        function = self._functions.get(key, self._catch_all)
        event = routes.message_event(
            caller, key, request_id, routes.new_request_id(), utc_now(), body
        )
        payload, error = await self._invoke(key, function, event)
        if error is not None:
            return routes.error_frame(
                routes.INTERNAL_SERVER_ERROR, caller.connection_id, request_id
            )
        if not route.two_way:
            return None
        try:
            answer = routes.proxy_answer(payload)
        except ValueError:
            return routes.error_frame(
                routes.INTERNAL_SERVER_ERROR, caller.connection_id, request_id
            )
        if 200 <= answer.status <= 299 and answer.body is not None:
            return answer.body
        return None

    async def disconnect(self, caller: Caller, code: int, reason: str) -> None:
        """Run ``$disconnect`` (if configured) for a connection that is gone."""
        if routes.DISCONNECT not in self.app.routes:
            return
        event = routes.disconnect_event(
            caller,
            routes.new_request_id(),
            utc_now(),
            code,
            routes.disconnect_reason(code, reason),
        )
        await self._invoke(routes.DISCONNECT, self._functions[routes.DISCONNECT], event)


def _request_id(event: Mapping[str, object]) -> object:
    context = event.get("requestContext")
    return context.get("requestId") if isinstance(context, dict) else None
