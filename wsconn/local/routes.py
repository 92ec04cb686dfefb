"""Route selection and the Lambda proxy events of a WebSocket API, as API Gateway builds them.

Pure functions (no sockets, no clock of their own): the gateway passes in what it knows of the
connection and the moment, and gets back the route key, the event dict or the error frame, shaped
field for field as ``/work/shared/LOCAL-BACKEND.md`` documents AWS's.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

CONNECT = "$connect"
DISCONNECT = "$disconnect"
DEFAULT = "$default"

_ID_ALPHABET = string.ascii_letters + string.digits + "_-"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# `${request.body.a.b}` inside a template expression.
_TEMPLATE_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_BODY_PREFIX = "request.body"
# What the client sees for a close without a status code, in $disconnect's reason (AWS's words).
NO_STATUS_REASON = "Client-side close frame status not set"


def new_request_id() -> str:
    """A fresh request / message id, shaped like AWS's: 15 of ``[A-Za-z0-9_-]``, then ``=``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


def clf_time(moment: datetime) -> str:
    """``requestTime`` in Common Log Format, UTC: ``04/Dec/2026:18:20:05 +0000``."""
    utc = moment.astimezone(timezone.utc)
    return f"{utc.day:02d}/{_MONTHS[utc.month - 1]}/{utc:%Y:%H:%M:%S} +0000"


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as ``requestTimeEpoch`` and ``connectedAt``."""
    return int(moment.timestamp() * 1000)


def trace_id(moment: datetime) -> str:
    """An ``X-Amzn-Trace-Id`` value: ``Root=1-{epoch seconds hex}-{24 hex}``."""
    return f"Root=1-{int(moment.timestamp()):08x}-{secrets.token_hex(12)}"


# -- route selection ------------------------------------------------------------------------


class SelectionError(ValueError):
    """A route selection expression API Gateway would not accept."""


def check_selection_expression(expression: str) -> None:
    """Raise :class:`SelectionError` unless ``expression`` is one API Gateway accepts.

    ``$request.body.PATH`` or a template of ``${request.body.PATH}`` variables and static text.
    """
    if expression.startswith("$request.body."):
        if not all(expression[len("$request.body.") :].split(".")):
            raise SelectionError(f"{expression!r}: an empty step in the JSON path")
        return
    variables = _TEMPLATE_VARIABLE.findall(expression)
    if not variables:
        raise SelectionError(
            f"{expression!r}: use $request.body.PATH or a template of ${{request.body.PATH}}"
        )
    for variable in variables:
        steps = variable.split(".")
        if variable.startswith(_BODY_PREFIX + ".") and all(steps):
            continue
        raise SelectionError(f"{expression!r}: ${{{variable}}} is not ${{request.body.PATH}}")


def _lookup(document: object, path: str) -> str:
    """The value at a dotted JSON path, as route selection stringifies it ('' when absent)."""
    value = document
    for step in path.split("."):
        if not isinstance(value, dict) or step not in value:
            return ""
        value = value[step]
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # true/false and numbers as JSON writes them; objects and arrays stringified compactly.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def evaluate_selection(expression: str, body: str) -> str | None:
    """The value ``expression`` selects from a message ``body``; None when the body is not JSON."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if expression.startswith("$request.body."):
        return _lookup(document, expression[len("$request.body.") :])
    return _TEMPLATE_VARIABLE.sub(
        lambda match: _lookup(document, match.group(1)[len(_BODY_PREFIX) + 1 :]), expression
    )


def select_route(
    expression: str, body: str, route_keys: Collection[str], *, catch_all: bool = False
) -> str | None:
    """The route key a message goes to: its selected key, else ``$default``, else None (Forbidden).

    With ``catch_all`` (``--handler``), any non-empty selected value is a route key of its own.
    """
    selected = evaluate_selection(expression, body)
    if selected and not selected.startswith("$") and (catch_all or selected in route_keys):
        return selected
    return DEFAULT if DEFAULT in route_keys else None


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who a connection is, as every one of its events says (and ``GET @connections`` agrees)."""

    connection_id: str
    connected_at: datetime
    source_ip: str
    user_agent: str | None
    domain_name: str
    stage: str
    api_id: str
    # Extra identity fields an AWS_IAM $connect adds (accountId, caller, user, userArn, accessKey).
    iam: Mapping[str, str] = field(default_factory=dict)
    # requestContext.authorizer: principalId, the authorizer's context, integrationLatency.
    authorizer: Mapping[str, object] | None = None

    def identity(self) -> dict[str, object]:
        identity: dict[str, object] = {"sourceIp": self.source_ip}
        if self.user_agent:
            identity["userAgent"] = self.user_agent
        identity.update(self.iam)
        return identity


def request_context(
    caller: Caller, route_key: str, event_type: str, request_id: str, now: datetime
) -> dict[str, object]:
    """The ``requestContext`` every event carries, in AWS's key order."""
    context: dict[str, object] = {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": clf_time(now),
        "messageDirection": "IN",
        "stage": caller.stage,
        "connectedAt": epoch_ms(caller.connected_at),
        "requestTimeEpoch": epoch_ms(now),
        "identity": caller.identity(),
        "requestId": request_id,
        "domainName": caller.domain_name,
        "connectionId": caller.connection_id,
        "apiId": caller.api_id,
    }
    if caller.authorizer is not None:
        context["authorizer"] = dict(caller.authorizer)
    return context


