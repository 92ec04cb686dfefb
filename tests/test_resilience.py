"""Faults, TLS, pipes and signals, as CI pipelines and bad networks deal them."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
import trustme
from websockets.sync.client import connect

from tests.conftest import default_sigint, run_wsconn
from tests.scripted_server import Step, scripted
from tests.test_fanout import clients

WSCONN = [sys.executable, "-m", "wsconn"]


# -- TLS for real -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@contextmanager
def local_process(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """`wsconn local --json` as a process; yields it and its listening event."""
    process = subprocess.Popen(
        [*WSCONN, "local", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        preexec_fn=default_sigint,
    )
    try:
        assert process.stdout is not None
        listening = json.loads(process.stdout.readline())
        assert listening["event"] == "listening", listening
        yield process, listening
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _next_connect(stream: IO[bytes]) -> str:
    while True:
        event = json.loads(stream.readline())
        if event["event"] == "connect":
            return str(event["connectionId"])


def test_tls_gateway_verification_on_by_default(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key, bundle = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued = ca.issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(bundle))
    with local_process("--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)) as (
        gw,
        listening,
    ):
        assert listening["endpoint"].startswith("https://") and listening["wsUrl"].startswith(
            "wss://"
        )
        context = ssl.create_default_context(cafile=str(bundle))
        assert gw.stdout is not None
        with connect(listening["wsUrl"], ssl=context, open_timeout=10) as ws:
            cid = _next_connect(gw.stdout)
            endpoint = listening["endpoint"]
            untrusted = run_wsconn("send", "--endpoint", endpoint, cid, "no")
            assert untrusted.code == 7
            assert "TLS: cannot verify the certificate of 127.0.0.1" in untrusted.stderr
            # Nothing in the environment turns verification off silently.
            for name, value in (
                ("CURL_CA_BUNDLE", ""),
                ("REQUESTS_CA_BUNDLE", ""),
                ("PYTHONHTTPSVERIFY", "0"),
            ):
                monkeypatch.setenv(name, value)
            assert run_wsconn("send", "--endpoint", endpoint, cid, "still no").code == 7
            trusted = run_wsconn(
                "send", "--endpoint", endpoint, "--ca-bundle", str(bundle), cid, "yes"
            )
            assert trusted.code == 0, trusted.stderr
            assert ws.recv(timeout=5) == "yes"
            monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
            assert run_wsconn("send", "--endpoint", endpoint, cid, "env CA").code == 0
            assert ws.recv(timeout=5) == "env CA"


def test_tls_needs_both_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [*WSCONN, "local", "--tls-cert", __file__], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 2 and b"--tls-cert and --tls-key go together" in done.stderr


# -- faults survived --------------------------------------------------------------------------


def _reset_server() -> tuple[socket.socket, threading.Thread, list[int]]:
    """Accepts connections, reads a request, then resets the connection (RST, no answer)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    seen: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            seen.append(1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread, seen


def test_reset_mid_response_is_retried_then_exit_7() -> None:
    server, _thread, seen = _reset_server()
    try:
        port = server.getsockname()[1]
        run = run_wsconn(
            "send", "--endpoint", f"http://127.0.0.1:{port}/dev", "--retries", "2", "id=", "x"
        )
        assert run.code == 7
        assert run.stderr.startswith(f"wsconn: network: cannot reach 127.0.0.1:{port}: ")
        assert len(seen) == 3  # retried
        assert "Traceback" not in run.stderr
    finally:
        server.close()


def test_slow_answers_within_the_timeout_succeed() -> None:
    with scripted(Step(200, delay=1.0)) as server:
        run = run_wsconn(
            "send", "--endpoint", server.endpoint, "--timeout", "5", "id=", "x", "-o", "json"
        )
        assert run.code == 0 and json.loads(run.stdout)["attempts"] == 1


def test_5xx_burst_then_recovery() -> None:
    burst = [Step(500), Step(502), Step(503), Step(200)]
    with scripted(*burst) as server:
        run = run_wsconn(
            "status", "--endpoint", server.endpoint, "--retries", "5", "id=", "-o", "json"
        )
        # 200 without a body is not a GetConnection answer: the server is broken, exit 10.
        assert run.code == 10 and len(server.requests) == 4
    with scripted(*burst) as server:
        run = run_wsconn(
            "send", "--endpoint", server.endpoint, "--retries", "5", "id=", "x", "-o", "json"
        )
        assert run.code == 0 and json.loads(run.stdout)["attempts"] == 4


def test_429_storm_with_retry_after_in_a_fan_out(gateway: Any, tmp_path: Path) -> None:
    with scripted(
        Step(429, {"Retry-After": "0.2", "x-amzn-ErrorType": "LimitExceededException"}), Step(200)
    ) as server:
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"id{n}=\n" for n in range(20)))
        run = run_wsconn(
            "send",
            "--endpoint",
            server.endpoint,
            "--ids",
            str(ids),
            "-d",
            "x",
            "-o",
            "json",
            "-j",
            "4",
        )
        assert run.code == 0, run.stderr
        results = [json.loads(line) for line in run.stdout.splitlines()]
        assert len(results) == 20 and {r["outcome"] for r in results} == {"sent"}


