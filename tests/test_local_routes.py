"""Route selection, the Lambda proxy events and answers (wsconn/local/routes.py), without sockets."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from wsconn.local import routes
from wsconn.local.routes import Caller

ID = re.compile(r"^[A-Za-z0-9_-]{15}=$")
NOW = datetime(2026, 12, 4, 18, 20, 5, 121000, tzinfo=timezone.utc)
CONNECTED = datetime(2026, 12, 4, 18, 20, 5, 117000, tzinfo=timezone.utc)
CALLER = Caller(
    connection_id="Cx4mPbZvIAMCJ7Q=",
    connected_at=CONNECTED,
    source_ip="127.0.0.1",
    user_agent="ua/1",
    domain_name="127.0.0.1:8443",
    stage="prod",
    api_id="local",
)


@pytest.mark.parametrize(
    ("expression", "body", "expected"),
    [
        ("$request.body.action", '{"action": "sendmessage"}', "sendmessage"),
        ("$request.body.service.action", '{"service": {"action": "join"}}', "join"),
        ("$request.body.action", '{"other": 1}', ""),
        ("$request.body.action", '{"action": 7}', "7"),
        ("$request.body.action", '{"action": true}', "true"),
        ("$request.body.action", '{"action": {"a": [1, 2]}}', '{"a":[1,2]}'),
        ("$request.body.action", '{"action": null}', ""),
        ("$request.body.action", "not json", None),
        ("$request.body.action", '["a"]', ""),
        (
            "${request.body.service}/${request.body.action}",
            '{"service": "chat", "action": "join"}',
            "chat/join",
        ),
        ("v1-${request.body.action}", '{"action": "x"}', "v1-x"),
        ("${request.body.service}/${request.body.action}", '{"service": "chat"}', "chat/"),
    ],
)
def test_evaluate_selection_as_aws(expression: str, body: str, expected: str | None) -> None:
    assert routes.evaluate_selection(expression, body) == expected


def test_select_route_falls_back_to_default_then_forbidden() -> None:
    keys = {"sendmessage", "$default", "$connect"}
    expr = "$request.body.action"
    assert routes.select_route(expr, '{"action": "sendmessage"}', keys) == "sendmessage"
    assert routes.select_route(expr, '{"action": "nope"}', keys) == "$default"
    assert routes.select_route(expr, "plain text", keys) == "$default"
    # A message never selects a predefined route, even by naming it.
    assert routes.select_route(expr, '{"action": "$connect"}', keys) == "$default"
    assert routes.select_route(expr, '{"action": "nope"}', {"sendmessage"}) is None
    assert routes.select_route(expr, '{"action": "x"}', set()) is None


@pytest.mark.parametrize(
    "bad", ["action", "$request.body.", "$request.body.a..b", "${request.header.x}", "${}"]
)
def test_bad_selection_expressions_are_refused(bad: str) -> None:
    with pytest.raises(routes.SelectionError):
        routes.check_selection_expression(bad)


def test_clf_time_and_ids() -> None:
    assert routes.clf_time(NOW) == "04/Dec/2026:18:20:05 +0000"
    ids = {routes.new_request_id() for _ in range(200)}
    assert len(ids) == 200 and all(ID.match(i) for i in ids)


def test_error_frames_byte_for_byte() -> None:
    assert (
        routes.error_frame("Forbidden", "Cx4mPbZvIAMCJ7Q=", "Cx4rW0bnIAMFnVQ=")
        == '{"message": "Forbidden", "connectionId":"Cx4mPbZvIAMCJ7Q=", "requestId":"Cx4rW0bnIAMFnVQ="}'
    )
    assert (
        routes.error_frame("Internal server error", "a", "b")
        == '{"message": "Internal server error", "connectionId":"a", "requestId":"b"}'
    )


def _context_keys(context: dict[str, object]) -> None:
    assert context["messageDirection"] == "IN"
    assert context["extendedRequestId"] == context["requestId"]
    assert context["requestTime"] == "04/Dec/2026:18:20:05 +0000"
    assert context["requestTimeEpoch"] == 1796408405121
    assert context["connectedAt"] == 1796408405117
    assert (context["stage"], context["domainName"], context["apiId"]) == (
        "prod",
        "127.0.0.1:8443",
        "local",
    )
    assert context["connectionId"] == "Cx4mPbZvIAMCJ7Q="
    assert context["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "ua/1"}


def test_connect_event_shape() -> None:
    headers = routes.connect_headers(
        [("Host", "127.0.0.1:8080"), ("Authorization", "AWS4..."), ("X-A", "1"), ("X-A", "2")],
        "127.0.0.1",
        8080,
        NOW,
    )
    event = routes.connect_event(CALLER, "Cx4mPa1EIAMFq2w=", NOW, headers, [("name", "alice")])
    assert list(event) == [
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "requestContext",
        "isBase64Encoded",
    ]
    assert event["headers"]["X-A"] == "2"  # type: ignore[index]
    assert event["multiValueHeaders"]["X-A"] == ["1", "2"]  # type: ignore[index]
    assert "Authorization" not in event["headers"]  # type: ignore[operator]
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"  # type: ignore[index]
    assert event["headers"]["X-Amzn-Trace-Id"].startswith("Root=1-")  # type: ignore[index]
    assert event["queryStringParameters"] == {"name": "alice"}
    assert event["multiValueQueryStringParameters"] == {"name": ["alice"]}
    context = event["requestContext"]
    assert isinstance(context, dict)
    assert (context["routeKey"], context["eventType"]) == ("$connect", "CONNECT")
    assert "messageId" not in context and "body" not in event
    _context_keys(context)
    no_query = routes.connect_event(CALLER, "r", NOW, headers, [])
    assert "queryStringParameters" not in no_query
    json.dumps(event)  # JSON-able


def test_message_and_disconnect_event_shapes() -> None:
    message = routes.message_event(CALLER, "sendmessage", "Cx4pLdS1IAMFt8g=", "m", NOW, "hi")
    assert message["body"] == "hi" and message["isBase64Encoded"] is False
    context = message["requestContext"]
    assert isinstance(context, dict)
    assert (context["routeKey"], context["eventType"], context["messageId"]) == (
        "sendmessage",
        "MESSAGE",
        "m",
    )
    assert "headers" not in message
    _context_keys(context)
    gone = routes.disconnect_event(CALLER, "r", NOW, 1005, routes.disconnect_reason(1005, ""))
    context = gone["requestContext"]
    assert isinstance(context, dict)
    assert (context["eventType"], context["disconnectStatusCode"]) == ("DISCONNECT", 1005)
    assert context["disconnectReason"] == "Client-side close frame status not set"
    assert gone["headers"] == {
        "Host": "127.0.0.1:8443",
        "x-api-key": "",
        "X-Forwarded-For": "",
        "x-restapi": "",
    }
    _context_keys(context)


def test_iam_identity_and_authorizer_in_the_context() -> None:
    caller = Caller(
        **{**CALLER.__dict__, "iam": {"accessKey": "AKIA1", "accountId": "123456789012"}},
    )
    caller = Caller(**{**caller.__dict__, "authorizer": {"principalId": "me", "tier": "gold"}})
    context = routes.request_context(caller, "$connect", "CONNECT", "r", NOW)
    assert context["identity"] == {
        "sourceIp": "127.0.0.1",
        "userAgent": "ua/1",
        "accessKey": "AKIA1",
        "accountId": "123456789012",
    }
    assert context["authorizer"] == {"principalId": "me", "tier": "gold"}


@pytest.mark.parametrize(
    ("payload", "status", "body"),
    [
        (None, 200, None),
        ({"statusCode": 200, "body": "hi"}, 200, "hi"),
        ({"statusCode": "401"}, 401, None),
        ({"body": {"a": 1}}, 200, '{"a":1}'),
        ("plain", 200, '"plain"'),
    ],
)
def test_proxy_answer(payload: object, status: int, body: str | None) -> None:
    answer = routes.proxy_answer(payload)
    assert (answer.status, answer.body) == (status, body)


@pytest.mark.parametrize("bad", [{"statusCode": "abc"}, {"statusCode": 99}, {"headers": ["x"]}])
def test_unreadable_proxy_answers(bad: object) -> None:
    with pytest.raises(ValueError):
        routes.proxy_answer(bad)


ARN = "arn:aws:execute-api:us-east-1:123456789012:local/prod/$connect"


def _policy(effect: str, resource: str = ARN, action: str = "execute-api:Invoke") -> object:
    return {
        "principalId": "user-1",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": action, "Effect": effect, "Resource": resource}],
        },
        "context": {"tier": "gold", "n": 3, "dropped": {"nested": 1}},
    }


def test_authorizer_verdicts() -> None:
    allow = routes.authorizer_verdict(_policy("Allow"), ARN)
    assert (allow.allowed, allow.principal_id, allow.context) == (
        True,
        "user-1",
        {"tier": "gold", "n": 3},
    )
    assert not routes.authorizer_verdict(_policy("Deny"), ARN).allowed
    assert routes.authorizer_verdict(_policy("Allow", "arn:aws:execute-api:*:*:*/*"), ARN).allowed
    assert not routes.authorizer_verdict(_policy("Allow", "arn:aws:s3:::x"), ARN).allowed
    assert routes.authorizer_verdict(_policy("Allow", action="execute-api:*"), ARN).allowed
    with pytest.raises(ValueError):
        routes.authorizer_verdict({"principalId": "x"}, ARN)


def test_missing_identity() -> None:
    sources = ["route.request.header.Auth", "route.request.querystring.token"]
    assert routes.missing_identity(sources, [("auth", "t")], [("token", "x")]) is None
    assert routes.missing_identity(sources, [], [("token", "x")]) == "route.request.header.Auth"
    assert (
        routes.missing_identity(sources, [("Auth", "t")], [("token", "")])
        == "route.request.querystring.token"
    )
