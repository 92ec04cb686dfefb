"""Fan-out (`--ids`) against the local gateway with live WebSocket clients: every id accounted for."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import Run, default_sigint, run_wsconn
from wsconn.local.gateway import GatewayConfig, GatewayThread

Wsconn = Callable[..., Run]


class Clients:
    """Live WebSocket clients, each counting what it receives in a thread of its own."""

    def __init__(self, gateway: Any, count: int) -> None:
        self.gateway = gateway
        self.connections: list[ClientConnection] = []
        self.ids: list[str] = []
        self.received: Counter[str] = Counter()
        self.messages: dict[str, list[str | bytes]] = {}
        self.closed: set[str] = set()
        self._lock = threading.Lock()
        self._stack = ExitStack()
        for _ in range(count):
            seen = {e.get("connectionId") for e in gateway.events if e["event"] == "connect"}
            ws = self._stack.enter_context(connect(gateway.ws_url, open_timeout=10))
            cid = _new_connect(gateway, seen)
            self.connections.append(ws)
            self.ids.append(cid)
            self.messages[cid] = []
            threading.Thread(target=self._drain, args=(ws, cid), daemon=True).start()

    def _drain(self, ws: ClientConnection, cid: str) -> None:
        try:
            while True:
                message = ws.recv()
                with self._lock:
                    self.received[cid] += 1
                    self.messages[cid].append(message)
        except ConnectionClosed:
            with self._lock:
                self.closed.add(cid)

    def wait_for(self, total: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while sum(self.received.values()) < total and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # and nothing more arrives

    def close(self) -> None:
        self._stack.close()


def wsconn_process(*args: str, **options: Any) -> subprocess.Popen[bytes]:
    """wsconn as a user runs it, in its own process, with stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "wsconn", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
        preexec_fn=default_sigint,
        **options,
    )


def _new_connect(gateway: Any, seen: set[object]) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for event in list(gateway.events):
            if event["event"] == "connect" and event["connectionId"] not in seen:
                return str(event["connectionId"])
        time.sleep(0.005)
    raise AssertionError("no connect event")


@contextmanager
def clients(gateway: Any, count: int) -> Iterator[Clients]:
    live = Clients(gateway, count)
    try:
        yield live
    finally:
        live.close()


@contextmanager
def started(config: GatewayConfig) -> Iterator[Any]:
    events: list[dict[str, object]] = []
    with GatewayThread(config, on_event=events.append) as gw:
        gw.events = events  # type: ignore[attr-defined]
        yield gw


def json_lines(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.stdout.splitlines()]


GONE = ["AAAAAAAAAAAAAAA=", "BBBBBBBBBBBBBBB=", "a-b_cDDDDDDDDDD="]


def test_broadcast_reaches_every_client_exactly_once(
    gateway: Any, wsconn: Wsconn, tmp_path: Path
) -> None:
    with clients(gateway, 20) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(live.ids + GONE) + "\n")
        gone_out, failed_out = tmp_path / "gone.txt", tmp_path / "failed.txt"
        run = wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "broadcast",
            "-o", "json", "--gone-out", str(gone_out), "--failed-out", str(failed_out),
        )  # fmt: skip
        assert run.code == 3, run.stderr  # all succeeded but some gone
        live.wait_for(20)
        assert live.received == Counter({cid: 1 for cid in live.ids})
        assert all(m == ["broadcast"] for m in live.messages.values())
        results = json_lines(run)
        assert Counter(r["connectionId"] for r in results) == Counter(live.ids + GONE)
        assert {r["connectionId"] for r in results if r["outcome"] == "sent"} == set(live.ids)
        assert sorted(gone_out.read_text().split()) == sorted(GONE)
        assert failed_out.read_text() == ""
        assert "20 sent, 3 gone, 0 failed of 23" in run.stderr


def test_a_line_listed_twice_is_sent_twice_unless_unique(
    gateway: Any, wsconn: Wsconn, tmp_path: Path
) -> None:
    with clients(gateway, 2) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join([live.ids[0], live.ids[0], live.ids[1]]) + "\n")
        run = wsconn("send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "x")
        assert run.code == 0, run.stderr
        live.wait_for(3)
        assert live.received == Counter({live.ids[0]: 2, live.ids[1]: 1})
        assert len(run.stdout.splitlines()) == 3  # a tab-separated line per input line
        run = wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "y", "--unique"
        )
        assert run.code == 0
        live.wait_for(5)
        assert live.received == Counter({live.ids[0]: 3, live.ids[1]: 2})


