"""`wsconn local --template`: a SAM / CloudFormation app run as written, with real clients.

The chat app of the backend tests, wired by a template instead of flags; a Node.js function
served through `--lambda-endpoint` by the tests' Invoke API server; a REQUEST authorizer and an
AWS_IAM `$connect` from templates; `--list` exactly as printed.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, run_wsconn
from tests.gateway_util import WAIT, EventLog, running_gateway
from tests.lambda_server import lambda_server
from tests.templates import (
    AUTHORIZER_YAML,
    CFN_FILES,
    CFN_JSON,
    SAM_CHAT,
    SAM_CHAT_FILES,
    write_app,
)
from tests.test_local_backend import CHAT
from wsconn.local.app import App
from wsconn.local.template import read_app

RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"

# The chat app as SAM deploys it: three functions on one module, the table by reference.
CHAT_TEMPLATE = f"""\
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: {RUNTIME}
    CodeUri: src/
    Handler: chat.handler
    Environment:
      Variables:
        CHAT_TABLE: !Ref ConnectionsTable
Resources:
  ChatApi:
    Type: AWS::ApiGatewayV2::Api
    Properties: {{Name: chat, ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.action}}
  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {{ApiId: !Ref ChatApi, RouteKey: $connect, Target: !Join [/, [integrations, !Ref ConnectInteg]]}}
  ConnectInteg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref ChatApi
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{OnConnectFunction.Arn}}/invocations
  DisconnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {{ApiId: !Ref ChatApi, RouteKey: $disconnect, Target: !Join [/, [integrations, !Ref DisconnectInteg]]}}
  DisconnectInteg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref ChatApi
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{OnDisconnectFunction.Arn}}/invocations
  SendRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {{ApiId: !Ref ChatApi, RouteKey: sendmessage, Target: !Join [/, [integrations, !Ref SendInteg]]}}
  SendInteg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref ChatApi
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{SendMessageFunction.Arn}}/invocations
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties: {{ApiId: !Ref ChatApi, StageName: prod}}
  ConnectionsTable:
    Type: AWS::DynamoDB::Table
    Properties: {{TableName: chat_connections}}
  OnConnectFunction: {{Type: AWS::Serverless::Function}}
  OnDisconnectFunction: {{Type: AWS::Serverless::Function}}
  SendMessageFunction: {{Type: AWS::Serverless::Function}}
"""

# One Node.js function on $default, two-way; connections are accepted (no $connect route).
NODE_TEMPLATE = """\
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.action}
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $default
      RouteResponseSelectionExpression: $default
      Target: !Sub integrations/${Integ}
  DefaultResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties: {ApiId: !Ref Api, RouteId: !Ref DefaultRoute, RouteResponseKey: $default}
  Integ:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${NodeFn.Arn}/invocations
  NodeFn:
    Type: AWS::Lambda::Function
    Properties: {Code: node, Handler: index.handler, Runtime: nodejs20.x}
"""

INTERNAL_ERROR = re.compile(
    r'\{"message": "Internal server error", "connectionId":"[^"]+", "requestId":"[^"]+"\}'
)


def read_event(stream: IO[bytes]) -> dict[str, Any]:
    """The gateway's next JSON event line."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    assert selector.select(WAIT), "no event within the timeout"
    line = stream.readline()
    assert line, "the gateway's stdout closed"
    return dict(json.loads(line))


