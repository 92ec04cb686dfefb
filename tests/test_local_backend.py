"""`wsconn local` running a backend: real handlers in worker processes, real websockets clients,
callbacks through boto3's apigatewaymanagementapi built from the event, as on AWS."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.gateway_util import WAIT, EventLog, management_client, running_gateway
from wsconn.local import GatewayThread
from wsconn.local.flags import app_from_flags

ID = r"[A-Za-z0-9_-]{15}="

# The chat app of AWS's WebSocket samples, unchanged but for its table: a directory with one file
# per connection stands in for DynamoDB (every worker process sees it).
CHAT = """
import json
import os

import boto3

TABLE = os.environ["CHAT_TABLE"]


def handler(event, context):
    ctx = event["requestContext"]
    route, connection_id = ctx["routeKey"], ctx["connectionId"]
    if route == "$connect":
        open(os.path.join(TABLE, connection_id), "w").close()
    elif route == "$disconnect":
        _remove(connection_id)
    elif route == "sendmessage":
        api = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=f"https://{ctx['domainName']}/{ctx['stage']}",
        )
        data = json.loads(event["body"])["msg"].encode()
        for other in os.listdir(TABLE):
            if other == connection_id:
                continue
            try:
                api.post_to_connection(ConnectionId=other, Data=data)
            except api.exceptions.GoneException:
                _remove(other)
    return {"statusCode": 200}


def _remove(connection_id):
    try:
        os.remove(os.path.join(TABLE, connection_id))
    except FileNotFoundError:
        pass
"""


def write(directory: Path, name: str, source: str) -> None:
    (directory / name).write_text(textwrap.dedent(source))


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@contextmanager
def backend(events: EventLog, code_dir: Path, **flags: Any) -> Iterator[GatewayThread]:
    app = app_from_flags(code_dir=str(code_dir), **flags)
    with running_gateway(events, app=app) as gateway:
        yield gateway


def test_chat_app_broadcasts_to_everyone_but_the_sender_and_prunes_gone_ids(
    events: EventLog, tmp_path: Path
) -> None:
    table = tmp_path / "table"
    table.mkdir()
    write(tmp_path, "chat.py", CHAT)
    # A connection that left without its $disconnect running: the broadcast meets a 410.
    (table / "Gone00000000000=").touch()
    with (
        backend(events, tmp_path, handler="chat:handler", env=[f"CHAT_TABLE={table}"]) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as alice,
        connect(gateway.ws_url, open_timeout=WAIT) as bob,
        connect(gateway.ws_url, open_timeout=WAIT) as carol,
    ):
        # $connect ran before each handshake completed: all three are in the table.
        assert len(list(table.iterdir())) == 4
        alice.send(json.dumps({"action": "sendmessage", "msg": "hello from alice"}))
        assert bob.recv(timeout=WAIT) == "hello from alice"
        assert carol.recv(timeout=WAIT) == "hello from alice"
        bob.send(json.dumps({"action": "sendmessage", "msg": "hi, bob here"}))
        # Alice's first frame is Bob's message: she never got her own.
        assert alice.recv(timeout=WAIT) == "hi, bob here"
        assert carol.recv(timeout=WAIT) == "hi, bob here"
        assert not (table / "Gone00000000000=").exists()
        carol.close()
        events.wait_for("invoke", route="$disconnect")
        assert len(list(table.iterdir())) == 2
    invokes = events.named("invoke")
    assert {event["route"] for event in invokes} >= {"$connect", "sendmessage", "$disconnect"}
    assert all(event["error"] is None for event in invokes), invokes
    assert all(event["target"] == "chat:handler" for event in invokes)
    posts = events.named("post")
    assert len(posts) == 4 and all(post["status"] == 200 for post in posts)
    gone = events.named("gone")
    assert [g["status"] for g in gone] == [410] and gone[0]["connectionId"] == "Gone00000000000="


RECORDER = """
import json
import os

LOG = os.environ["EVENT_LOG"]


def handler(event, context):
    with open(LOG, "a") as log:
        log.write(json.dumps({"event": event, "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "remaining": context.get_remaining_time_in_millis(),
        }}) + "\\n")
    ctx = event["requestContext"]
    if ctx["routeKey"] == "$connect":
        protocols = event["headers"].get("Sec-WebSocket-Protocol")
        if protocols:
            return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": protocols.split(",")[0]}}
    if ctx["routeKey"] == "echo":
        return {"statusCode": 200, "body": event["body"]}
    return {"statusCode": 200}