def test_stdin_ids_with_crlf_bom_comments_and_urls(gateway: Any, wsconn: Wsconn) -> None:
    with clients(gateway, 3) as live:
        a, b, c = live.ids
        text = (
            f"\ufeff{a}\r\n\r\n# a comment\r\n  {b}  \r\n"
            f"{gateway.endpoint}/%40connections/{c.replace('=', '%3D')}\r\n"
        )
        run = wsconn(
            "send",
            "--endpoint",
            gateway.endpoint,
            "--ids",
            "-",
            "-d",
            "hi",
            "-o",
            "json",
            input=text,
        )
        assert run.code == 0, run.stderr
        live.wait_for(3)
        assert live.received == Counter({a: 1, b: 1, c: 1})
        assert sorted(r["connectionId"] for r in json_lines(run)) == sorted(live.ids)


def test_jq_without_r_sends_nothing_and_reports_nothing_gone(gateway: Any, tmp_path: Path) -> None:
    """The issue's pipeline, forgetting `jq -r`: every id quoted. Nothing live may be listed gone."""
    with clients(gateway, 3) as live:
        conns = tmp_path / "conns.json"
        conns.write_text("".join(json.dumps({"connectionId": cid}) + "\n" for cid in live.ids))
        gone_out, failed_out = tmp_path / "gone.txt", tmp_path / "failed.txt"
        wsconn = f"{shlex.quote(sys.executable)} -m wsconn"
        jq = f"jq '.connectionId' {conns}" if shutil.which("jq") else f"cat {conns}.quoted"
        Path(f"{conns}.quoted").write_text("".join(f'"{cid}"\n' for cid in live.ids))
        pipeline = (
            f"{jq} | {wsconn} send --endpoint {gateway.endpoint} --ids - -d hi -o json "
            f"--gone-out {gone_out} --failed-out {failed_out}"
        )
        run = subprocess.run(["bash", "-c", pipeline], capture_output=True, timeout=60)
        stderr = run.stderr.decode()
        assert run.returncode == 2, stderr
        assert gone_out.read_text() == ""
        assert failed_out.read_text() == "".join(f'"{cid}"\n' for cid in live.ids)
        results = [json.loads(line) for line in run.stdout.splitlines()]
        assert [r["outcome"] for r in results] == ["usage-error"] * 3
        assert all("jq -r" in r["message"] for r in results), results
        assert not [e for e in gateway.events if e["event"] in ("post", "denied")]
        live.wait_for(0)
        assert live.received == Counter() and live.closed == set()


def test_lines_that_are_not_ids_are_never_sent_and_the_run_goes_on(
    gateway: Any, tmp_path: Path
) -> None:
    """`id,` from a CSV, `id # comment`, an id with a space: usage errors, listed as failed."""
    with clients(gateway, 4) as live:
        a, b, c, d = live.ids
        bad = [f"{a},", f"{b} # the admin's tab", f"{c[:7]} {c[7:]}"]
        hints = ["one id per line", "comment goes on its own line", "ids hold no spaces"]
        ids = tmp_path / "ids.csv"
        ids.write_text("\n".join([*bad, d]) + "\n")
        gone_out, failed_out = tmp_path / "gone.txt", tmp_path / "failed.txt"
        process = wsconn_process(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "hi", "-o", "json",
            "--gone-out", str(gone_out), "--failed-out", str(failed_out),
        )  # fmt: skip
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 2, stderr
        assert gone_out.read_text() == ""
        assert failed_out.read_text() == "".join(line + "\n" for line in bad)
        results = {r["line"]: r for r in map(json.loads, stdout.splitlines())}
        assert results[d]["outcome"] == "sent"  # the run went on past the bad lines
        for line, hint in zip(bad, hints, strict=True):
            assert results[line]["outcome"] == "usage-error"
            assert hint in results[line]["message"], results[line]
        live.wait_for(1)
        assert live.received == Counter({d: 1}) and live.closed == set()
        posts = [e for e in gateway.events if e["event"] == "post"]
        assert [e["connectionId"] for e in posts] == [d]
        for cid in (a, b, c):  # the live connections the bad lines meant are untouched
            status = run_wsconn("status", "--endpoint", gateway.endpoint, cid, "-o", "json")
            assert json.loads(status.stdout)["outcome"] == "connected", status.stderr


