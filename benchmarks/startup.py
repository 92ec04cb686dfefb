"""Start-up benchmark: `wsconn send` against the AWS CLI and the JS SDK v3's PostToConnectionCommand.

Each posts "hello" to one WebSocket client of the project's local gateway on 127.0.0.1, as whole
processes, interleaved. Also times `wsconn --help`, shell completion and `python -c pass`, and
checks that --help and completion import none of botocore, requests, rich or aiohttp.
Run with the repo's venv: `.venv/bin/python benchmarks/startup.py [--runs N] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import (
    ACCESS_KEY,
    JS_SDK,
    REPO,
    SECRET_KEY,
    WSCONN,
    BenchError,
    ensure_js_sdk,
    hermetic_env,
    node_env,
    require_repo_venv,
)

PEERS = REPO / "benchmarks" / ".venv-peers"
AWS = PEERS / "bin" / "aws"
JS_SEND = REPO / "benchmarks" / "_js_send.mjs"  # the seed's Node.js snippet as one process
MESSAGE = "hello"
FORBIDDEN = ("botocore", "requests", "rich", "aiohttp")
RATIO_BAR = 0.5
JS_RATIO_AIM = 0.8  # issue 13: wsconn send <= 0.8x the Node snippet's wall time
HELP_AIM_MS = 80.0
WARMUPS = 2
TIMEOUT = 60.0  # seconds for any one process


def ensure_peers() -> str:
    """Create benchmarks/.venv-peers with the AWS CLI (v1, from PyPI) unless it is there."""
    if not AWS.exists():
        print(f"setting up {PEERS.relative_to(REPO)} (python -m venv; pip install awscli) ...")
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
        pip = [str(PEERS / "bin" / "python"), "-m", "pip", "install", "-q", "awscli"]
        subprocess.run(pip, check=True, timeout=600)
    out = subprocess.run([str(AWS), "--version"], capture_output=True, text=True, check=True)
    return (out.stdout or out.stderr).strip()


class Receiver:
    """One WebSocket client of the gateway; a thread drains and counts what it receives."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url)
        self.delivered = 0
        self.unexpected: list[str | bytes] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name="bench-drain", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.ws:
                with self._changed:
                    if message == MESSAGE:
                        self.delivered += 1
                    else:
                        self.unexpected.append(message)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """True once `count` messages "hello" have arrived (nothing else), within `timeout`."""
        with self._changed:
            self._changed.wait_for(lambda: self.delivered >= count or self.unexpected, timeout)
            return self.delivered >= count and not self.unexpected

    def close(self) -> None:
        self.ws.close()
        self._thread.join(timeout=5.0)


def run(cmd: list[str], env: dict[str, str], expect: str | None = None) -> float:
    """Run one whole process; its wall time in ms. Raises BenchError unless it exits 0."""
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT
    )
    elapsed = (time.perf_counter() - start) * 1000.0
    if proc.returncode != 0:
        raise BenchError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    if expect is not None and expect not in proc.stdout:
        raise BenchError(f"{' '.join(cmd)}: {expect!r} not in its output: {proc.stdout[:300]!r}")
    return elapsed


