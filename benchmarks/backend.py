"""`wsconn local` running a backend: a Python handler's invocation overhead, then echoes through the
gateway against the gateway's floor; prints figures.

Usage: `.venv/bin/python benchmarks/backend.py [--calls 5000] [--clients 100] [--seconds 10]`.

1. Overhead: wsconn.local.backends.Backends invokes a no-op handler (a real worker process) with a
   realistic MESSAGE event, one call at a time, then with 8 callers at once: calls/s and the
   per-call time (the whole round trip: event to JSON, pipe, worker, answer back).
2. Echo: `wsconn local --port 0 --json --route echo=echo:handler --two-way echo` (a handler
   returning the body) and `wsconn local --port 0 --json` (no backend: each message answers the Forbidden
   frame, the gateway's floor), each driven in turn by the same --clients live WebSocket clients
   (in a child process of their own) sending one message, waiting for its answer, and sending the
   next, for --seconds: messages/s, p50/p99 round trip, the gateway's RSS (and its workers').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import WSCONN, hermetic_env, require_repo_venv

NOOP = "def handler(event, context):\n    return None\n"
ECHO = "def handler(event, context):\n    return {'statusCode': 200, 'body': event['body']}\n"

MESSAGE_EVENT = {
    "requestContext": {
        "routeKey": "echo",
        "messageId": "Cx4pLd2XIAMCJ7Q=",
        "eventType": "MESSAGE",
        "extendedRequestId": "Cx4pLdS1IAMFt8g=",
        "requestTime": "04/Dec/2026:18:20:31 +0000",
        "messageDirection": "IN",
        "stage": "dev",
        "connectedAt": 1796408405117,
        "requestTimeEpoch": 1796408431502,
        "identity": {"sourceIp": "127.0.0.1"},
        "requestId": "Cx4pLdS1IAMFt8g=",
        "domainName": "127.0.0.1:8443",
        "connectionId": "Cx4mPbZvIAMCJ7Q=",
        "apiId": "k3x9q1z7ab",
    },
    "body": '{"action": "echo", "msg": "hello"}',
    "isBase64Encoded": False,
}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def overhead(calls: int, workdir: Path) -> None:
    from wsconn.local.app import Function, PythonTarget
    from wsconn.local.backends import Backends

    (workdir / "noop.py").write_text(NOOP)
    function = Function(PythonTarget("noop", "handler"), name="noop", code_dir=workdir)
    backends = Backends(None, lambda *line: None)
    try:
        await backends.check([function])
        for _ in range(200):
            await backends.invoke(function, MESSAGE_EVENT, label="bench")
        times = []
        start = time.perf_counter()
        for _ in range(calls):
            began = time.perf_counter()
            result = await backends.invoke(function, MESSAGE_EVENT, label="bench")
            times.append((time.perf_counter() - began) * 1e6)
            assert result.error is None, result.error
        sequential = calls / (time.perf_counter() - start)

        async def caller(count: int) -> None:
            for _ in range(count):
                result = await backends.invoke(function, MESSAGE_EVENT, label="bench")
                assert result.error is None, result.error

        start = time.perf_counter()
        await asyncio.gather(*(caller(calls // 8) for _ in range(8)))
        concurrent = (calls // 8 * 8) / (time.perf_counter() - start)
    finally:
        await backends.aclose()
    print(
        f"== invocation overhead: no-op Python handler, {calls} calls, {len(json.dumps(MESSAGE_EVENT))}-byte event"
    )
    print(
        f"  one at a time : {sequential:8.0f} calls/s   per call mean {statistics.mean(times):6.0f} us"
        f"  p50 {pct(times, 0.5):6.0f} us  p99 {pct(times, 0.99):6.0f} us"
    )
    print(f"  8 callers     : {concurrent:8.0f} calls/s   (a pool of warm workers)")


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(line) for line in out.split()]


async def client_main(url: str, clients: int, seconds: float, expect: str) -> None:
    """Child process: connect CLIENTS, each sends/awaits for SECONDS; print one JSON summary."""
    from websockets.asyncio.client import connect

    sockets = [await connect(url, ping_interval=None, max_queue=None) for _ in range(clients)]
    print(json.dumps({"ready": clients}), flush=True)
    sys.stdin.readline()  # go
    rtts: list[float] = []
    wrong = 0
    stop_at = time.perf_counter() + seconds

    async def one(index: int) -> None:
        nonlocal wrong
        ws = sockets[index]
        n = 0
        while time.perf_counter() < stop_at:
            body = json.dumps({"action": "echo", "client": index, "n": n})
            began = time.perf_counter()
            await ws.send(body)
            answer = await ws.recv()
            rtts.append((time.perf_counter() - began) * 1000)
            if (answer != body) if expect == "echo" else ('"message": "Forbidden"' not in answer):
                wrong += 1
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    for ws in sockets:
        await ws.close()
    print(
        json.dumps(
            {
                "count": len(rtts),
                "elapsed": elapsed,
                "wrong": wrong,
                "p50": pct(rtts, 0.5),
                "p99": pct(rtts, 0.99),
            }
        ),
        flush=True,
    )


def run_gateway(
    args: list[str], env: dict[str, str], workdir: Path, clients: int, seconds: float, expect: str
) -> dict[str, float]:
    gateway = subprocess.Popen(
        [str(WSCONN), "local", "--port", "0", "--json", *args],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gateway.stdout is not None
        url = None
        for line in gateway.stdout:
            event = json.loads(line)
            if event.get("event") == "listening":
                url = event["wsUrl"]
                break
        if url is None:
            raise SystemExit(
                f"the gateway did not start: {gateway.stderr.read() if gateway.stderr else ''}"
            )
        # Drain the gateway's event lines so it never blocks on a full pipe.
        threading.Thread(target=gateway.stdout.read, daemon=True).start()
        driver = subprocess.Popen(
            [sys.executable, __file__, "--client", url, str(clients), str(seconds), expect],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert driver.stdin is not None and driver.stdout is not None
        json.loads(driver.stdout.readline())
        rss_before = rss_kb(gateway.pid)
        driver.stdin.write("go\n")
        driver.stdin.flush()
        peak, workers_peak = rss_before, 0
        while driver.poll() is None:
            time.sleep(0.25)
            peak = max(peak, rss_kb(gateway.pid))
            workers_peak = max(workers_peak, sum(rss_kb(pid) for pid in children(gateway.pid)))
            if driver.poll() is not None:
                break
        summary = json.loads(driver.stdout.readline())
        driver.wait()
    finally:
        gateway.terminate()
        try:
            gateway.wait(10)
        except subprocess.TimeoutExpired:
            gateway.kill()
    return {**summary, "rss_kb": peak, "workers_kb": workers_peak}


def echo(clients: int, seconds: float, workdir: Path) -> None:
    help_text = subprocess.run(
        [str(WSCONN), "local", "--help"], capture_output=True, text=True
    ).stdout
    if "--route" not in help_text or "--two-way" not in help_text:
        print("== echo: skipped (this wsconn local has no --route/--two-way yet)")
        return
    (workdir / "echo.py").write_text(ECHO)
    env = hermetic_env(workdir)
    env["VIRTUAL_ENV"] = str(Path(sys.prefix))
    runs = {
        "echo (a two-way Python route)": run_gateway(
            ["--route", "echo=echo:handler", "--two-way", "echo"],
            env,
            workdir,
            clients,
            seconds,
            "echo",
        ),
        "floor (no backend: Forbidden)": run_gateway(
            [], env, workdir, clients, seconds, "forbidden"
        ),
    }
    print(
        f"== echo through the gateway: {clients} live clients, {seconds:.0f} s each, one message in flight per client"
    )
    print(
        f"  {'':32} {'messages/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'gateway RSS':>12} {'workers RSS':>12} {'wrong':>6}"
    )
    for name, result in runs.items():
        rate = result["count"] / result["elapsed"]
        workers = f"{result['workers_kb'] / 1024:.0f} MB" if result["workers_kb"] else "-"
        print(
            f"  {name:32} {rate:10.0f} {result['p50']:8.2f} {result['p99']:8.2f}"
            f" {result['rss_kb'] / 1024:9.0f} MB {workers:>12} {result['wrong']:6.0f}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, clients, seconds, expect = sys.argv[2:6]
        asyncio.run(client_main(url, int(clients), float(seconds), expect))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-echo", action="store_true")
    args = parser.parse_args()
    require_repo_venv(parser)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(overhead(args.calls, Path(tmp)))
        if not args.skip_echo:
            echo(args.clients, args.seconds, Path(tmp))


if __name__ == "__main__":
    main()