"""


def recorded(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def _common_context(context: dict[str, Any], connection_id: str, gateway: GatewayThread) -> None:
    for key, kind in [
        ("routeKey", str),
        ("eventType", str),
        ("extendedRequestId", str),
        ("requestTime", str),
        ("messageDirection", str),
        ("stage", str),
        ("connectedAt", int),
        ("requestTimeEpoch", int),
        ("identity", dict),
        ("requestId", str),
        ("domainName", str),
        ("connectionId", str),
        ("apiId", str),
    ]:
        assert isinstance(context[key], kind), key
    assert (
        re.fullmatch(ID, context["requestId"])
        and context["extendedRequestId"] == context["requestId"]
    )
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", context["requestTime"])
    assert context["messageDirection"] == "IN"
    assert context["stage"] == "dev" and context["apiId"] == "local"
    assert context["connectionId"] == connection_id
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userAgent"] == "recorder/1"
    assert context["domainName"].startswith("127.0.0.1:")


def test_event_shapes_for_each_event_type_match_get_connections(
    events: EventLog, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    write(tmp_path, "recorder.py", RECORDER)
    with backend(
        events, tmp_path, handler="recorder:handler", env=[f"EVENT_LOG={log}"], two_way=["echo"]
    ) as gateway:
        with connect(
            gateway.ws_url + "?name=alice&name=al&room=1",
            open_timeout=WAIT,
            user_agent_header="recorder/1",
            subprotocols=["chat.v2", "chat.v1"],  # type: ignore[list-item]
        ) as client:
            assert client.subprotocol == "chat.v2"  # the $connect answer's header, in the 101
            connection_id = str(events.wait_for("connect")["connectionId"])
            client.send('{"action": "echo", "n": 1}')
            assert client.recv(timeout=WAIT) == '{"action": "echo", "n": 1}'
            client.send("plain text")
            events.wait_for("invoke", route="$default")
            info = management_client(gateway.endpoint).get_connection(ConnectionId=connection_id)
        events.wait_for("invoke", route="$disconnect")
    by_route = {entry["event"]["requestContext"]["routeKey"]: entry for entry in recorded(log)}
    assert set(by_route) == {"$connect", "echo", "$default", "$disconnect"}

    connect_event = by_route["$connect"]["event"]
    assert list(connect_event) == [
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "requestContext",
        "isBase64Encoded",
    ]
    assert connect_event["queryStringParameters"] == {"name": "al", "room": "1"}
    assert connect_event["multiValueQueryStringParameters"] == {
        "name": ["alice", "al"],
        "room": ["1"],
    }
    headers = connect_event["headers"]
    assert headers["Sec-WebSocket-Version"] == "13" and headers["User-Agent"] == "recorder/1"
    assert headers["X-Forwarded-For"] == "127.0.0.1" and headers["X-Forwarded-Proto"] == "https"
    assert all(isinstance(v, list) for v in connect_event["multiValueHeaders"].values())
    assert connect_event["isBase64Encoded"] is False and "body" not in connect_event
    context = connect_event["requestContext"]
    _common_context(context, connection_id, gateway)
    assert (context["routeKey"], context["eventType"]) == ("$connect", "CONNECT")
    assert "messageId" not in context and "disconnectStatusCode" not in context

    for route, body in [("echo", '{"action": "echo", "n": 1}'), ("$default", "plain text")]:
        message = by_route[route]["event"]
        assert message["body"] == body and message["isBase64Encoded"] is False
        assert "headers" not in message
        context = message["requestContext"]
        _common_context(context, connection_id, gateway)
        assert (context["routeKey"], context["eventType"]) == (route, "MESSAGE")
        assert (
            re.fullmatch(ID, context["messageId"]) and context["messageId"] != context["requestId"]
        )

    gone = by_route["$disconnect"]["event"]
    context = gone["requestContext"]
    _common_context(context, connection_id, gateway)
    assert (context["eventType"], context["disconnectStatusCode"]) == ("DISCONNECT", 1000)
    assert context["disconnectReason"] == ""
    assert set(gone["headers"]) == {"Host", "x-api-key", "X-Forwarded-For", "x-restapi"}

    # Every event names the same connection time, and so does GET @connections.
    connected_at = {entry["event"]["requestContext"]["connectedAt"] for entry in by_route.values()}
    assert len(connected_at) == 1
    assert int(info["ConnectedAt"].timestamp() * 1000) == connected_at.pop()
    assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "recorder/1"}
    request_ids = {entry["event"]["requestContext"]["requestId"] for entry in by_route.values()}
    assert len(request_ids) == 4

    # The Lambda context: a request id, the function's name, time left under the timeout.
    lambda_context = by_route["echo"]["context"]
    assert lambda_context["function_name"] == "recorder-handler"
    assert 0 < lambda_context["remaining"] <= 29000
    invoke = events.wait_for("invoke", route="echo")
    assert invoke["statusCode"] == 200 and invoke["error"] is None
    assert invoke["requestId"] == by_route["echo"]["event"]["requestContext"]["requestId"]


def _disconnect_of(log: Path, connection_id: str) -> dict[str, Any]:
    for entry in recorded(log):
        context = entry["event"]["requestContext"]
        if context["eventType"] == "DISCONNECT" and context["connectionId"] == connection_id:
            return dict(context)
    raise AssertionError(f"no $disconnect for {connection_id}")


def test_disconnect_after_each_kind_of_close(events: EventLog, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    write(tmp_path, "recorder.py", RECORDER)
    app = app_from_flags(
        code_dir=str(tmp_path), route=["$disconnect=recorder:handler"], env=[f"EVENT_LOG={log}"]
    )
    closes: dict[str, tuple[int, str]] = {}
    with running_gateway(events, app=app, idle_timeout=1.0) as gateway:

        @contextmanager
        def opened(agent: str) -> Iterator[tuple[ClientConnection, str]]:
            with connect(gateway.ws_url, open_timeout=WAIT, user_agent_header=agent) as client:
                yield client, str(events.wait_for("connect", userAgent=agent)["connectionId"])

        with opened("client-close") as (client, cid):
            client.close(code=4000, reason="done here")
            closes[cid] = (4000, "done here")
        with opened("no-status") as (client, cid):
            # A close frame with no status code (masked, empty payload), written on the socket.
            client.socket.sendall(b"\x88\x80\x00\x00\x00\x00")
            closes[cid] = (1005, "Client-side close frame status not set")
            events.wait_for("disconnect", connectionId=cid)
        with opened("deleted") as (client, cid):
            management_client(gateway.endpoint).delete_connection(ConnectionId=cid)
            closes[cid] = (1000, "")
        with opened("idle") as (client, cid), pytest.raises(ConnectionClosed):
            closes[cid] = (1001, "Going Away")
            client.recv(timeout=WAIT)
        with opened("shutdown") as (client, cid):
            closes[cid] = (1001, "Going Away")
            for earlier in list(closes)[:4]:
                events.wait_for("disconnect", connectionId=earlier)
            gateway.stop()
    # Leaving the block stopped the gateway: the last client was closed by the shutdown, and its
    # $disconnect still ran before the backends stopped.
    for connection_id, (code, reason) in closes.items():
        context = _disconnect_of(log, connection_id)
        assert (context["disconnectStatusCode"], context["disconnectReason"]) == (code, reason)
        assert context["routeKey"] == "$disconnect"


def test_connect_refusals(events: EventLog, tmp_path: Path) -> None:
    write(
        tmp_path,
        "gate.py",
        """
        import time

        def handler(event, context):
            name = (event.get("queryStringParameters") or {}).get("as")
            if name == "raise":
                raise ValueError("no such user")
            if name == "slow":
                time.sleep(30)
            if name == "stranger":
                return {"statusCode": 401, "body": "who are you?"}
            if name == "bad":
                return {"statusCode": "lots"}
            return {"statusCode": 200}
        """,
    )
    with backend(events, tmp_path, route=["$connect=gate:handler"], handler_timeout=1.0) as gateway:
        for who, status in [("stranger", 401), ("raise", 502), ("slow", 502), ("bad", 502)]:
            with pytest.raises(InvalidStatus) as refused:
                connect(f"{gateway.ws_url}?as={who}", open_timeout=WAIT)
            assert refused.value.response.status_code == status, who
        assert refused.value.response.body is not None
        with connect(f"{gateway.ws_url}?as=friend", open_timeout=WAIT) as client:
            client.send("no routes but $connect")
            assert json.loads(client.recv(timeout=WAIT))["message"] == "Forbidden"
    errors = [event["error"] for event in events.named("invoke")]
    assert any("no such user" in str(error) for error in errors)
    assert any("timed out" in str(error).lower() for error in errors)
    assert len(events.named("connect")) == 1


def test_message_outcomes(events: EventLog, tmp_path: Path) -> None:
    write(
        tmp_path,
        "routes.py",
        """
        import json, time

        def boom(event, context):
            raise RuntimeError("kaboom")

        def slow(event, context):
            time.sleep(30)

        def answer(event, context):
            body = json.loads(event["body"])
            return {"statusCode": body.get("status", 200), "body": "answer:" + body["action"]}
        """,
    )
    with (
        backend(
            events,
            tmp_path,
            route=[
                "boom=routes:boom",
                "slow=routes:slow",
                "twoway=routes:answer",
                "oneway=routes:answer",
            ],
            two_way=["twoway", "boom"],
            handler_timeout=1.0,
        ) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as client,
    ):
        connection_id = str(events.wait_for("connect")["connectionId"])

        def frame(body: dict[str, object] | str) -> str:
            client.send(body if isinstance(body, str) else json.dumps(body))
            received = client.recv(timeout=WAIT)
            assert isinstance(received, str)
            return received

        error = re.compile(
            r'\{"message": "(Internal server error|Forbidden)", "connectionId":"(.+)", "requestId":"(.+)"\}'
        )
        for body in ({"action": "boom"}, {"action": "slow"}):
            match = error.fullmatch(frame(body))
            assert match and match.group(1) == "Internal server error", body
            assert match.group(2) == connection_id
        assert frame({"action": "twoway"}) == "answer:twoway"
        # One-way: nothing comes back, so the next frame is the Forbidden of an unknown route.
        client.send(json.dumps({"action": "oneway"}))
        events.wait_for("invoke", route="oneway")
        match = error.fullmatch(frame({"action": "nothing-here"}))
        assert match and match.group(1) == "Forbidden"
        # A non-2xx status on a two-way route sends nothing (the contract's choice).
        client.send(json.dumps({"action": "twoway", "status": 500}))
        events.wait_for("invoke", route="twoway", statusCode=500)
        assert error.fullmatch(frame("not json"))
    boom = events.wait_for("invoke", route="boom")
    assert "kaboom" in str(boom["error"]) and boom["statusCode"] == 502


AUTH = """
import json
import os