@contextmanager
def wsconn_local(*args: str, cwd: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """`wsconn local --port 0 --json ARGS` in CWD, and its `listening` event."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wsconn", "local", "--port", "0", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: a line read is never hidden from the selector in a buffer
        cwd=cwd,
        env=dict(os.environ),
    )
    assert process.stdout is not None
    try:
        # Handlers' log lines (e.g. a runtime note as they load) may come first.
        listening = events_until(process.stdout, "listening")[-1]
        yield process, listening
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=WAIT)


def events_until(stream: IO[bytes], name: str, **match: object) -> list[dict[str, Any]]:
    """Events read up to and including the first called NAME with fields equal to MATCH."""
    seen = []
    while True:
        event = read_event(stream)
        seen.append(event)
        if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
            return seen


def test_chat_app_from_a_sam_template(tmp_path: Path) -> None:
    """The backend tests' chat app, wired by a template, its table pointed at a local one."""
    table = tmp_path / "table"
    table.mkdir()
    app_dir = write_app(
        tmp_path / "app", CHAT_TEMPLATE, {"src/chat.py": textwrap.dedent(CHAT)}, "template.yaml"
    ).parent
    (table / "Gone00000000000=").touch()  # left without its $disconnect: meets a 410
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"CHAT_TABLE": str(table)}}))
    with wsconn_local("--template", ".", "--env-vars", str(env_file), cwd=app_dir) as (
        process,
        listening,
    ):
        assert process.stdout is not None
        # The template's one Stage is the default --stage.
        assert listening["stage"] == "prod" and listening["wsUrl"].endswith("/prod")
        assert listening["routes"] == ["$connect", "$disconnect", "sendmessage"]
        ws_url = listening["wsUrl"]
        with (
            connect(ws_url, open_timeout=WAIT) as alice,
            connect(ws_url, open_timeout=WAIT) as bob,
            connect(ws_url, open_timeout=WAIT) as carol,
        ):
            assert len(list(table.iterdir())) == 4
            alice.send(json.dumps({"action": "sendmessage", "msg": "hello from alice"}))
            assert bob.recv(timeout=WAIT) == "hello from alice"
            assert carol.recv(timeout=WAIT) == "hello from alice"
            bob.send(json.dumps({"action": "sendmessage", "msg": "hi, bob here"}))
            assert alice.recv(timeout=WAIT) == "hi, bob here"
            assert carol.recv(timeout=WAIT) == "hi, bob here"
            assert not (table / "Gone00000000000=").exists()
            carol.close()
            seen = events_until(process.stdout, "invoke", route="$disconnect")
            assert len(list(table.iterdir())) == 2
    invokes = [event for event in seen if event["event"] == "invoke"]
    assert {event["route"] for event in invokes} == {"$connect", "sendmessage", "$disconnect"}
    assert all(event["error"] is None for event in invokes), invokes
    assert all(event["target"] == "chat:handler" for event in invokes)
    posts = [event for event in seen if event["event"] == "post"]
    assert len(posts) == 4 and all(post["status"] == 200 for post in posts)
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    assert (
        "wsconn local: template.yaml: API ChatApi, routes $connect, $disconnect, sendmessage"
        in stderr
    )
    # --env-vars gave the table: nothing was substituted.
    assert "environment values" not in stderr


def test_environment_substitution_is_said_at_start(tmp_path: Path) -> None:
    text = CHAT_TEMPLATE
    app_dir = write_app(
        tmp_path, text, {"src/chat.py": textwrap.dedent(CHAT)}, "template.yaml"
    ).parent
    with wsconn_local("--template", "template.yaml", cwd=app_dir) as (process, _):
        process.terminate()
        process.wait(timeout=WAIT)
    assert process.stderr is not None
    lines = process.stderr.read().decode().splitlines()
    assert lines[:3] == [
        "wsconn local: template.yaml: API ChatApi, routes $connect, $disconnect, sendmessage "
        "(--list shows them)",
        "wsconn local: environment values that name what wsconn does not run (point them at "
        "local services with --env-vars):",
        "wsconn local:   CHAT_TABLE=chat_connections (OnConnectFunction, OnDisconnectFunction, "
        "SendMessageFunction)  <- Ref ConnectionsTable (AWS::DynamoDB::Table: its TableName)",
    ]


def test_node_function_through_lambda_endpoint(tmp_path: Path) -> None:
    app_dir = write_app(
        tmp_path, NODE_TEMPLATE, {"node/index.js": CFN_FILES["node/index.js"]}, "template.yaml"
    ).parent

    def node_fn(event: dict[str, Any]) -> dict[str, Any]:
        # What node/index.js answers: the body back.
        return {"statusCode": 200, "body": f"node: {event['body']}"}

    with (
        lambda_server({"NodeFn": node_fn}) as server,
        wsconn_local("--template", ".", "--lambda-endpoint", server.url, cwd=app_dir) as (
            _,
            listening,
        ),
        connect(listening["wsUrl"], open_timeout=WAIT) as client,
    ):
        client.send("hello")
        assert client.recv(timeout=WAIT) == "node: hello"  # a two-way route
    [(name, _, event)] = server.received
    assert name == "NodeFn"  # by logical id, as `sam local start-lambda` serves it
    assert event["requestContext"]["routeKey"] == "$default"
    assert event["body"] == "hello"