def test_bulk_status_and_bulk_disconnect(gateway: Any, wsconn: Wsconn, tmp_path: Path) -> None:
    with clients(gateway, 5) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join([*live.ids, GONE[0]]) + "\n")
        run = wsconn("status", "--endpoint", gateway.endpoint, "--ids", str(ids), "-o", "json")
        assert run.code == 3
        by_id = {r["connectionId"]: r for r in json_lines(run)}
        for cid in live.ids:
            assert by_id[cid]["outcome"] == "connected"
            assert by_id[cid]["identity"]["sourceIp"] == "127.0.0.1"
            assert by_id[cid]["connectedAt"].endswith("Z")
        assert by_id[GONE[0]]["outcome"] == "gone"
        run = wsconn("disconnect", "--endpoint", gateway.endpoint, "--ids", str(ids), "-o", "json")
        assert run.code == 3
        assert Counter(r["outcome"] for r in json_lines(run)) == Counter(
            {"disconnected": 5, "gone": 1}
        )
        deadline = time.monotonic() + 10
        while len(live.closed) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.closed == set(live.ids)
        run = wsconn("status", "--endpoint", gateway.endpoint, "--ids", str(ids))
        assert run.code == 3 and "0 connected, 6 gone" in run.stderr


def test_throttling_and_5xx_are_retried_and_every_id_delivered_once(
    wsconn: Wsconn, tmp_path: Path
) -> None:
    # At 0.3, that some id meets 11 faults in a row (all its attempts) or that no fault happens at
    # all are each about 5e-5 a run; at 0.4 the first was 1e-3, and it did happen.
    config = GatewayConfig(port=0, fault_rate=0.3, fault_statuses=(429, 500, 503), retry_after=0)
    with started(config) as gw, clients(gw, 30) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(live.ids) + "\n")
        run = wsconn(
            "send", "--endpoint", gw.endpoint, "--ids", str(ids), "-d", "m", "-o", "json",
            "--retries", "10", "-j", "8",
        )  # fmt: skip
        assert run.code == 0, run.stderr
        results = json_lines(run)
        assert len(results) == 30 and {r["outcome"] for r in results} == {"sent"}
        assert any(r["attempts"] > 1 for r in results)  # faults happened and were retried
        live.wait_for(30)
        assert live.received == Counter({cid: 1 for cid in live.ids})
        faults = [e for e in gw.events if e["event"] == "denied"]
        assert faults and {e["status"] for e in faults} <= {429, 500, 503}


def test_persistent_failures_are_accounted_for_and_resumable(
    wsconn: Wsconn, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    failed_out = tmp_path / "failed.txt"
    config = GatewayConfig(port=0, fault_rate=1.0, fault_statuses=(503,))
    with started(config) as gw, clients(gw, 4) as live:
        ids.write_text("\n".join(live.ids) + "\n")
        run = wsconn(
            "send", "--endpoint", gw.endpoint, "--ids", str(ids), "-d", "m",
            "--retries", "1", "-o", "json", "--failed-out", str(failed_out),
        )  # fmt: skip
        assert run.code == 10
        assert {r["outcome"] for r in json_lines(run)} == {"server-error"}
        assert sorted(failed_out.read_text().split()) == sorted(live.ids)
        assert sum(live.received.values()) == 0  # a refused POST delivers nothing


def test_ctrl_c_mid_run_accounts_for_every_id(tmp_path: Path) -> None:
    config = GatewayConfig(port=0, latency=0.05)
    with started(config) as gw, clients(gw, 5) as live:
        lines = [live.ids[i % 5] for i in range(400)]
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(lines) + "\n")
        failed_out = tmp_path / "failed.txt"
        process = wsconn_process(
            "send",
            "--endpoint",
            gw.endpoint,
            "--ids",
            str(ids),
            "-d",
            "m",
            "-j",
            "2",
            "-o",
            "json",
            "--failed-out",
            str(failed_out),
        )
        assert process.stdout is not None
        first = [process.stdout.readline() for _ in range(5)]  # some results are in
        process.send_signal(signal.SIGINT)
        # Read on through the same buffered reader (communicate() would skip what it holds).
        rest = process.stdout.read()
        err = process.stderr.read() if process.stderr else b""
        process.wait(timeout=60)
        assert process.returncode == 130, err
        results = [json.loads(line) for line in [*first, *rest.splitlines()] if line.strip()]
        assert len(results) == 400, err  # every input line has its result line
        sent = [r for r in results if r["outcome"] == "sent"]
        not_attempted = [r for r in results if r["outcome"] == "not-attempted"]
        assert sent and not_attempted and len(sent) + len(not_attempted) == 400
        assert len(failed_out.read_text().split()) == len(not_attempted)
        assert b"Traceback" not in err and b"not attempted of 400" in err
        live.wait_for(len(sent))
        assert sum(live.received.values()) == len(sent)  # what was reported sent, arrived
        # --failed-out resumes exactly what was left.
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "wsconn",
                "send",
                "--endpoint",
                gw.endpoint,
                "--ids",
                str(failed_out),
                "-d",
                "m",
                "-j",
                "16",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert process.returncode == 0, process.stderr
        live.wait_for(400)
        assert sum(live.received.values()) == 400
        assert Counter(live.received) == Counter(lines)


