"""The local gateway as the AWS CLI and AWS's JS SDK see it: real clients, real processes.

boto3 is tested throughout test_local_gateway.py; here the other two clients users script with
must see what AWS answers: 400 `BadRequestException` for an id not of the issued shape, 410 for
a well-formed unknown one, and their message delivered to a live connection.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_util import WAIT, EventLog, counting_ids, open_client, running_gateway
from wsconn.local.gateway import GatewayThread

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / ".ci" / "node"
MALFORMED = ["abc def=", "abc!def=", "cjy8i76bx002884le6n17d49b"]
UNKNOWN = "R0oXAdfD0kwCH6w="


@pytest.fixture(scope="module")
def js_sdk() -> Path:
    """AWS's JS SDK v3, installed by .ci/npm-deps (a no-op when already there)."""
    if shutil.which("node") is None:
        pytest.fail("Node.js is needed for the JS SDK tests (the README's test setup)")
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "npm-deps")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return NODE_DIR / "post-to-connection.mjs"


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def gateway(events: EventLog) -> Iterator[GatewayThread]:
    with running_gateway(events, id_factory=counting_ids()) as gw:
        yield gw


def js_post(script: Path, endpoint: str, connection_id: str, data: str) -> dict[str, object]:
    done = subprocess.run(
        ["node", str(script), endpoint, connection_id, data],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=NODE_DIR,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def aws_cli_post(endpoint: str, connection_id: str, data: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "awscli", "apigatewaymanagementapi", "post-to-connection",
        "--endpoint-url", endpoint, "--region", "us-east-1",
        "--connection-id", connection_id, "--data", data,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("bad_id", MALFORMED)
def test_the_js_sdk_sees_400_for_a_malformed_id(
    js_sdk: Path, gateway: GatewayThread, bad_id: str
) -> None:
    assert js_post(js_sdk, gateway.endpoint, bad_id, "x") == {
        "status": 400,
        "name": "BadRequestException",
        "message": f"Invalid connectionId: {bad_id}",
    }


def test_the_js_sdk_sees_410_for_an_unknown_id_and_delivers_to_a_live_one(
    js_sdk: Path, gateway: GatewayThread, events: EventLog
) -> None:
    answer = js_post(js_sdk, gateway.endpoint, UNKNOWN, "x")
    assert (answer["status"], answer["name"]) == (410, "GoneException")
    with open_client(gateway, events, "ua-js") as (client, connection_id):
        assert js_post(js_sdk, gateway.endpoint, connection_id, "from js") == {"status": 200}
        assert client.recv(timeout=WAIT) == "from js"


@pytest.mark.parametrize("bad_id", MALFORMED)
def test_the_aws_cli_sees_400_for_a_malformed_id(gateway: GatewayThread, bad_id: str) -> None:
    done = aws_cli_post(gateway.endpoint, bad_id, "x")
    assert done.returncode != 0
    assert "(BadRequestException)" in done.stderr, done.stderr
    assert f"Invalid connectionId: {bad_id}" in done.stderr


def test_the_aws_cli_sees_410_for_an_unknown_id_and_delivers_to_a_live_one(
    gateway: GatewayThread, events: EventLog
) -> None:
    done = aws_cli_post(gateway.endpoint, UNKNOWN, "x")
    assert done.returncode != 0 and "(GoneException)" in done.stderr, done.stderr
    with open_client(gateway, events, "ua-cli") as (client, connection_id):
        done = aws_cli_post(gateway.endpoint, connection_id, "from the cli")
        assert done.returncode == 0, done.stderr
        assert client.recv(timeout=WAIT) == "from the cli"