def interleaved(
    commands: dict[str, tuple[list[str], dict[str, str]]],
    runs: int,
    receiver: Receiver | None = None,
    expect: dict[str, str] | None = None,
) -> dict[str, list[float]]:
    """Time each command `runs` times, round-robin after WARMUPS untimed rounds."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_no in range(WARMUPS + runs):
        for name, (cmd, env) in commands.items():
            before = receiver.delivered if receiver is not None else 0
            ms = run(cmd, env, (expect or {}).get(name))
            if receiver is not None and not receiver.wait_for(before + 1):
                got = receiver.unexpected[-1:] or "nothing"
                raise BenchError(f"{name}: not delivered (received {got!r})")
            if round_no >= WARMUPS:
                times[name].append(ms)
    return times


def importtime(cmd: list[str], env: dict[str, str]) -> list[tuple[int, int, str]]:
    """(self us, cumulative us, module as printed) for each import of one run (-X importtime)."""
    proc = subprocess.run(
        cmd,
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-500:]}")
    rows: list[tuple[int, int, str]] = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "[us]" not in line:
            own, cumulative, name = line.removeprefix("import time:").split("|", 2)
            rows.append((int(own), int(cumulative), name.rstrip()))
    return rows


def forbidden_imports(cmd: list[str], env: dict[str, str]) -> list[str]:
    """The forbidden top-level packages that one run imports."""
    seen = {name.strip().split(".")[0] for _, _, name in importtime(cmd, env)}
    return sorted(seen & set(FORBIDDEN))


def top_imports(rows: list[tuple[int, int, str]], count: int = 20) -> list[str]:
    """The `count` imports with the largest cumulative time, as table lines."""
    rows = sorted(rows, key=lambda row: -row[1])[:count]
    return [f"  {cum / 1000:8.1f} ms  {own / 1000:7.1f} ms  {name}" for own, cum, name in rows]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": statistics.quantiles(samples, n=10, method="inclusive")[8],
        "min_ms": min(samples),
        "max_ms": max(samples),
        "runs": len(samples),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (>= 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args()
    if args.runs < 3 or args.runs > 500:
        parser.error("--runs must be between 3 and 500")
    require_repo_venv(parser)

    from wsconn import __version__
    from wsconn.local.credentials import LocalCredentials
    from wsconn.local.gateway import GatewayConfig, GatewayThread

    aws_version = ensure_peers()
    node_version, js_version = ensure_js_sdk()
    print(f"python {sys.version.split()[0]}, wsconn {__version__}, {aws_version}, ", end="")
    print(f"node {node_version}, {JS_SDK} {js_version}")
    events: list[dict[str, object]] = []
    config = GatewayConfig(port=0, credentials=LocalCredentials(ACCESS_KEY, SECRET_KEY))
    gateway = GatewayThread(config, on_event=events.append)
    receiver: Receiver | None = None
    with tempfile.TemporaryDirectory(prefix="wsconn-bench-") as home:
        env = hermetic_env(Path(home))
        try:
            gateway.start()
            receiver = Receiver(gateway.ws_url)
            deadline = time.monotonic() + 5.0
            while not any(e.get("event") == "connect" for e in events):
                if time.monotonic() > deadline:
                    raise BenchError("the gateway reported no connect event")
                time.sleep(0.01)
            conn_id = str(next(e["connectionId"] for e in events if e.get("event") == "connect"))
            endpoint = gateway.endpoint
            print(f"gateway {endpoint}, connection {conn_id}, {args.runs} runs + {WARMUPS} warm-up")

            send = [str(WSCONN), "send", "--endpoint", endpoint, conn_id, MESSAGE]
            post = [str(AWS), "apigatewaymanagementapi", "post-to-connection"]
            post += ["--endpoint-url", endpoint, "--connection-id", conn_id, "--data", MESSAGE]
            complete_env = {**env, "_WSCONN_COMPLETE": "bash_complete"}
            complete_env |= {"COMP_WORDS": "wsconn se", "COMP_CWORD": "1"}
            js = ["node", str(JS_SEND), endpoint, conn_id, MESSAGE]
            posting = {
                "wsconn send": (send, env),
                "aws post-to-connection": (post, env),
                "node PostToConnection": (js, node_env(env)),
            }
            local = {
                "wsconn --help": ([str(WSCONN), "--help"], env),
                "wsconn completion": ([str(WSCONN)], complete_env),
                "python -c pass": ([sys.executable, "-c", "pass"], env),
            }
            expect = {"wsconn --help": "send", "wsconn completion": "send"}
            times = interleaved(posting, args.runs, receiver)
            times |= interleaved(local, args.runs, expect=expect)

            help_cmd = [sys.executable, "-X", "importtime", "-m", "wsconn", "--help"]
            bad_help = forbidden_imports(help_cmd, env)
            bad_complete = forbidden_imports([str(WSCONN)], complete_env)
            before = receiver.delivered
            send_rows = importtime(send, env)
            if not receiver.wait_for(before + 1):
                raise BenchError("wsconn send under -X importtime: not delivered")
        finally:
            if receiver is not None:
                receiver.close()
            gateway.stop()

    stats = {name: summary(samples) for name, samples in times.items()}
    print(f"\n{'command':<26}{'median ms':>11}{'p90 ms':>9}{'min ms':>9}{'max ms':>9}{'runs':>6}")
    for name, s in stats.items():
        print(
            f"{name:<26}{s['median_ms']:>11.1f}{s['p90_ms']:>9.1f}"
            f"{s['min_ms']:>9.1f}{s['max_ms']:>9.1f}{s['runs']:>6}"
        )
    ratio = stats["wsconn send"]["median_ms"] / stats["aws post-to-connection"]["median_ms"]
    js_ratio = stats["wsconn send"]["median_ms"] / stats["node PostToConnection"]["median_ms"]
    help_ms = stats["wsconn --help"]["median_ms"]
    ratio_ok, help_ok = ratio <= RATIO_BAR, help_ms < HELP_AIM_MS
    print(f"\ndelivered: {receiver.delivered} messages {MESSAGE!r}, none unexpected")
    print(f"wsconn send / aws post-to-connection: {ratio:.2f} (bar <= {RATIO_BAR}) ", end="")
    print("ok" if ratio_ok else "MISSED")
    print(f"wsconn send / node PostToConnectionCommand: {js_ratio:.2f} ", end="")
    print(f"(aim <= {JS_RATIO_AIM}) {'ok' if js_ratio <= JS_RATIO_AIM else 'MISSED'}")
    print(f"wsconn --help median {help_ms:.1f} ms (aim < {HELP_AIM_MS:.0f} ms) ", end="")
    print("ok" if help_ok else "over")
    for what, bad in (("--help", bad_help), ("completion", bad_complete)):
        found = f"FORBIDDEN {', '.join(bad)}" if bad else f"none of {', '.join(FORBIDDEN)}"
        print(f"wsconn {what} imports {found}")
    if not ratio_ok or js_ratio > JS_RATIO_AIM:
        print("\nwsconn send, top imports by cumulative time (cumulative, self, module):")
        print("\n".join(top_imports(send_rows)))

    if args.json:
        result = {
            "stats": stats,
            "ratio_send_vs_aws": ratio,
            "ratio_send_vs_node": js_ratio,
            "help_median_ms": help_ms,
            "forbidden_imports": {"help": bad_help, "completion": bad_complete},
            "delivered": receiver.delivered,
            "versions": {
                "python": sys.version.split()[0],
                "wsconn": __version__,
                "aws": aws_version,
                "node": node_version,
                JS_SDK: js_version,
            },
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0 if not (bad_help or bad_complete) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"startup benchmark: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("startup benchmark: interrupted", file=sys.stderr)
        sys.exit(130)
