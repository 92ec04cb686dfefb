"""Fan-out benchmark: `wsconn send --ids` against a boto3 thread pool and the AWS SDK for JavaScript v3.

All post "hello" to live WebSocket clients of `wsconn local --latency 0.02` (its own process,
127.0.0.1, every management answer 20 ms late as over a real network) as whole processes,
interleaved; every message must reach its client exactly once. Then the peak RSS of
`wsconn send --ids` for 10,000 live ids and 200,000 gone ones.
Run with the repo's venv: `.venv/bin/python benchmarks/fanout.py [--messages N] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from subprocess import DEVNULL, PIPE
from typing import Any

from _common import (
    JS_SDK,
    REPO,
    VENV,
    WSCONN,
    BenchError,
    Run,
    ensure_js_sdk,
    hermetic_env,
    measure,
    node_env,
    require_repo_venv,
    stop,
)

BENCH = REPO / "benchmarks"
PYTHON = VENV / "bin" / "python"
MESSAGE = "hello"
# Issue 13's aims, wsconn -P 1 against the peers: msg/s >= 1.5x the JS SDK's, CPU per message
# <= 0.5x the JS SDK's and <= 0.3x boto3's; -P 2 never slower than -P 1 (>= 0.95x its wall time).
JS_RATE_AIM, JS_CPU_AIM, BOTO3_CPU_AIM, PROCESSES_AIM, CPU_AIM_MS = 1.5, 0.5, 0.3, 0.95, 0.3
WSCONN_1, WSCONN_2, BOTO3, JS = "wsconn -P 1", "wsconn -P 2", "boto3 pool", "JS SDK v3"
WARMUPS = 1
RSS_LIVE, RSS_GONE = 10_000, 200_000
RUN_TIMEOUT = 600.0  # seconds for any one measured process
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


class Gateway:
    """`wsconn local --port 0 --json` as its own process; a thread reads its events."""

    def __init__(self, env: dict[str, str], log: Path, latency: float) -> None:
        cmd = [str(WSCONN), "local", "--port", "0", "--json", "--latency", str(latency)]
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=DEVNULL, stdout=PIPE, stderr=err, text=True
            )
        self.endpoint = self.ws_url = ""
        self.clients: dict[str, int] = {}  # connection id -> client index (from ?client=i)
        self.statuses: Counter[int] = Counter()  # answers to POSTs: 200 sent, 410 gone, ...
        self.other: Counter[str] = Counter()  # disconnect and error events
        self._changed = threading.Condition()
        threading.Thread(target=self._drain, name="gateway-events", daemon=True).start()
        try:
            self.wait(lambda: bool(self.endpoint), 15.0, "no listening event")
        except BaseException:
            stop(self.proc)
            raise

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with self._changed:
                name = event["event"]
                if name == "listening":
                    self.endpoint, self.ws_url = event["endpoint"], event["wsUrl"]
                elif name == "connect":
                    self.clients[event["connectionId"]] = int(event["query"]["client"])
                elif name in ("post", "gone", "denied"):
                    self.statuses[int(event["status"])] += 1
                elif name in ("disconnect", "error"):
                    self.other[name] += 1
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()  # end of output: the gateway exited

    def live(self) -> list[str]:
        """The connection ids, in client order."""
        with self._changed:
            return sorted(self.clients, key=self.clients.__getitem__)

    def wait(self, done: Callable[[], bool], timeout: float, why: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: done() or self.proc.poll() is not None, timeout):
                raise BenchError(f"gateway: {why} after {timeout:.0f} s")
            if not done():
                raise BenchError(f"gateway exited {self.proc.returncode}: {why}")


class Clients:
    """benchmarks/_clients.py: N live WebSocket clients in their own process."""

    def __init__(self, ws_url: str, count: int, env: dict[str, str]) -> None:
        cmd = [str(PYTHON), str(BENCH / "_clients.py"), ws_url, str(count)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=PIPE, stdout=PIPE, text=True)
        self.expected = [0] * count  # "hello"s each client must have received by now
        try:
            self._read()  # {"ready": N}, or EOF if they could not connect
        except BaseException:
            stop(self.proc)
            raise

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the WebSocket clients exited ({self.proc.wait(5)})")
        result: dict[str, Any] = json.loads(line)
        return result

    def expect(self, sent: list[int], timeout: float = 30.0) -> None:
        """Client i was sent sent[i] more: wait until each has exactly its due, or BenchError."""
        self.expected = [due + more for due, more in zip(self.expected, sent, strict=True)]
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            state = self._read()
            counts: list[int] = state["counts"]
            extra = sum(max(0, got - due) for got, due in zip(counts, self.expected, strict=True))
            if extra or state["unexpected"] or state["closed"]:
                why = f"{extra} extra, {state['unexpected']} unexpected, {state['closed']} closed"
                raise BenchError(f"clients: {why}")
            if counts == self.expected:
                return
            if time.monotonic() > deadline:
                missing = sum(self.expected) - sum(counts)
                raise BenchError(f"undelivered: {missing} of {sum(self.expected)}")
            time.sleep(0.05)


def write_ids(path: Path, live: list[str], count: int) -> list[int]:
    """`count` lines cycling over the live ids; how many lines each client's id got."""
    per_client = [0] * len(live)
    with path.open("w") as out:
        for line in range(count):
            out.write(live[line % len(live)] + "\n")
            per_client[line % len(live)] += 1
    return per_client