def _single_and_multi(
    pairs: Iterable[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value  # the last value wins, as in the single-value map AWS sends
        multi.setdefault(name, []).append(value)
    return single, multi


# Headers AWS adds to what the client sent (or, for the Authorization of an IAM-signed upgrade,
# does not pass on: captured IAM $connect events carry the X-Amz-* headers without it).
_DROPPED_CONNECT_HEADERS = {"authorization"}


def connect_headers(
    sent: Iterable[tuple[str, str]], source_ip: str, port: int, now: datetime
) -> list[tuple[str, str]]:
    """The ``$connect`` event's headers: the client's, plus the X-Forwarded-* and trace headers."""
    headers = [
        (name, value) for name, value in sent if name.lower() not in _DROPPED_CONNECT_HEADERS
    ]
    present = {name.lower() for name, _ in headers}
    added = [
        ("X-Amzn-Trace-Id", trace_id(now)),
        ("X-Forwarded-For", source_ip),
        ("X-Forwarded-Port", str(port)),
        ("X-Forwarded-Proto", "https"),
    ]
    headers.extend((name, value) for name, value in added if name.lower() not in present)
    return headers


def connect_event(
    caller: Caller,
    request_id: str,
    now: datetime,
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]],
) -> dict[str, object]:
    """The ``$connect`` event (no body); the query keys only when the URL had a query string."""
    single, multi = _single_and_multi(headers)
    event: dict[str, object] = {"headers": single, "multiValueHeaders": multi}
    query_single, query_multi = _single_and_multi(query)
    if query_single:
        event["queryStringParameters"] = query_single
        event["multiValueQueryStringParameters"] = query_multi
    event["requestContext"] = request_context(caller, CONNECT, "CONNECT", request_id, now)
    event["isBase64Encoded"] = False
    return event


def message_event(
    caller: Caller,
    route_key: str,
    request_id: str,
    message_id: str,
    now: datetime,
    body: str,
) -> dict[str, object]:
    """A MESSAGE event: the frame's text as ``body`` and a fresh ``messageId``."""
    context = request_context(caller, route_key, "MESSAGE", request_id, now)
    context = {"routeKey": route_key, "messageId": message_id, **context}
    return {"requestContext": context, "body": body, "isBase64Encoded": False}


def disconnect_event(
    caller: Caller, request_id: str, now: datetime, status_code: int, reason: str
) -> dict[str, object]:
    """The ``$disconnect`` event: AWS's small header set, the close's status code and reason."""
    headers = {
        "Host": caller.domain_name,
        "x-api-key": "",
        "X-Forwarded-For": "",
        "x-restapi": "",
    }
    context = request_context(caller, DISCONNECT, "DISCONNECT", request_id, now)
    context["disconnectStatusCode"] = status_code
    context["disconnectReason"] = reason
    return {
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "requestContext": context,
        "isBase64Encoded": False,
    }


def disconnect_reason(code: int, reason: str) -> str:
    """``disconnectReason`` for a close: the close frame's reason, AWS's words for no status."""
    if code == 1005 and not reason:
        return NO_STATUS_REASON
    return reason


def method_arn(region: str, account: str, api_id: str, stage: str) -> str:
    """The ``$connect`` resource an authorizer's policy and an IAM check name."""
    return f"arn:aws:execute-api:{region}:{account}:{api_id}/{stage}/$connect"


def authorizer_event(connect: Mapping[str, object], arn: str) -> dict[str, object]:
    """A REQUEST authorizer's event, built from the ``$connect`` event it guards."""
    event: dict[str, object] = {"type": "REQUEST", "methodArn": arn}
    for key in (
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
    ):
        if key in connect:
            event[key] = connect[key]
    event["stageVariables"] = {}
    event["requestContext"] = connect["requestContext"]
    return event


