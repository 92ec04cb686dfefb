"""`wsconn local`'s backend flags as a user types them: one-line errors (exit 8), a real run."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import IO

import pytest
from websockets.sync.client import connect

from tests.conftest import run_wsconn
from tests.test_local_command import local_gateway


def event_reader(stream: IO[bytes]) -> queue.Queue[dict[str, object]]:
    """Every JSON event line, as it comes (a thread reads: lines may arrive in bursts)."""
    lines: queue.Queue[dict[str, object]] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--route", "sendmessage"], "expected KEY=TARGET"),
        (["--route", "a=chat:send", "--route", "a=chat:other"], "given twice"),
        (["--route", "$weird=chat:send"], "predefined keys"),
        (["--handler", "chat.send"], "did you mean chat:send"),
        (["--handler", "lambda:Fn"], "lambda:NAME@URL"),
        (["--handler", "nosuchmodule:handler"], "nosuchmodule"),
        (["--handler", "app:missing"], "missing"),
        (["--handler", "app:handler", "--code-dir", "no/such/dir"], "does not exist"),
        (["--handler", "app:handler", "--env-file", "no-such.env"], "no-such.env"),
        (["--handler", "app:handler", "--env", "NOEQUALS"], "expected KEY=VALUE"),
        (["--handler", "app:handler", "--route-selection", "action"], "--route-selection"),
        (["--route", "x=app:handler", "--two-way", "y"], "no such route"),
        (
            ["--authorizer", "app:handler", "--identity-source", "header.Auth"],
            "route.request.header",
        ),
        (["--identity-source", "route.request.header.Auth"], "needs --authorizer"),
        (["--authorizer", "app:handler", "--connect-auth", "iam"], "one authorization type"),
        (["--handler", "app:handler", "--handler-timeout", "0"], "more than 0"),
        (["--handler", "app:handler", "--memory-size", "64"], "128 to 10240 MB"),
        (["--handler", "app:handler", "--python", "/no/such/python"], "/no/such/python"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_8(
    args: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    run = run_wsconn("local", "--port", "0", *args)
    assert run.code == 8, (args, run.stderr)
    assert says in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""  # nothing listened


def test_wsconn_local_runs_a_handler_with_json_events(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "import os\n\n"
        "def handler(event, context):\n"
        "    print('handling', event['requestContext']['routeKey'])\n"
        "    return {'statusCode': 200, 'body': os.environ['GREETING'] + event.get('body', '')}\n"
    )
    (tmp_path / ".env").write_text("GREETING=from-file\n")
    with local_gateway(
        "--handler",
        "app:handler",
        "--code-dir",
        str(tmp_path),
        "--two-way",
        "*",
        "--env-file",
        str(tmp_path / ".env"),
        "--env",
        "GREETING=hello ",
    ) as process:
        assert process.stdout is not None
        stream = event_reader(process.stdout)
        listening = stream.get(timeout=15)
        assert listening["event"] == "listening"
        assert str(listening["callbackEndpoint"]).startswith("https://127.0.0.1:")
        with connect(str(listening["wsUrl"]), open_timeout=10) as client:
            client.send("world")
            assert client.recv(timeout=10) == "hello world"
        seen: dict[str, list[dict[str, object]]] = {}
        while "disconnect" not in seen or len(seen.get("invoke", [])) < 3:
            event = stream.get(timeout=15)
            seen.setdefault(str(event["event"]), []).append(event)
    invokes = seen["invoke"]
    assert [i["route"] for i in invokes][:2] == ["$connect", "$default"]
    for invoke in invokes:
        assert set(invoke) >= {"route", "target", "requestId", "statusCode", "durationMs", "error"}
        assert invoke["target"] == "app:handler" and invoke["error"] is None
    assert any(log["line"] == "handling $default" for log in seen["log"])
    json.dumps(seen)


def test_terminal_shows_one_line_per_invocation_and_the_handlers_output(tmp_path: Path) -> None:
    import re
    import signal

    (tmp_path / "app.py").write_text(
        "import sys\n\n"
        "def handler(event, context):\n"
        "    print('said by the handler', file=sys.stderr)\n"
        "    return {'statusCode': 200}\n"
    )
    with local_gateway(
        "--route", "$default=app:handler", "--code-dir", str(tmp_path), json_events=False
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline().decode()
        url = re.search(r"WebSocket (ws://\S+)", first)
        assert url, first
        assert "routes $default" in first
        with connect(url.group(1), open_timeout=10) as client:
            client.send("hi")
            lines: list[str] = []
            while not any("invoke" in line for line in lines):
                lines.append(process.stdout.readline().decode())
        process.send_signal(signal.SIGINT)
        rest = process.stdout.read().decode()
        assert process.wait(timeout=10) == 0
    text = "".join(lines) + rest
    assert re.search(r"invoke +\$default -> app:handler answered 200 in [\d.]+ ms \(\S+=\)", text)
    assert re.search(r"log +\$default \(stderr\): said by the handler", text)
    assert "Traceback" not in process.stderr.read().decode()