def write_gone_ids(path: Path, count: int) -> None:
    """`count` well-formed ids no client has (the gateway answers 410)."""
    rng = random.Random(4)
    with path.open("w") as out:
        for _ in range(count):
            out.write("".join(rng.choices(ID_CHARS, k=15)) + "=\n")


def numbers(run: Run) -> dict[str, float]:
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "maxrss_kb": run.maxrss_kb, "code": run.code}


def has_processes() -> bool:
    """Whether this wsconn has -P/--processes (the -P 2 peer is skipped without it)."""
    out = subprocess.run([str(WSCONN), "send", "--help"], capture_output=True, text=True)
    return "--processes" in out.stdout


def side_by_side(
    args: argparse.Namespace, env: dict[str, str], work: Path, gateway: Gateway, clients: Clients
) -> dict[str, list[Run]]:
    """The peers over the same ids file, interleaved (order rotated each round) after WARMUPS."""
    ids, conc, endpoint = work / "ids.txt", str(args.concurrency), gateway.endpoint
    per_client = write_ids(ids, gateway.live(), args.messages)
    send = [str(WSCONN), "send", "--endpoint", endpoint, "--ids", str(ids), "-d", MESSAGE]
    send += ["-j", conc]
    commands = {WSCONN_1: send + (["-P", "1"] if args.processes else [])}
    if args.processes:
        commands[WSCONN_2] = [*send, "-P", "2"]
    commands[BOTO3] = [str(PYTHON), str(BENCH / "_boto3_pool.py"), endpoint, str(ids), conc]
    commands[JS] = ["node", str(BENCH / "_js_pool.mjs"), endpoint, str(ids), conc]
    js_env = node_env(env)
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    names = list(commands)
    for round_no in range(WARMUPS + args.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            run = measure(commands[name], js_env if name == JS else env, work, RUN_TIMEOUT)
            if run.code != 0:
                raise BenchError(f"{name} exited {run.code}: {run.stderr}")
            clients.expect(per_client)
            if round_no >= WARMUPS:
                runs[name].append(run)
    return runs


def peak_rss(
    args: argparse.Namespace, env: dict[str, str], work: Path, gateway: Gateway, clients: Clients
) -> dict[str, Run]:
    """`wsconn send --ids` over RSS_LIVE live ids (delivered), then RSS_GONE gone ids (410)."""
    ids = work / "many.txt"
    send = [str(WSCONN), "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", MESSAGE]
    send += ["-j", str(args.concurrency)]
    per_client = write_ids(ids, gateway.live(), RSS_LIVE)
    live = measure(send, env, work, RUN_TIMEOUT)
    if live.code != 0:
        raise BenchError(f"{RSS_LIVE} live ids: exit {live.code}: {live.stderr}")
    clients.expect(per_client)
    write_gone_ids(ids, RSS_GONE)
    gone_before = gateway.statuses[410]
    gone = measure(send, env, work, RUN_TIMEOUT)
    if gone.code != 3:
        raise BenchError(f"{RSS_GONE} gone ids: exit {gone.code}, not 3: {gone.stderr}")
    gateway.wait(lambda: gateway.statuses[410] - gone_before == RSS_GONE, 30.0, "410s missing")
    clients.expect([0] * len(per_client))
    return {"live": live, "gone": gone}


def summary(runs: list[Run], messages: int) -> dict[str, float]:
    rates = [messages / run.wall_s for run in runs]
    return {
        "msgs_per_s": statistics.median(rates),
        "min_msgs_per_s": min(rates),
        "max_msgs_per_s": max(rates),
        "cpu_ms_per_msg": statistics.median(run.cpu_s * 1000 / messages for run in runs),
        "peak_rss_mb": max(run.maxrss_kb for run in runs) / 1024,
    }


def report(
    args: argparse.Namespace, runs: dict[str, list[Run]], rss: dict[str, Run]
) -> dict[str, Any]:
    """Print the tables; the numbers for --json."""
    stats = {name: summary(samples, args.messages) for name, samples in runs.items()}
    in_loop = {
        name: statistics.median(args.messages / json.loads(run.stdout)["loop_s"] for run in rs)
        for name, rs in runs.items()
        if name in (BOTO3, JS)
    }
    one = stats[WSCONN_1]

    print(f"\n{'whole process':<16}{'msgs/s':>8}{'min':>7}{'max':>7}", end="")
    print(f"{'CPU ms/msg':>12}{'msgs/CPU-s':>12}{'RSS MB':>8}")
    for name, s in stats.items():
        print(
            f"{name:<16}{s['msgs_per_s']:>8.0f}{s['min_msgs_per_s']:>7.0f}"
            f"{s['max_msgs_per_s']:>7.0f}{s['cpu_ms_per_msg']:>12.3f}"
            f"{1000 / s['cpu_ms_per_msg']:>12.0f}{s['peak_rss_mb']:>8.1f}"
        )
    for name, rate in in_loop.items():
        print(f"{name + ', in-loop only':<24}{rate:>8.0f} msgs/s (first call to last answer)")
    ceiling = args.concurrency / args.latency if args.latency else None
    if ceiling:
        print(f"ceiling: {args.concurrency} in flight x {args.latency * 1000:g} ms", end="")
        print(f" = {ceiling:.0f} msgs/s")

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    ratios = {
        "rate_vs_js": one["msgs_per_s"] / stats[JS]["msgs_per_s"],
        "cpu_vs_js": one["cpu_ms_per_msg"] / stats[JS]["cpu_ms_per_msg"],
        "cpu_vs_boto3": one["cpu_ms_per_msg"] / stats[BOTO3]["cpu_ms_per_msg"],
        "rate_vs_boto3": one["msgs_per_s"] / stats[BOTO3]["msgs_per_s"],
    }
    print(f"\n{WSCONN_1} / JS SDK msgs/s: {ratios['rate_vs_js']:.2f}x ", end="")
    print(f"(aim >= {JS_RATE_AIM}x) {verdict(ratios['rate_vs_js'] >= JS_RATE_AIM)}")
    print(f"{WSCONN_1} / JS SDK CPU per message: {ratios['cpu_vs_js']:.2f}x ", end="")
    print(f"(aim <= {JS_CPU_AIM}x) {verdict(ratios['cpu_vs_js'] <= JS_CPU_AIM)}")
    print(f"{WSCONN_1} / boto3 CPU per message: {ratios['cpu_vs_boto3']:.2f}x ", end="")
    print(f"(aim <= {BOTO3_CPU_AIM}x) {verdict(ratios['cpu_vs_boto3'] <= BOTO3_CPU_AIM)}")
    print(f"{WSCONN_1} / boto3 msgs/s: {ratios['rate_vs_boto3']:.2f}x")
    cpu = one["cpu_ms_per_msg"]
    print(f"{WSCONN_1} CPU per message: {cpu:.3f} ms (aim <= {CPU_AIM_MS} ms) ", end="")
    print(verdict(cpu <= CPU_AIM_MS))
    if WSCONN_2 in stats:
        two = stats[WSCONN_2]
        wall = one["msgs_per_s"] and two["msgs_per_s"] / one["msgs_per_s"]
        cpu_two = two["cpu_ms_per_msg"] / one["cpu_ms_per_msg"]
        ratios |= {"processes_rate": wall, "processes_cpu": cpu_two}
        print(f"{WSCONN_2} / {WSCONN_1} msgs/s: {wall:.2f}x ", end="")
        print(f"(aim >= {PROCESSES_AIM}x) {verdict(wall >= PROCESSES_AIM)}; ", end="")
        print(f"CPU per message {cpu_two:.2f}x (aim <= 1.10x) {verdict(cpu_two <= 1.10)}")
    if rss:
        print(f"\n{'wsconn send --ids':<28}{'exit':>5}{'wall s':>8}{'msgs/s':>9}", end="")
        print(f"{'CPU ms/msg':>12}{'peak RSS MB':>13}")
        for label, count in (("live", RSS_LIVE), ("gone", RSS_GONE)):
            run = rss[label]
            print(
                f"{f'{count} {label} ids':<28}{run.code:>5}{run.wall_s:>8.1f}"
                f"{count / run.wall_s:>9.0f}{run.cpu_s * 1000 / count:>12.3f}"
                f"{run.maxrss_kb / 1024:>13.1f}"
            )
    return {
        "stats": stats,
        "in_loop_msgs_per_s": in_loop,
        "ratios": ratios,
        "samples": {name: [numbers(run) for run in rs] for name, rs in runs.items()},
        "rss": {label: numbers(run) for label, run in rss.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000, help="ids per measured run")
    parser.add_argument("--concurrency", type=int, default=64, help="-j, pool and JS workers")
    parser.add_argument(
        "--latency", type=float, default=0.02, help="the gateway's delay per answer, seconds"
    )
    parser.add_argument("--clients", type=int, default=100, help="live WebSocket clients")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (each A and B)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 10k/200k RSS runs")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args()
    limits = {"messages": (100, 1_000_000), "concurrency": (1, 256), "clients": (1, 1000)}
    limits |= {"rounds": (1, 50), "latency": (0, 1)}
    for name, (low, high) in limits.items():
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be between {low} and {high}")
    require_repo_venv(parser)

    versions = {name: version(name) for name in ("wsconn", "boto3", "botocore", "websockets")}
    versions["node"], versions[JS_SDK] = ensure_js_sdk()
    args.processes = has_processes()
    print(f"python {sys.version.split()[0]}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    with tempfile.TemporaryDirectory(prefix="wsconn-fanout-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        env = hermetic_env(work / "home")
        gateway = Gateway(env, work / "gateway.log", args.latency)
        try:
            clients = Clients(gateway.ws_url, args.clients, env)
            try:
                gateway.wait(lambda: len(gateway.clients) == args.clients, 30.0, "clients missing")
                print(
                    f"gateway {gateway.endpoint} (wsconn local --latency {args.latency:g}), ",
                    end="",
                )
                print(f"{args.clients} live clients")
                print(f"{args.messages} ids per run, -j {args.concurrency}, ", end="")
                print(f"{args.rounds} rounds + {WARMUPS} warm-up, interleaved ...")
                runs = side_by_side(args, env, work, gateway, clients)
                rss: dict[str, Run] = {}
                if not args.skip_rss:
                    print(f"peak RSS: {RSS_LIVE} live ids, then {RSS_GONE} gone ids ...")
                    rss = peak_rss(args, env, work, gateway, clients)
                statuses, odd = dict(sorted(gateway.statuses.items())), dict(gateway.other)
            finally:
                stop(clients.proc)
        finally:
            stop(gateway.proc)

    result = report(args, runs, rss)
    delivered = sum(clients.expected)
    print(f"\ndelivered: {delivered} messages, each once to its own client, nothing else")
    print(f"gateway answered POSTs: {statuses}; disconnects, errors: {odd or 'none'}")
    if args.json:
        result |= {"args": vars(args), "delivered": delivered, "versions": versions}
        result |= {"gateway_statuses": statuses}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"fanout benchmark: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("fanout benchmark: interrupted", file=sys.stderr)
        sys.exit(130)