def authorize(event, context):
    with open(os.environ["EVENT_LOG"], "a") as log:
        log.write(json.dumps({"event": event}) + "\\n")
    token = event["headers"].get("Auth") or (event.get("queryStringParameters") or {}).get("token")
    if token == "boom":
        raise KeyError("database down")
    if token == "nobody":
        raise Exception("Unauthorized")
    effect = "Allow" if token == "letmein" else "Deny"
    return {
        "principalId": "user-7",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect,
                           "Resource": event["methodArn"]}],
        },
        "context": {"tier": "gold", "limit": 5},
    }


def connect(event, context):
    with open(os.environ["EVENT_LOG"], "a") as log:
        log.write(json.dumps({"event": event}) + "\\n")
    return {"statusCode": 200}
"""


def test_request_authorizer_outcomes(events: EventLog, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    write(tmp_path, "auth.py", AUTH)
    with backend(
        events,
        tmp_path,
        route=["$connect=auth:connect"],
        authorizer="auth:authorize",
        identity_source="route.request.header.Auth",
        env=[f"EVENT_LOG={log}"],
    ) as gateway:
        for token, status in [(None, 401), ("wrong", 403), ("nobody", 401), ("boom", 500)]:
            headers = {} if token is None else {"Auth": token}
            with pytest.raises(InvalidStatus) as refused:
                connect(gateway.ws_url, open_timeout=WAIT, additional_headers=headers)
            assert refused.value.response.status_code == status, token
        with connect(gateway.ws_url, open_timeout=WAIT, additional_headers={"Auth": "letmein"}):
            pass
    entries = [entry["event"] for entry in recorded(log)]
    # The missing identity never reached the authorizer: 4 authorizer calls, 1 $connect.
    authorizer_events = [event for event in entries if event.get("type") == "REQUEST"]
    assert len(authorizer_events) == 4
    first = authorizer_events[0]
    assert first["methodArn"] == "arn:aws:execute-api:us-east-1:123456789012:local/dev/$connect"
    assert set(first) >= {
        "type",
        "methodArn",
        "headers",
        "multiValueHeaders",
        "stageVariables",
        "requestContext",
    }
    assert first["requestContext"]["eventType"] == "CONNECT"
    connects = [event for event in entries if event.get("type") != "REQUEST"]
    assert len(connects) == 1
    authorizer = connects[0]["requestContext"]["authorizer"]
    assert authorizer["principalId"] == "user-7"
    assert (authorizer["tier"], authorizer["limit"]) == ("gold", 5)
    assert isinstance(authorizer["integrationLatency"], int)
    assert [d["status"] for d in events.named("denied")] == [401, 403, 401, 500]


def test_iam_connect_events_carry_the_callers_identity(events: EventLog, tmp_path: Path) -> None:
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY

    log = tmp_path / "events.jsonl"
    write(tmp_path, "recorder.py", RECORDER)
    with backend(
        events, tmp_path, handler="recorder:handler", env=[f"EVENT_LOG={log}"], connect_auth="iam"
    ) as gateway:
        request = AWSRequest(method="GET", url=gateway.ws_url.replace("ws://", "http://"))
        credentials = Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY)
        SigV4QueryAuth(credentials, "execute-api", "us-east-1").add_auth(request)
        with connect(request.url.replace("http://", "ws://"), open_timeout=WAIT) as client:
            client.send("hi")
            events.wait_for("invoke", route="$default")
        with pytest.raises(InvalidStatus):
            connect(gateway.ws_url, open_timeout=WAIT)
        events.wait_for("invoke", route="$disconnect")
    identities = [entry["event"]["requestContext"]["identity"] for entry in recorded(log)]
    assert len(identities) == 3  # $connect, $default, $disconnect; the unsigned one never ran
    for identity in identities:
        assert identity["accessKey"] == FAKE_ACCESS_KEY
        assert identity["accountId"] == "123456789012"
        assert identity["userArn"].startswith("arn:aws:iam::123456789012:")
        assert identity["caller"] and identity["user"]


def test_lambda_targets_through_the_invoke_api(events: EventLog, tmp_path: Path) -> None:
    from tests.lambda_server import lambda_server

    def echo(event: Any) -> Any:
        return {"statusCode": 200, "body": "echo:" + event["body"]}

    def fail(event: Any) -> Any:
        raise ValueError("remote failure")

    def refuse(event: Any) -> Any:
        return {"statusCode": 403}

    with lambda_server({"Echo": echo, "Fail": fail, "Gate": refuse}) as server:
        with (
            backend(
                events,
                tmp_path,
                route=[
                    f"echo=lambda:Echo@{server.url}",
                    f"fail=lambda:Fail@{server.url}",
                    f"missing=lambda:Nope@{server.url}",
                ],
                two_way=["*"],
            ) as gateway,
            connect(gateway.ws_url, open_timeout=WAIT) as client,
        ):
            client.send('{"action": "echo"}')
            assert client.recv(timeout=WAIT) == 'echo:{"action": "echo"}'
            for action in ("fail", "missing"):
                client.send(json.dumps({"action": action}))
                frame = json.loads(client.recv(timeout=WAIT))
                assert frame["message"] == "Internal server error", action
        with (
            backend(events, tmp_path, route=[f"$connect=lambda:Gate@{server.url}"]) as gateway,
            pytest.raises(InvalidStatus) as refused,
        ):
            connect(gateway.ws_url, open_timeout=WAIT)
        assert refused.value.response.status_code == 403
    name, _, event = server.received[0]
    assert name == "Echo" and event["requestContext"]["routeKey"] == "echo"
    failed = events.wait_for("invoke", route="fail")
    assert "remote failure" in str(failed["error"])
    assert failed["target"] == f"lambda:Fail@{server.url}"


def test_reload_on_change_keeps_clients_connected(events: EventLog, tmp_path: Path) -> None:
    write(tmp_path, "echo.py", "def handler(event, context):\n    return {'body': 'v1'}\n")
    with (
        backend(events, tmp_path, handler="echo:handler", two_way=["*"]) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as client,
    ):
        client.send("which?")
        assert client.recv(timeout=WAIT) == "v1"
        source = tmp_path / "echo.py"
        source.write_text("def handler(event, context):\n    return {'body': 'v2, edited'}\n")
        # A new mtime even on filesystems with coarse timestamps.
        stat = source.stat()
        import os

        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
        client.send("which now?")
        assert client.recv(timeout=WAIT) == "v2, edited"
    assert len(events.named("connect")) == 1
    assert len(events.named("disconnect")) == 1


def test_crashing_and_hanging_handlers_cost_only_their_invocation(
    events: EventLog, tmp_path: Path
) -> None:
    write(
        tmp_path,
        "bad.py",
        """
        import os

        def crash(event, context):
            os._exit(3)

        def spin(event, context):
            while True:
                pass

        def ok(event, context):
            return {"body": "still fine"}
        """,
    )
    with (
        backend(
            events,
            tmp_path,
            route=["crash=bad:crash", "spin=bad:spin", "ok=bad:ok"],
            two_way=["*"],
            handler_timeout=1.0,
        ) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as first,
        connect(gateway.ws_url, open_timeout=WAIT) as second,
    ):
        first.send('{"action": "crash"}')
        second.send('{"action": "spin"}')
        assert json.loads(first.recv(timeout=WAIT))["message"] == "Internal server error"
        assert json.loads(second.recv(timeout=WAIT))["message"] == "Internal server error"
        for client in (first, second):
            client.send('{"action": "ok"}')
            assert client.recv(timeout=WAIT) == "still fine"
    assert not events.named("error")
    assert len(events.named("disconnect")) == 2


def test_a_handler_that_raises_at_import_is_refused_before_listening(
    events: EventLog, tmp_path: Path
) -> None:
    from wsconn.errors import ConfigError

    write(tmp_path, "broken.py", "import json\nraise RuntimeError('no config file')\n")
    with pytest.raises(ConfigError) as error, backend(events, tmp_path, handler="broken:handler"):
        pass
    assert "no config file" in str(error.value) and "\n" not in str(error.value)
    assert not events.named("listening")


def test_handler_output_becomes_log_events(events: EventLog, tmp_path: Path) -> None:
    write(
        tmp_path,
        "talk.py",
        """
        import sys

        def handler(event, context):
            print("to stdout")
            print("to stderr", file=sys.stderr)
            return {"body": "ok"}
        """,
    )
    with (
        backend(events, tmp_path, route=["$default=talk:handler"], two_way=["*"]) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as client,
    ):
        client.send("x")
        assert client.recv(timeout=WAIT) == "ok"
        out = events.wait_for("log", stream="stdout")
        err = events.wait_for("log", stream="stderr")
    assert (out["route"], out["line"]) == ("$default", "to stdout")
    assert (err["route"], err["line"]) == ("$default", "to stderr")


CORPORATE = """
import json
import os
import ssl
import urllib.request