def test_node_function_without_endpoint_is_reported_and_fails_as_an_integration(
    tmp_path: Path,
) -> None:
    app_dir = write_app(tmp_path, NODE_TEMPLATE, {}, "template.yaml").parent
    with (
        wsconn_local("--template", ".", cwd=app_dir) as (process, listening),
        connect(listening["wsUrl"], open_timeout=WAIT) as client,
    ):
        client.send("hello")
        frame = client.recv(timeout=WAIT)
        assert isinstance(frame, str) and INTERNAL_ERROR.fullmatch(frame), frame
        assert process.stdout is not None
        [*_, invoke] = events_until(process.stdout, "invoke")
        assert invoke["route"] == "$default"
        assert invoke["error"] == "NodeFn (nodejs20.x) needs --lambda-endpoint"
        process.terminate()
        process.wait(timeout=WAIT)
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    assert (
        "wsconn local: WARNING: NodeFn (nodejs20.x) is not a Python function wsconn runs itself, "
        "so route $default answers as a failing integration; serve it with `sam local "
        "start-lambda -t template.yaml` and add --lambda-endpoint http://127.0.0.1:3001"
    ) in stderr


# --- authorization from templates (in-process gateway) --------------------------------------------

AUTHORIZE = """\
def authorize(event, context):
    allowed = event["headers"].get("Auth") == "letmein"
    return {
        "principalId": "alice",
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": "Allow" if allowed else "Deny",
             "Resource": event["methodArn"]}]},
        "context": {"team": "blue"},
    }
"""

ECHO_AUTHORIZER = """\
import json


def handler(event, context):
    return {"statusCode": 200, "body": json.dumps(event["requestContext"].get("authorizer"))}
"""


def test_request_authorizer_from_a_template(tmp_path: Path) -> None:
    text = AUTHORIZER_YAML.replace("python3.11", RUNTIME).replace(
        "      Target: !Sub integrations/${Integration}\n  Integration:",
        "      RouteResponseSelectionExpression: $default\n"
        "      Target: !Sub integrations/${Integration}\n"
        "  DefaultResponse:\n    Type: AWS::ApiGatewayV2::RouteResponse\n"
        "    Properties: {ApiId: !Ref Api, RouteId: !Ref DefaultRoute, RouteResponseKey: $default}\n"
        "  Integration:",
    )
    path = write_app(
        tmp_path, text, {"app.py": ECHO_AUTHORIZER, "auth.py": AUTHORIZE}, "template.yaml"
    )
    app = read_app(path, flags=App()).app
    assert app.routes["$default"].two_way
    events = EventLog()
    with running_gateway(events, app=app) as gateway:
        # Both identity sources (header Auth, query token) must be there, as on AWS.
        for headers, query, status in (
            ({"Auth": "letmein"}, "", 401),
            ({"Auth": "wrong"}, "?token=t", 403),
        ):
            with pytest.raises(InvalidStatus) as refused:
                connect(gateway.ws_url + query, additional_headers=headers, open_timeout=WAIT)
            assert refused.value.response.status_code == status
        with connect(
            gateway.ws_url + "?token=t", additional_headers={"Auth": "letmein"}, open_timeout=WAIT
        ) as client:
            client.send("who am i")
            authorizer = json.loads(client.recv(timeout=WAIT))
    assert authorizer["principalId"] == "alice" and authorizer["team"] == "blue"


def test_aws_iam_connect_from_a_template(tmp_path: Path) -> None:
    path = write_app(tmp_path, CFN_JSON, CFN_FILES, "template.json")
    app = read_app(path, flags=App()).app
    assert app.connect_auth == "iam"
    events = EventLog()
    with running_gateway(events, app=app) as gateway:
        with pytest.raises(InvalidStatus) as refused:
            connect(gateway.ws_url, open_timeout=WAIT)
        assert refused.value.response.status_code == 403
        request = AWSRequest(method="GET", url=gateway.ws_url.replace("ws://", "http://"))
        SigV4Auth(
            Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY), "execute-api", "us-east-1"
        ).add_auth(request)
        with connect(gateway.ws_url, additional_headers=dict(request.headers), open_timeout=WAIT):
            invoke = events.wait_for("invoke", route="$connect")
    assert invoke["error"] is None and invoke["target"] == "handlers.connect:on_connect"


# --- --list through the command line --------------------------------------------------------------