def error_frame(message: str, connection_id: str, request_id: str) -> str:
    """AWS's error frame, byte for byte (one space after ``"message":``, none elsewhere)."""
    return (
        f'{{"message": {json.dumps(message)}, "connectionId":{json.dumps(connection_id)}, '
        f'"requestId":{json.dumps(request_id)}}}'
    )


FORBIDDEN = "Forbidden"
INTERNAL_SERVER_ERROR = "Internal server error"


# -- what a function's answer means ---------------------------------------------------------


@dataclass(frozen=True)
class ProxyAnswer:
    """A Lambda proxy integration's answer: status, headers and body as API Gateway reads them."""

    status: int
    headers: dict[str, str]
    body: str | None


def proxy_answer(payload: object) -> ProxyAnswer:
    """Read a function's return value as API Gateway does; ValueError when it cannot be read.

    A dict with ``statusCode`` (int or numeric string; 200 when absent), ``headers`` (str to
    str) and ``body`` (a string; anything else is sent as its JSON). None (a handler that returns
    nothing) is a 200 with no body; any other value is its JSON as the body.
    """
    if payload is None:
        return ProxyAnswer(200, {}, None)
    if not isinstance(payload, dict):
        return ProxyAnswer(200, {}, json.dumps(payload, separators=(",", ":")))
    raw_status = payload.get("statusCode", 200)
    try:
        status = int(raw_status)
    except (TypeError, ValueError):
        raise ValueError(f"statusCode {raw_status!r} is not a number") from None
    if not 100 <= status <= 599:
        raise ValueError(f"statusCode {status} is not an HTTP status")
    raw_headers = payload.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise ValueError("headers is not an object")
    headers = {str(name): str(value) for name, value in raw_headers.items()}
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        body = json.dumps(body, separators=(",", ":"))
    return ProxyAnswer(status, headers, body)


@dataclass(frozen=True)
class AuthorizerVerdict:
    """What a REQUEST authorizer decided: allowed or not, its principal and its context."""

    allowed: bool
    principal_id: str | None
    context: dict[str, object]


def _matches(pattern: str, value: str) -> bool:
    """IAM's wildcard match: ``*`` any run of characters, ``?`` any one."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def authorizer_verdict(payload: object, arn: str) -> AuthorizerVerdict:
    """Read an authorizer's answer; ValueError when it is not one API Gateway can use.

    Allowed when a statement allows ``execute-api:Invoke`` on ``arn`` (wildcards as IAM reads
    them) and none denies it. The context keeps only string, number and boolean values.
    """
    if not isinstance(payload, dict):
        raise ValueError("the authorizer returned no policy object")
    policy = payload.get("policyDocument")
    if not isinstance(policy, dict) or not isinstance(policy.get("Statement"), list | dict):
        raise ValueError("the authorizer's answer has no policyDocument.Statement")
    allowed = denied = False
    for statement in _as_list(policy["Statement"]):
        if not isinstance(statement, dict):
            raise ValueError("a policy statement is not an object")
        actions = [str(a) for a in _as_list(statement.get("Action", []))]
        resources = [str(r) for r in _as_list(statement.get("Resource", []))]
        applies = any(_matches(a, "execute-api:Invoke") for a in actions) and any(
            _matches(r, arn) for r in resources
        )
        if applies and statement.get("Effect") == "Allow":
            allowed = True
        elif applies and statement.get("Effect") == "Deny":
            denied = True
    principal = payload.get("principalId")
    raw_context = payload.get("context") or {}
    if not isinstance(raw_context, dict):
        raise ValueError("the authorizer's context is not an object")
    context: dict[str, object] = {
        str(key): value
        for key, value in raw_context.items()
        if isinstance(value, str | int | float | bool)
    }
    return AuthorizerVerdict(
        allowed and not denied, None if principal is None else str(principal), context
    )


def missing_identity(
    sources: Iterable[str],
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]],
) -> str | None:
    """The first identity source the request lacks (or has empty), else None."""
    header_values = {name.lower(): value for name, value in headers}
    query_values = dict(query)
    for source in sources:
        if source.startswith("route.request.header."):
            value = header_values.get(source[len("route.request.header.") :].lower())
        elif source.startswith("route.request.querystring."):
            value = query_values.get(source[len("route.request.querystring.") :])
        else:
            value = None
        if not value:
            return source
    return None