def test_rate_caps_requests_per_second(gateway: Any, wsconn: Wsconn, tmp_path: Path) -> None:
    with clients(gateway, 1) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text((live.ids[0] + "\n") * 11)
        began = time.monotonic()
        run = wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "r", "--rate", "20"
        )
        assert run.code == 0
        # 11 requests at 20/s cannot all start in less than 10 intervals of 50 ms.
        assert time.monotonic() - began >= 0.45


def test_lines_naming_other_endpoints_go_there(wsconn: Wsconn, tmp_path: Path) -> None:
    with ExitStack() as stack:
        one = stack.enter_context(started(GatewayConfig(port=0)))
        two = stack.enter_context(started(GatewayConfig(port=0, stage="prod")))
        live_one = stack.enter_context(clients(one, 1))
        live_two = stack.enter_context(clients(two, 1))
        ids = tmp_path / "ids.txt"
        ids.write_text(f"{live_one.ids[0]}\n{two.endpoint}/@connections/{live_two.ids[0]}\n")
        run = wsconn("send", "--endpoint", one.endpoint, "--ids", str(ids), "-d", "both")
        assert run.code == 0, run.stderr
        live_one.wait_for(1)
        live_two.wait_for(1)
        assert sum(live_one.received.values()) == 1 and sum(live_two.received.values()) == 1


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["send", "id=", "--ids", "f", "-d", "x"], 2, "not both"),
        (["send", "id=", "x", "-j", "4"], 2, "--concurrency goes with --ids"),
        (["status", "id=", "--gone-out", "g"], 2, "--gone-out goes with --ids"),
        (["send", "--ids", "-"], 2, "with -d"),
        (["send", "--ids", "-", "-d", "@-"], 2, "cannot hold both"),
        (["status"], 2, "missing CONNECTION"),
        (["status", "--ids", "/nonexistent/ids.txt"], 8, "cannot read --ids"),
    ],
)
def test_bulk_usage_errors(wsconn: Wsconn, args: list[str], code: int, words: str) -> None:
    run = wsconn(*args, "--endpoint", "http://127.0.0.1:9/dev")
    assert run.code == code, run.stderr
    assert words in run.stderr


def test_latency_is_measured_from_the_first_attempt_not_from_the_rate_wait(gateway: Any) -> None:
    """`latencyMs` (and p50/p99) time the call, not the time it queued for --rate."""
    from tests.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
    from wsconn.auth import Credentials, Signer
    from wsconn.client import ManagementClient
    from wsconn.endpoint import parse_endpoint
    from wsconn.fanout import RunPacer

    class RecordingPacer(RunPacer):
        def __init__(self, rate: float, stop: threading.Event) -> None:
            super().__init__(rate, stop)
            self.waits: list[tuple[float, float]] = []  # when wait() was called, when it returned

        def wait(self) -> None:
            called = time.perf_counter()
            super().wait()
            self.waits.append((called, time.perf_counter()))

    pacer = RecordingPacer(2.0, threading.Event())  # 2/s: the second call waits half a second
    signer = Signer(Credentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, None, "env"), "us-east-1")
    client = ManagementClient(parse_endpoint(gateway.endpoint, "--endpoint"), signer, pacer=pacer)
    with clients(gateway, 1) as live:
        client.post_to_connection(live.ids[0], b"first")
        result = client.post_to_connection(live.ids[0], b"second")
        finished = time.perf_counter()
    client.close()
    called, returned = pacer.waits[-1]
    assert returned - called >= 0.25  # it did wait for its turn (the pacer sleeps until then)
    # The latency fits between the end of that wait and the call's return (0.1 ms: rounding).
    assert result.latency_ms <= (finished - returned) * 1000 + 0.1, (result, returned - called)