def test_list_prints_the_routes_and_exits_0(tmp_path: Path) -> None:
    write_app(tmp_path, SAM_CHAT, SAM_CHAT_FILES, "template.yaml")
    result = run_wsconn("local", "--template", str(tmp_path), "--list")
    assert result.code == 0, result.stderr
    assert result.stdout == (
        "route selection: $request.body.action\n"
        "$connect     NONE  one-way  OnConnectFunction     app.handler        python3.11\n"
        "$disconnect  NONE  one-way  OnDisconnectFunction  app.handler        python3.11\n"
        "echo         NONE  two-way  SendMessageFunction   chat/send.handler  python3.11\n"
        "sendmessage  NONE  one-way  SendMessageFunction   chat/send.handler  python3.11\n"
    )
    assert result.stderr == ""


def test_list_json_with_flags_on_top(tmp_path: Path) -> None:
    path = write_app(tmp_path, CFN_JSON, CFN_FILES, "template.json")
    result = run_wsconn(
        "local",
        "--template",
        str(path),
        "--route",
        "chat/ping=pinger:ping",
        "--two-way",
        "chat/join",
        "--lambda-endpoint",
        "http://127.0.0.1:3001/",
        "--list",
        "-o",
        "json",
    )
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["template"] == str(path) and data["api"] == "Api" and data["stage"] == "live"
    routes = {route["routeKey"]: route for route in data["routes"]}
    assert routes["chat/ping"]["function"] == "pinger-ping"
    assert routes["chat/ping"]["handler"] == "pinger:ping"
    assert routes["chat/ping"]["unavailable"] is None
    assert routes["chat/join"]["twoWay"] is True
    assert routes["$default"]["unavailable"] is None  # served by the endpoint
    # Only the API key note is left: the rest was taken over by flags and the endpoint.
    assert result.stderr == (
        "wsconn local: WARNING: route chat/join (JoinRoute) requires an API key on AWS; "
        "wsconn local does not check API keys\n"
    )