def test_gateway_restart_in_the_middle_of_a_fan_out(tmp_path: Path) -> None:
    """Kill the gateway mid-run and start it again on the same port: every id has exactly one
    result, and the gone and failed ids are in --gone-out / --failed-out."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ("--port", str(port), "--latency", "0.02")
    helper = None
    try:
        with local_process(*args) as (gw, listening):
            assert gw.stdout is not None
            code = (
                "import time\nfrom websockets.sync.client import connect\n"
                f"cs = [connect({listening['wsUrl']!r}) for _ in range(10)]\ntime.sleep(120)\n"
            )
            helper = subprocess.Popen([sys.executable, "-c", code])
            live_ids = [_next_connect(gw.stdout) for _ in range(10)]
            drain = threading.Thread(target=gw.stdout.read, daemon=True)
            drain.start()
            ids = tmp_path / "ids.txt"
            ids.write_text("".join(f"{live_ids[n % 10]}\n" for n in range(300)))
            failed_out, gone_out = tmp_path / "failed.txt", tmp_path / "gone.txt"
            fan = subprocess.Popen(
                [*WSCONN, "send", "--endpoint", listening["endpoint"], "--ids", str(ids),
                 "-d", "m", "-j", "4", "-o", "json", "--retries", "6",
                 "--failed-out", str(failed_out), "--gone-out", str(gone_out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            assert fan.stdout is not None
            first = [fan.stdout.readline() for _ in range(20)]
            gw.kill()  # the gateway dies with the run in flight
            gw.wait()
        with local_process(*args) as (again, _):
            # Its events must be read, or a full pipe (64 KiB) would stall the gateway.
            assert again.stdout is not None
            threading.Thread(target=again.stdout.read, daemon=True).start()
            rest = fan.stdout.read()
            fan.wait(timeout=120)
    finally:
        if helper is not None:
            helper.kill()
            helper.wait()
    results = [json.loads(line) for line in [*first, *rest.splitlines()] if line.strip()]
    assert len(results) == 300  # one result per input line, none lost, none doubled
    outcomes = [r["outcome"] for r in results]
    assert "sent" in outcomes and set(outcomes) <= {"sent", "gone", "network-error"}
    assert "gone" in outcomes  # after the restart, the old connections are gone
    assert len(failed_out.read_text().split()) == outcomes.count("network-error")
    assert len(gone_out.read_text().split()) == outcomes.count("gone")
    assert b"Traceback" not in (fan.stderr.read() if fan.stderr else b"")
    assert fan.returncode == (7 if "network-error" in outcomes else 3)


# -- pipes and signals ------------------------------------------------------------------------


def test_status_json_into_head(gateway: Any) -> None:
    with clients(gateway, 1) as live:
        script = (
            f"{sys.executable} -m wsconn status --endpoint {gateway.endpoint} {live.ids[0]} -o json"
            " | head -c 10; echo ${PIPESTATUS[0]} >&2"
        )
        done = subprocess.run(["bash", "-c", script], capture_output=True, timeout=30, check=False)
        assert len(done.stdout) == 10
        assert b"Traceback" not in done.stderr and b"Exception ignored" not in done.stderr
        # 0 when the line fit in the pipe before head left, 141 when it did not: both documented.
        assert done.stderr.strip().splitlines()[-1] in (b"0", b"141")


def test_fan_out_into_head_stops_cleanly_and_accounts_for_every_id(
    gateway: Any, tmp_path: Path
) -> None:
    with clients(gateway, 5) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"{live.ids[n % 5]}\n" for n in range(2000)))
        failed_out = tmp_path / "failed.txt"
        script = (
            f"{sys.executable} -m wsconn send --endpoint {gateway.endpoint} --ids {ids} -d x -j 2"
            f" -o json --failed-out {failed_out} | head -n 3; echo ${{PIPESTATUS[0]}} >&2"
        )
        done = subprocess.run(["bash", "-c", script], capture_output=True, timeout=120, check=False)
        lines = done.stdout.splitlines()
        assert len(lines) == 3 and all(json.loads(line)["outcome"] == "sent" for line in lines)
        assert done.stderr.strip().splitlines()[-1] == b"141"
        assert b"Traceback" not in done.stderr and b"Exception ignored" not in done.stderr
        unsent = failed_out.read_text().split()
        assert unsent  # it stopped early
        live.wait_for(2000 - len(unsent), timeout=10)
        # Every id was either delivered or written to --failed-out, never both, never neither.
        assert sum(live.received.values()) + len(unsent) == 2000


def test_sigterm_during_fan_out(gateway: Any, tmp_path: Path) -> None:
    with clients(gateway, 5) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"{live.ids[n % 5]}\n" for n in range(3000)))
        failed_out = tmp_path / "failed.txt"
        fan = subprocess.Popen(
            [*WSCONN, "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "x", "-j", "2",
             "-o", "json", "--failed-out", str(failed_out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert fan.stdout is not None
        first = [fan.stdout.readline() for _ in range(10)]
        fan.send_signal(signal.SIGTERM)
        rest = fan.stdout.read()
        fan.wait(timeout=60)
        assert fan.returncode == 143
        results = [json.loads(line) for line in [*first, *rest.splitlines()]]  # whole lines only
        assert len(results) == 3000
        unsent = [r for r in results if r["outcome"] == "not-attempted"]
        assert unsent and len(failed_out.read_text().split()) == len(unsent)
        assert b"Traceback" not in (fan.stderr.read() if fan.stderr else b"")
