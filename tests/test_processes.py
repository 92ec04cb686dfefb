"""`--ids -P N`: worker processes over one stream of ids, as real processes against the gateway.

Every line still gets one result, once; one writer for the lists; --unique, --rate and a 429
hold across the workers; Ctrl-C, SIGTERM and `| head` end every worker; memory is streamed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run
from tests.test_fanout import GONE, clients, json_lines, started, wsconn_process
from wsconn.local.gateway import GatewayConfig


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(child) for child in (task / "children").read_text().split()}
        except FileNotFoundError:  # a thread that just ended
            continue
    return found


def alive(pid: int) -> bool:
    """Whether `pid` still exists as anything but a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def workers_of(process: subprocess.Popen[bytes], count: int) -> set[int]:
    """Wait until `process` has `count` children (its workers); their pids."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = children(process.pid)
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{process.pid} has children {children(process.pid)}")


def test_every_line_once_one_writer_and_the_worst_exit_code(
    gateway: Any, wsconn: Any, tmp_path: Path
) -> None:
    with clients(gateway, 20) as live:
        lines = live.ids * 5 + GONE
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(lines) + "\n")
        gone_out, failed_out = tmp_path / "gone.txt", tmp_path / "failed.txt"
        run: Run = wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "p", "-o", "json",
            "-P", "2", "-j", "4", "--gone-out", str(gone_out), "--failed-out", str(failed_out),
        )  # fmt: skip
        assert run.code == 3, run.stderr  # all sent but some gone: gone decides, as with one
        results = json_lines(run)
        assert Counter(r["line"] for r in results) == Counter(lines)
        live.wait_for(100)
        assert live.received == Counter({cid: 5 for cid in live.ids})
        assert sorted(gone_out.read_text().splitlines()) == sorted(GONE)
        assert failed_out.read_text() == ""
        assert "100 sent, 3 gone, 0 failed of 103" in run.stderr  # one summary


def test_unique_holds_across_workers(gateway: Any, wsconn: Any, tmp_path: Path) -> None:
    with clients(gateway, 6) as live:
        ids = tmp_path / "ids.txt"
        url = f"{gateway.endpoint}/@connections/{live.ids[0]}"  # the same connection, spelt apart
        ids.write_text("\n".join(live.ids * 4 + [url]) + "\n")
        run = wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "u", "--unique",
            "-P", "3", "-o", "json",
        )  # fmt: skip
        assert run.code == 0, run.stderr
        assert len(json_lines(run)) == 6
        live.wait_for(6)
        assert live.received == Counter({cid: 1 for cid in live.ids})


def test_rate_is_the_total_of_all_workers(gateway: Any, wsconn: Any, tmp_path: Path) -> None:
    with clients(gateway, 1) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text((live.ids[0] + "\n") * 13)
        began = time.monotonic()
        run = wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "r",
            "--rate", "20", "-P", "3",
        )  # fmt: skip
        assert run.code == 0, run.stderr
        # 13 requests at 20/s in all cannot start in less than 12 intervals of 50 ms (three
        # workers each at 20/s would take a third of that).
        assert time.monotonic() - began >= 0.55


def test_a_429_in_one_worker_slows_every_worker() -> None:
    """The pacer's state is shared memory: a worker's 429 halves the rate all of them see."""
    from wsconn.fanout import RunPacer, StopFlag

    pacer = RunPacer(100.0, StopFlag(), shared=True)
    throttled = multiprocessing.get_context("fork").Process(target=pacer.throttled, args=(0.3,))
    throttled.start()
    throttled.join(10)
    assert throttled.exitcode == 0
    assert pacer.rate == 50.0  # seen here, in another process
    began = time.monotonic()
    pacer.wait()  # and the pause it asked for holds here too
    assert time.monotonic() - began >= 0.1


def test_throttled_and_failing_answers_are_retried_across_workers(
    wsconn: Any, tmp_path: Path
) -> None:
    config = GatewayConfig(port=0, fault_rate=0.4, fault_statuses=(429, 503), retry_after=0)
    with started(config) as gw, clients(gw, 30) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(live.ids) + "\n")
        run = wsconn(
            "send", "--endpoint", gw.endpoint, "--ids", str(ids), "-d", "m", "-o", "json",
            "--retries", "10", "-j", "4", "-P", "2",
        )  # fmt: skip
        assert run.code == 0, run.stderr
        results = json_lines(run)
        assert len(results) == 30 and {r["outcome"] for r in results} == {"sent"}
        assert any(r["attempts"] > 1 for r in results)
        live.wait_for(30)
        assert live.received == Counter({cid: 1 for cid in live.ids})


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_accounts_for_every_line_and_ends_every_worker(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    with started(GatewayConfig(port=0, latency=0.05)) as gw, clients(gw, 5) as live:
        lines = [live.ids[n % 5] for n in range(400)]
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(lines) + "\n")
        failed_out = tmp_path / "failed.txt"
        process = wsconn_process(
            "send", "--endpoint", gw.endpoint, "--ids", str(ids), "-d", "m", "-j", "2",
            "-P", "2", "-o", "json", "--failed-out", str(failed_out),
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        workers = workers_of(process, 2)
        first = [process.stdout.readline() for _ in range(5)]  # some results are in
        process.send_signal(sig)
        rest = process.stdout.read()
        err = process.stderr.read()
        assert process.wait(timeout=60) == code, err
        results = [json.loads(line) for line in [*first, *rest.splitlines()] if line.strip()]
        assert Counter(r["line"] for r in results) == Counter(lines), err  # each line once
        sent = [r for r in results if r["outcome"] == "sent"]
        not_attempted = [r for r in results if r["outcome"] == "not-attempted"]
        assert sent and not_attempted and len(sent) + len(not_attempted) == 400
        assert Counter(failed_out.read_text().split()) == Counter(r["line"] for r in not_attempted)
        assert b"Traceback" not in err and b"not attempted of 400" in err
        live.wait_for(len(sent))
        assert sum(live.received.values()) == len(sent)  # reported sent: arrived, once
        assert not any(alive(pid) for pid in workers)  # nothing left running


def test_a_second_ctrl_c_quits_at_once_and_ends_every_worker(tmp_path: Path) -> None:
    with started(GatewayConfig(port=0, latency=5.0)) as gw, clients(gw, 2) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"{live.ids[n % 2]}\n" for n in range(100)))
        process = wsconn_process(
            "send", "--endpoint", gw.endpoint, "--ids", str(ids), "-d", "m", "-j", "4",
            "-P", "2", "-o", "json",
        )  # fmt: skip
        workers = workers_of(process, 2)
        time.sleep(1.0)  # requests are in flight (each takes 5 s to answer)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=20)
        assert process.returncode == 130
        assert time.monotonic() - began < 4  # it did not wait for the 5-second answers
        assert b"Traceback" not in err and b"wsconn: interrupted" in err
        assert not any(alive(pid) for pid in workers)


def test_a_reader_gone_away_stops_the_run_and_every_worker(gateway: Any, tmp_path: Path) -> None:
    with clients(gateway, 3) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"{live.ids[n % 3]}\n" for n in range(3000)))
        process = wsconn_process(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "h", "-j", "2",
            "-P", "2", "-o", "json",
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        workers = workers_of(process, 2)
        for _ in range(3):
            json.loads(process.stdout.readline())
        process.stdout.close()  # `| head -3`
        err = process.stderr.read()
        assert process.wait(timeout=60) == 141, err
        assert b"Traceback" not in err
        assert not any(alive(pid) for pid in workers)
        assert sum(live.received.values()) < 3000  # it stopped


def test_ids_are_streamed_to_the_workers_not_loaded(gateway: Any) -> None:
    """Results come while the input is still open: memory does not hold the list."""
    with clients(gateway, 2) as live:
        process = wsconn_process(
            "status", "--endpoint", gateway.endpoint, "--ids", "-", "-o", "json", "-P", "2",
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        for round_no in range(3):
            process.stdin.write(f"{live.ids[round_no % 2]}\n".encode() * 4)
            process.stdin.flush()
            for _ in range(4):
                assert json.loads(process.stdout.readline())["outcome"] == "connected"
        process.stdin.close()
        assert process.stdout.read() == b""
        assert process.wait(timeout=30) == 0


def test_sigterm_with_an_input_that_never_ends_ends_every_worker(gateway: Any) -> None:
    with clients(gateway, 1) as live:
        process = wsconn_process(
            "status", "--endpoint", gateway.endpoint, "--ids", "-", "-o", "json", "-P", "2",
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        workers = workers_of(process, 2)
        process.stdin.write(f"{live.ids[0]}\n".encode() * 5)
        process.stdin.flush()  # and the pipe stays open
        for _ in range(5):
            assert json.loads(process.stdout.readline())["outcome"] == "connected"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=20)
        finally:
            process.stdin.close()
        assert code == 143
        err = process.stderr.read() if process.stderr else b""
        assert b"stopped reading --ids: the input had not ended" in err
        assert not any(alive(pid) for pid in workers)


@pytest.mark.parametrize("killed", [1, 2])
def test_a_worker_that_dies_costs_its_lines_not_the_run(tmp_path: Path, killed: int) -> None:
    with started(GatewayConfig(port=0, latency=1.0)) as gw, clients(gw, 2) as live:
        lines = [live.ids[n % 2] for n in range(200)]
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(lines) + "\n")
        process = wsconn_process(
            "send", "--endpoint", gw.endpoint, "--ids", str(ids), "-d", "m", "-j", "4",
            "-P", "2", "-o", "json",
        )  # fmt: skip
        victims = sorted(workers_of(process, 2))[:killed]
        time.sleep(0.5)  # they hold lines, some in flight
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 1, err  # an internal error (1) outranks the rest
        results = [json.loads(line) for line in out.splitlines()]
        assert Counter(r["line"] for r in results) == Counter(lines)  # still each line once
        lost = [r for r in results if r["outcome"] == "failed"]
        assert lost and all("worker process" in r["message"] for r in lost)
        assert {r["outcome"] for r in results} <= {"sent", "failed"}
        if killed == 2:  # none left: the lines not yet sent fail too, none is lost
            assert any("no worker process is left" in r["message"] for r in lost)


@pytest.mark.parametrize(
    ("value", "words"), [("0", "not a number of processes"), ("x", "not a number"), ("65", "1-64")]
)
def test_processes_must_be_a_number_or_auto(wsconn: Any, value: str, words: str) -> None:
    run = wsconn(
        "send", "--endpoint", "http://127.0.0.1:9/dev", "--ids", "-", "-d", "x", "-P", value
    )
    assert run.code == 2 and words in run.stderr


def test_processes_goes_with_ids(wsconn: Any) -> None:
    run = wsconn("send", "--endpoint", "http://127.0.0.1:9/dev", "id=", "x", "-P", "2")
    assert run.code == 2 and "--processes goes with --ids" in run.stderr


def test_auto_is_one_worker_per_core(gateway: Any, tmp_path: Path) -> None:
    with clients(gateway, 1) as live:
        ids = tmp_path / "ids.txt"
        ids.write_text((live.ids[0] + "\n") * 20)
        process = wsconn_process(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "a", "-P", "auto",
            "--rate", "10",
        )  # fmt: skip
        seen = workers_of(process, os.cpu_count() or 1)
        _out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert len(seen) == (os.cpu_count() or 1)