def test_list_without_template_lists_the_flags_routes() -> None:
    result = run_wsconn(
        "local", "--handler", "app:handler", "--route", "sendmessage=chat:send", "--list"
    )
    assert result.code == 0, result.stderr
    assert result.stdout == (
        "route selection: $request.body.action\n"
        "$connect     NONE  one-way  app-handler  app:handler  -\n"
        "$disconnect  NONE  one-way  app-handler  app:handler  -\n"
        "$default     NONE  one-way  app-handler  app:handler  -\n"
        "sendmessage  NONE  one-way  chat-send    chat:send    -\n"
        "*            NONE  one-way  app-handler  app:handler  -\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env-vars", "env.json"], "wsconn: configuration: --env-vars needs --template\n"),
        (
            ["--lambda-endpoint", "http://127.0.0.1:3001"],
            "wsconn: configuration: --lambda-endpoint needs --template\n",
        ),
        (
            ["--template", "nowhere.yaml", "--list"],
            "wsconn: configuration: --template nowhere.yaml: no such file or directory\n",
        ),
    ],
)
def test_template_option_errors_exit_8(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_wsconn("local", *args)
    assert result.code == 8
    assert result.stderr == message
    assert result.stdout == ""


def test_template_errors_exit_8_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text("Resources:\n  Api:\n    Type: [\n")
    result = run_wsconn("local", "--template", str(tmp_path), "--list")
    assert result.code == 8
    assert result.stderr.startswith("wsconn: configuration: template.yaml line 4: ")
    assert result.stderr.count("\n") == 1
    (tmp_path / "template.yaml").write_text(
        "Resources:\n  Api:\n    Type: AWS::ApiGatewayV2::Api\n"
        "    Properties: {ProtocolType: HTTP}\n"
    )
    result = run_wsconn("local", "--template", str(tmp_path))
    assert result.code == 8
    assert result.stderr == (
        "wsconn: configuration: template.yaml: not a WebSocket API: Api (ProtocolType HTTP); "
        "wsconn local runs an AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--parameter-overrides", "TableName=t1 Stage=dev"],
        ["--parameter-overrides", "TableName=t1", "Stage=dev"],  # SAM's unquoted words
        ["--parameter-overrides=TableName=t1", "Stage=dev"],
        ["--parameter-overrides", "TableName=t1", "--parameter-overrides", "Stage=dev"],
    ],
)
def test_parameter_overrides_forms_on_the_command_line(tmp_path: Path, args: list[str]) -> None:
    write_app(tmp_path, SAM_CHAT, SAM_CHAT_FILES, "template.yaml")
    result = run_wsconn("local", "--template", str(tmp_path), *args, "--list", "-o", "json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["stage"] == "dev"  # the Stage resource's StageName: !Ref Stage


def test_parameter_overrides_words_stop_at_the_next_option(tmp_path: Path) -> None:
    write_app(tmp_path, SAM_CHAT, SAM_CHAT_FILES, "template.yaml")
    result = run_wsconn(
        "local", "--parameter-overrides", "Stage=dev", "--template", str(tmp_path), "--list"
    )
    assert result.code == 0, result.stderr
    result = run_wsconn(
        "local", "--template", str(tmp_path), "--parameter-overrides", "Stage=qa", "--list"
    )
    assert result.code == 8
    assert "parameter Stage: 'qa' is not one of its AllowedValues (dev, prod)" in result.stderr


def test_missing_pyyaml_names_the_install_command(tmp_path: Path) -> None:
    write_app(tmp_path, SAM_CHAT, SAM_CHAT_FILES, "template.yaml")
    code = (
        "import sys; sys.modules['yaml'] = None\nfrom wsconn.cli import main\n"
        f"main(['local', '--template', {str(tmp_path)!r}, '--list'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 8
    assert done.stderr.decode().strip() == (
        'wsconn: configuration: reading templates needs the "local" extra (PyYAML is not '
        'installed): pip install "wsconn[local]"'
    )


def test_python_runtime_found_on_path_runs_its_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function declaring python3.99 runs under the `python3.99` on PATH, said once at start."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python3.99"
    wrapper.write_text(f'#!/bin/sh\nRUN_BY=python3.99 exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    text = NODE_TEMPLATE.replace(
        "Properties: {Code: node, Handler: index.handler, Runtime: nodejs20.x}",
        "Properties: {Code: src, Handler: app.handler, Runtime: python3.99}",
    ).replace("NodeFn", "PyFn")
    handler = "import os\n\ndef handler(event, context):\n    return {'statusCode': 200, 'body': os.environ.get('RUN_BY', 'not the wrapper')}\n"
    app_dir = write_app(tmp_path / "app", text, {"src/app.py": handler}, "template.yaml").parent
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with (
        wsconn_local("--template", ".", cwd=app_dir) as (process, listening),
        connect(listening["wsUrl"], open_timeout=WAIT) as client,
    ):
        client.send("which python?")
        assert client.recv(timeout=WAIT) == "python3.99"
        process.terminate()
        process.wait(timeout=WAIT)
    assert process.stderr is not None
    assert (
        f"wsconn local: WARNING: PyFn declares python3.99: running it with {wrapper} (from "
        "PATH; --python chooses one interpreter for all)"
    ) in process.stderr.read().decode().splitlines()


def test_integration_timeout_from_the_template_fails_the_route(tmp_path: Path) -> None:
    """TimeoutInMillis 300 with a function allowed 10 s: the client gets AWS's error frame."""
    text = NODE_TEMPLATE.replace(
        "Properties: {Code: node, Handler: index.handler, Runtime: nodejs20.x}",
        f"Properties: {{Code: src, Handler: slow.handler, Runtime: {RUNTIME}, Timeout: 10}}",
    ).replace(
        "      IntegrationType: AWS_PROXY\n",
        "      IntegrationType: AWS_PROXY\n      TimeoutInMillis: 300\n",
    )
    slow = "import time\n\ndef handler(event, context):\n    time.sleep(2)\n    return {'statusCode': 200, 'body': 'late'}\n"
    path = write_app(tmp_path, text, {"src/slow.py": slow}, "template.yaml")
    app = read_app(path, flags=App()).app
    assert app.integration_timeout == 0.3
    events = EventLog()
    with (
        running_gateway(events, app=app) as gateway,
        connect(gateway.ws_url, open_timeout=WAIT) as client,
    ):
        client.send("hello")
        frame = client.recv(timeout=WAIT)
        assert isinstance(frame, str) and INTERNAL_ERROR.fullmatch(frame), frame
    invoke = events.wait_for("invoke", route="$default")
    assert invoke["statusCode"] == 504
    assert invoke["error"] == "Endpoint request timed out after 0.3 s (the function runs on)"