def test_pacer_halves_on_429_and_recovers() -> None:
    from wsconn.fanout import RunPacer

    pacer = RunPacer(100.0, threading.Event())
    pacer.STEP = 0.01
    pacer.throttled(0)
    assert pacer.rate == 50.0
    pacer.throttled(0)
    assert pacer.rate == 50.0  # workers throttled together halve the rate once
    time.sleep(0.02)
    pacer.throttled(0)
    assert pacer.rate == 25.0
    for _ in range(20):
        time.sleep(0.011)
        pacer.succeeded()
    assert pacer.rate == 100.0  # back to --rate, never above
    unlimited = RunPacer(None, threading.Event())
    unlimited.throttled(0)
    assert unlimited.rate is not None  # throttling caps even an unlimited run


def test_a_second_ctrl_c_quits_at_once(tmp_path: Path) -> None:
    # Answers that never come in the test's time, so the first Ctrl-C has requests to wait for;
    # the gateway's own shutdown then cuts them off after 0.5 s.
    config = GatewayConfig(port=0, latency=60.0, close_timeout=0.5)
    with started(config) as gw, clients(gw, 2) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"{live.ids[n % 2]}\n" for n in range(100)))
        process = wsconn_process(
            "send", "--endpoint", gw.endpoint, "--ids", str(ids), "-d", "m", "-j", "4", "-o", "json"
        )
        time.sleep(1.0)  # started, and requests are in flight
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=20)
        assert process.returncode == 130
        # It quit without waiting for an answer: none had been given.
        assert not [e for e in gw.events if e["event"] == "post"]
        assert b"Traceback" not in err and b"wsconn: interrupted" in err


def test_a_stop_starts_no_new_request_and_no_retry(gateway: Any, tmp_path: Path) -> None:
    with clients(gateway, 2) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"{live.ids[n % 2]}\n" for n in range(20)))
        process = wsconn_process(
            "send",
            "--endpoint",
            gateway.endpoint,
            "--ids",
            str(ids),
            "-d",
            "m",
            "--rate",
            "2",
            "-o",
            "json",
        )
        assert process.stdout is not None
        first = process.stdout.readline()  # the run is going (at 2 requests/s)
        process.send_signal(signal.SIGINT)
        rest, _err = process.communicate(timeout=30)
        results = [json.loads(line) for line in [first, *rest.splitlines()]]
        sent = [r for r in results if r["outcome"] == "sent"]
        assert len(results) == 20 and len(sent) <= 3  # waiting for the rate is not being sent
        assert {r["outcome"] for r in results} == {"sent", "not-attempted"}
        assert all(r["line"] for r in results)  # every result names its input line


def test_non_utf8_input_lines_are_refused_and_written_back_as_they_were(
    gateway: Any, tmp_path: Path
) -> None:
    failed_out = tmp_path / "failed.txt"
    stdin = b"bad\xffid\n" + b"AAAAAAAAAAAAAAA=\n"
    run = run_wsconn(
        "status", "--endpoint", gateway.endpoint, "--ids", "-", "--failed-out", str(failed_out),
        "-o", "json", input=stdin,
    )  # fmt: skip
    outcomes = [json.loads(line)["outcome"] for line in run.stdout.splitlines()]
    assert sorted(outcomes) == ["gone", "usage-error"]
    refused = json.loads(run.stdout_bytes.splitlines()[outcomes.index("usage-error")])
    assert "not valid UTF-8" in refused["message"]
    # The line as \xNN text, no lone surrogate: strict JSON parsers and UTF-8 encoders take it.
    assert refused["line"] == "bad\\xffid"
    json.dumps(refused, ensure_ascii=False).encode("utf-8")
    assert failed_out.read_bytes() == b"bad\xffid\n"
    assert run.code == 2 and "Traceback" not in run.stderr


def test_sigterm_with_an_input_that_never_ends(gateway: Any) -> None:
    with clients(gateway, 1) as live:
        process = wsconn_process(
            "status",
            "--endpoint",
            gateway.endpoint,
            "--ids",
            "-",
            "-o",
            "json",
            stdin=subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(f"{live.ids[0]}\n".encode() * 5)
        process.stdin.flush()  # and the pipe stays open, as a producer that never ends
        for _ in range(5):
            assert json.loads(process.stdout.readline())["outcome"] == "connected"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=20)  # it does not wait for the input to end
        finally:
            process.stdin.close()
        assert code == 143
        err = process.stderr.read() if process.stderr else b""
        assert b"stopped reading --ids: the input had not ended" in err
        assert process.stdout.read() == b""