import boto3


def handler(event, context):
    ctx = event["requestContext"]
    # The user's own trust (a corporate proxy's root) still works for their other calls...
    tls = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
    corporate = urllib.request.urlopen(os.environ["CORPORATE_URL"], context=tls).read().decode()
    # ...and the callback to the gateway is trusted too.
    api = boto3.client(
        "apigatewaymanagementapi", endpoint_url=f"https://{ctx['domainName']}/{ctx['stage']}"
    )
    api.post_to_connection(ConnectionId=ctx["connectionId"], Data=b"callback ok")
    # A client built with no endpoint at all reaches the gateway through the environment.
    bare = boto3.client("apigatewaymanagementapi")
    info = bare.get_connection(ConnectionId=ctx["connectionId"])
    return {"body": corporate + " / " + info["Identity"]["SourceIp"]}
"""


@pytest.mark.parametrize("given_by", ["environment", "--env"])
def test_callbacks_trust_the_run_ca_and_keep_the_users_own_bundle(
    events: EventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_by: str
) -> None:
    import http.server
    import ssl
    import threading

    import trustme

    corporate_ca = trustme.CA()
    bundle = tmp_path / "corporate-root.pem"
    corporate_ca.cert_pem.write_to_path(str(bundle))

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"corporate ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    corporate_ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = [f"CORPORATE_URL=https://127.0.0.1:{server.server_address[1]}/"]
    if given_by == "environment":
        monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    else:
        env.append(f"AWS_CA_BUNDLE={bundle}")
    write(tmp_path, "corp.py", CORPORATE)
    try:
        with (
            backend(
                events, tmp_path, route=["$default=corp:handler"], env=env, two_way=["*"]
            ) as gateway,
            connect(gateway.ws_url, open_timeout=WAIT) as client,
        ):
            client.send("go")
            assert client.recv(timeout=WAIT) == "callback ok"
            assert client.recv(timeout=WAIT) == "corporate ok / 127.0.0.1"
    finally:
        server.shutdown()
    invoke = events.wait_for("invoke", route="$default")
    assert invoke["error"] is None, invoke


def test_a_route_that_cannot_run_here_answers_as_a_failing_integration(events: EventLog) -> None:
    from wsconn.local.app import App, Route

    why = "nodejs20.x function SendFn: no Lambda Invoke API endpoint given"
    app = App(routes={"send": Route("send", None, unavailable=why)})
    with (
        running_gateway(events, app=app) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as client,
    ):
        client.send('{"action": "send"}')
        assert json.loads(client.recv(timeout=WAIT))["message"] == "Internal server error"
    invoke = events.wait_for("invoke", route="send")
    assert (invoke["error"], invoke["target"]) == (why, None)
    with (
        running_gateway(
            events, app=App(routes={"$connect": Route("$connect", None, unavailable=why)})
        ) as gateway,
        pytest.raises(InvalidStatus) as refused,
    ):
        connect(gateway.ws_url, open_timeout=WAIT)
    assert refused.value.response.status_code == 502


def test_integration_timeout_fails_the_route_while_the_function_runs_on(
    events: EventLog, tmp_path: Path
) -> None:
    import time

    from wsconn.local.app import App, Function, PythonTarget, Route

    done = tmp_path / "finished"
    write(
        tmp_path,
        "long.py",
        f"""
        import time

        def handler(event, context):
            time.sleep(2)
            open({str(done)!r}, "w").close()
            return {{"body": "too late"}}
        """,
    )
    # As a template describes it: a Lambda timeout of 60 s behind API Gateway's shorter limit.
    function = Function(PythonTarget("long", "handler"), "LongFn", code_dir=tmp_path, timeout=60)
    app = App(
        routes={"$default": Route("$default", function, two_way=True)}, integration_timeout=0.5
    )
    with (
        running_gateway(events, app=app) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as client,
    ):
        client.send("go")
        assert json.loads(client.recv(timeout=WAIT))["message"] == "Internal server error"
        for _ in range(int(WAIT / 0.05)):
            if done.exists():
                break
            time.sleep(0.05)
        assert done.exists()
    invoke = events.wait_for("invoke", route="$default")
    assert invoke["statusCode"] == 504 and "timed out" in str(invoke["error"])


def test_disconnect_after_the_maximum_duration(events: EventLog, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    write(tmp_path, "recorder.py", RECORDER)
    app = app_from_flags(
        code_dir=str(tmp_path), route=["$disconnect=recorder:handler"], env=[f"EVENT_LOG={log}"]
    )
    with (
        running_gateway(events, app=app, max_duration=0.5) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as client,
        pytest.raises(ConnectionClosed),
    ):
        client.recv(timeout=WAIT)
    gone = events.wait_for("disconnect")
    assert gone["by"] == "max-duration"
    events.wait_for("invoke", route="$disconnect")
    context = _disconnect_of(log, str(gone["connectionId"]))
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (1001, "Going Away")


def test_posting_to_a_connection_from_its_own_connect_answers_410(
    events: EventLog, tmp_path: Path
) -> None:
    outcome = tmp_path / "outcome"
    write(
        tmp_path,
        "early.py",
        f"""
        import boto3

        def handler(event, context):
            ctx = event["requestContext"]
            api = boto3.client(
                "apigatewaymanagementapi",
                endpoint_url=f"https://{{ctx['domainName']}}/{{ctx['stage']}}",
            )
            try:
                api.post_to_connection(ConnectionId=ctx["connectionId"], Data=b"too early")
                result = "delivered"
            except api.exceptions.GoneException:
                result = "gone"
            with open({str(outcome)!r}, "w") as out:
                out.write(result)
            return {{"statusCode": 200}}
        """,
    )
    with (
        backend(events, tmp_path, route=["$connect=early:handler"]) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as client,
    ):
        client.send("hello")
        # The first frame is the Forbidden answer: the early POST delivered nothing.
        assert json.loads(client.recv(timeout=WAIT))["message"] == "Forbidden"
    assert outcome.read_text() == "gone"
