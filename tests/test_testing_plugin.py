"""The pytest plugin (`wsconn_local`): as a user runs it (pytest in a subprocess, in a project of
their own, the plugin found through its entry point), and its fixture's API in this suite (the
plugin is installed here too)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import run_wsconn
from wsconn.errors import ConnectionGone
from wsconn.testing import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_files() -> dict[str, str]:
    """The files the README's "Test your app with pytest" shows, by the name in their first line."""
    section = README.split("## Test your app with pytest", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return {block.splitlines()[0].removeprefix("# "): block for block in blocks}


def run_pytest(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pytest` as the user runs it in their project (our environment: wsconn[local] installed)."""
    tmp = project / "tmp"
    tmp.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env={**os.environ, "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_example_passes_as_written_and_a_broken_assertion_fails(
    tmp_path: Path,
) -> None:
    files = readme_files()
    assert set(files) == {"app.py", "test_chat.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    passed = run_pytest(tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed" in passed.stdout

    test = tmp_path / "test_chat.py"
    test.write_text(test.read_text().replace('== "alice: hi"', '== "alice: bye"'))
    failed = run_pytest(tmp_path)
    assert failed.returncode == 1
    assert "1 failed" in failed.stdout
    assert "assert 'alice: hi' == 'alice: bye'" in failed.stdout


def test_the_fixture_comes_from_the_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(wsconn_local):\n    assert wsconn_local()\n")
    assert run_pytest(tmp_path).returncode == 0
    # Without the plugin the entry point names (`wsconn`), there is no such fixture.
    without = run_pytest(tmp_path, "-p", "no:wsconn")
    assert without.returncode == 1
    assert "fixture 'wsconn_local' not found" in without.stdout


def test_gateways_are_stopped_when_the_test_ends(tmp_path: Path) -> None:
    (tmp_path / "test_stop.py").write_text(
        """
import socket
from urllib.parse import urlsplit

ports = []

def test_start(wsconn_local):
    for _ in range(2):
        ports.append(urlsplit(wsconn_local().endpoint).port)

def test_stopped():
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, port
"""
    )
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout
    assert "2 passed" in done.stdout


def test_the_plugin_is_harmless_without_aiohttp(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "aiohttp.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'aiohttp'\", name='aiohttp')\n"
    )
    (tmp_path / "test_plain.py").write_text(
        "import sys\n\ndef test_plain():\n    assert 'aiohttp' not in sys.modules\n\n"
        "def test_uses_it(wsconn_local):\n    wsconn_local()\n"
    )
    done = run_pytest(tmp_path, env={"PYTHONPATH": str(blocker)})
    assert "1 failed, 1 passed" in done.stdout
    assert 'wsconn_local needs the "local" extra (aiohttp is not installed)' in done.stdout


# -- the fixture's API, used in this suite -------------------------------------------------------


def test_connect_send_receive_and_the_management_calls(wsconn_local: Callable[..., Any]) -> None:
    gw = wsconn_local()
    assert gw.endpoint.startswith("http://127.0.0.1:") and gw.endpoint.endswith("/dev")
    assert gw.ws_url == gw.endpoint.replace("http://", "ws://")
    client = gw.connect(query={"name": "ci"}, headers={"User-Agent": "plugin-test"})
    connect = gw.wait_for(event="connect", connectionId=client.connection_id)
    assert connect["query"] == {"name": "ci"}
    gw.post_to_connection(client.connection_id, "hello")
    gw.post_to_connection(client.connection_id, b"\xff\x00")
    assert client.receive(timeout=5) == "hello"
    assert client.receive(timeout=5) == b"\xff\x00"
    # No backend: a client's frame is answered with AWS's Forbidden frame, with its own id.
    client.send("ping")
    assert json.loads(client.receive())["connectionId"] == client.connection_id
    status = gw.get_connection(client.connection_id)
    assert status["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "plugin-test"}
    gw.delete_connection(client.connection_id)
    assert client.wait_closed() == 1000
    with pytest.raises(ConnectionClosed):
        client.receive(timeout=5)
    with pytest.raises(ConnectionGone):
        gw.post_to_connection(client.connection_id, "anyone?")
    assert [e["event"] for e in gw.events][:2] == ["listening", "connect"]
    assert gw.wait_for(event="disconnect")["by"] == "api"


def test_two_clients_get_their_own_ids(wsconn_local: Callable[..., Any]) -> None:
    gw = wsconn_local()
    first, second = gw.connect(), gw.connect()
    assert first.connection_id != second.connection_id
    gw.post_to_connection(second.connection_id, "for the second")
    assert second.receive() == "for the second"
    with pytest.raises(TimeoutError):
        first.receive(timeout=0.3)


def test_the_key_pair_is_exported_to_the_test(wsconn_local: Callable[..., Any]) -> None:
    gw = wsconn_local(region="eu-west-2")
    listening = gw.wait_for(event="listening")
    assert os.environ["AWS_ACCESS_KEY_ID"] == listening["accessKeyId"]
    assert listening["region"] == os.environ["AWS_REGION"] == "eu-west-2"
    # So wsconn (and boto3) in the test sign for the gateway as they are.
    client = gw.connect()
    assert run_wsconn("send", "--endpoint", gw.endpoint, client.connection_id, "hi").code == 0
    assert client.receive() == "hi"


def test_gateway_options_pass_through(wsconn_local: Callable[..., Any]) -> None:
    gw = wsconn_local(idle_timeout=0.5, stage="prod")
    assert gw.endpoint.endswith("/prod")
    client = gw.connect()
    assert client.wait_closed() == 1001


def test_connect_auth_iam_takes_signed_upgrades_only(wsconn_local: Callable[..., Any]) -> None:
    gw = wsconn_local(connect_auth="iam")
    assert gw.connect(sign=True).connection_id
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        gw.connect()
    assert refused.value.status == 403


def test_a_handler_app_runs_behind_it(wsconn_local: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "echo.py").write_text(
        "def handler(event, context):\n"
        "    ctx = event['requestContext']\n"
        "    if ctx['routeKey'] == '$connect':\n"
        "        ok = event['headers'].get('X-Team') == 'blue'\n"
        "        return {'statusCode': 200 if ok else 401}\n"
        "    return {'statusCode': 200, 'body': 'echo: ' + event['body']}\n"
    )
    gw = wsconn_local(handler="echo:handler", code_dir=str(tmp_path), two_way=["*"])
    client = gw.connect(headers={"X-Team": "blue"})
    client.send("hi")
    assert client.receive() == "echo: hi"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        gw.connect()
    assert refused.value.status == 401


def test_unknown_options_are_named(wsconn_local: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match=r"unknown options \['colour'\]"):
        wsconn_local(colour="red")


def test_free_ports_are_used(wsconn_local: Callable[..., Any]) -> None:
    first, second = wsconn_local(), wsconn_local()
    assert first.endpoint != second.endpoint
    with socket.create_connection(("127.0.0.1", int(first.endpoint.split(":")[2].split("/")[0]))):
        pass


ECHO_TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
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
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${EchoFn.Arn}/invocations
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties: {ApiId: !Ref Api, StageName: live}
  EchoFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src
      Handler: echo.handler
      Runtime: python{version}
      Environment: {Variables: {GREETING: !Ref Greeting}}
Parameters:
  Greeting: {Type: String, Default: hello}
"""


def test_a_template_app_runs_behind_it(wsconn_local: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "echo.py").write_text(
        "import os\n\ndef handler(event, context):\n"
        "    return {'statusCode': 200, 'body': os.environ['GREETING'] + ', ' + event['body']}\n"
    )
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    (tmp_path / "template.yaml").write_text(ECHO_TEMPLATE.replace("{version}", version))
    gw = wsconn_local(template=str(tmp_path / "template.yaml"), parameter_overrides="Greeting=hi")
    assert gw.ws_url.endswith("/live")  # the template's stage
    client = gw.connect()
    client.send("there")
    assert client.receive() == "hi, there"


def test_template_options_need_a_template(wsconn_local: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match="parameter_overrides= goes with template="):
        wsconn_local(parameter_overrides="A=1")
