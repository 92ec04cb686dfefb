"""The local gateway under abuse: 1,000 clients, a broadcast to all, bulk abuse; prints figures.

Usage: `.venv/bin/python benchmarks/abuse.py [--clients 1000] [--procs 4] [--rounds 2]`. Runs
`wsconn local --port 0 --json` (fake keys, loopback only). Each round: connect the clients (from
--procs child processes), broadcast with `wsconn send --ids FILE -j 16`, count what each got, run
the abuse mix, disconnect all. RSS after round 2 equal to round 1's means reuse, not a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MESSAGE = "broadcast-1"
KEY, SECRET = "AKIAWSCONNBENCH00001", "wsconnBENCHsecret/NotReal+0123456789abcd"
BIN = Path(sys.executable).parent


async def client_main(url: str, prefix: str, count: int) -> None:
    """Connect clients PREFIX-0..; print {"counts": [...]} per stdin line; close all at EOF."""
    from websockets.asyncio.client import ClientConnection, connect

    counts, gate = [0] * count, asyncio.Semaphore(50)

    async def one(index: int) -> ClientConnection:
        async with gate:
            ua = f"{prefix}-{index}"
            return await connect(url, user_agent_header=ua, open_timeout=60, ping_interval=None)

    sockets = await asyncio.gather(*(one(i) for i in range(count)))

    async def drain(index: int) -> None:
        try:
            async for message in sockets[index]:
                counts[index] += 1 if message == MESSAGE else 1000
        except Exception:
            pass

    tasks = [asyncio.create_task(drain(i)) for i in range(count)]
    print(json.dumps({"ready": count}), flush=True)
    while await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline):
        print(json.dumps({"counts": counts}), flush=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.wait(tasks, timeout=10)


class Gateway:
    """`wsconn local` as a subprocess; its JSON events are read in a thread."""

    def __init__(self, env: dict[str, str], stderr: Path) -> None:
        command = [str(BIN / "wsconn"), "local", "--port", "0", "--json"]
        with stderr.open("wb") as err:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=err)
        self.ids: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.listening: dict[str, str] = {}
        ready = threading.Event()
        threading.Thread(target=self._read_stdout, args=(ready,), daemon=True).start()
        if not ready.wait(30):
            raise SystemExit("the gateway did not start")
        self.port = int(self.listening["endpoint"].rsplit(":", 1)[1].split("/")[0])

    def _read_stdout(self, ready: threading.Event) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            self.counts[event["event"]] = self.counts.get(event["event"], 0) + 1
            if event["event"] == "listening":
                self.listening = event
                ready.set()
            elif event["event"] == "connect":
                self.ids[event["userAgent"]] = event["connectionId"]

    def rss_mib(self) -> float:
        lines = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        return next(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:"))

    def open_count(self) -> int:
        return self.counts.get("connect", 0) - self.counts.get("disconnect", 0)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(30)


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def signed(port: int, method: str, path: str, body: bytes = b"") -> bytes:
    """A whole request signed by botocore, as bytes."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=f"http://127.0.0.1:{port}{path}", data=body)
    SigV4Auth(Credentials(KEY, SECRET), "execute-api", "us-east-1").add_auth(request)
    headers = [f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    headers += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
    return (
        f"{method} {path} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    ).encode() + body


def conn_path(connection_id: str) -> str:
    return f"/dev/@connections/{connection_id.replace('=', '%3D')}"


def exchange(port: int, data: bytes, *, rst: bool = False, trickle: float = 0.0) -> int | None:
    """Send ``data`` (a byte at a time with ``trickle``); the answer's status, None if none."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            for i in range(0, len(data), 1 if trickle else len(data)):
                sock.sendall(data[i : i + 1] if trickle else data)
                time.sleep(trickle)
        except OSError:
            pass
        if rst:  # close with a TCP reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return None
        head = b""
        try:
            while b"\r\n" not in head and (chunk := sock.recv(4096)):
                head += chunk
        except OSError:
            pass
        return int(head.split()[1]) if b"\r\n" in head else None


def upgrade(port: int, user_agent: str = "handshake") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /dev HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade"
        f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: {user_agent}\r\n\r\n"
    ).encode()


def reset_during_posts(gw: Gateway, victims: int) -> list[int | None]:
    """Clients that stop reading get 128 KiB POSTs until one is held; then they reset."""
    sockets, names = [], [f"victim-{time.monotonic_ns()}-{i}" for i in range(victims)]
    for name in names:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        sock.sendall(upgrade(gw.port, name))
        sock.recv(4096)  # the 101 (the gateway sends nothing else until a POST)
        sockets.append(sock)
    wait_for(lambda: all(name in gw.ids for name in names), 10)
    posts = [signed(gw.port, "POST", conn_path(gw.ids[name]), b"x" * 131072) for name in names]
    results: list[int | None] = []
    with ThreadPoolExecutor(victims) as pool:
        futures = [
            pool.submit(lambda p: [exchange(gw.port, p) for _ in range(40)], p) for p in posts
        ]
        time.sleep(1.5)
        for sock in sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        for future in futures:
            results += future.result()
    return results


def abuse(gw: Gateway, live_id: str) -> dict[str, str]:
    """The abuse mix in bulk, 64 at a time; the status codes each kind got."""
    port, path = gw.port, conn_path(live_id)
    malformed = [
        os.urandom(2048),
        b"GET\r\n\r\n",
        b"\x00" * 64 + b"\r\n\r\n",
        b"GET /dev HTTP/9.9\r\n\r\n",
        b"POST /dev/@connections/x HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /dev HTTP/1.1\r\nX: \x01\r\n\r\n",
        signed(port, "POST", path, b"declared") + b"surplus garbage\r\n\r\n",
    ]
    huge = [
        b"GET /dev HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
        b"GET /dev HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(1000)) + b"\r\n",
    ]
    slow = signed(port, "GET", path)
    short_body = signed(port, "POST", path, b"x" * 1000)[:-900]
    jobs = [(malformed[i % len(malformed)], False, 0.0) for i in range(200)]
    jobs += [(huge[i % 2], False, 0.0) for i in range(50)]
    jobs += [(slow, False, 2.0 / len(slow)) for _ in range(50)]  # each trickled over ~2 s
    jobs += [(upgrade(port) if i % 2 else short_body, True, 0.0) for i in range(80)]
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(lambda j: exchange(port, j[0], rst=j[1], trickle=j[2]), jobs))
    groups = {"malformed x200": statuses[:200], "huge headers x50": statuses[200:250]}
    groups["slow senders x50"] = statuses[250:300]
    groups["resets during POSTs to that client x20 (POST statuses)"] = reset_during_posts(gw, 20)
    results = {"resets mid-handshake x40, mid-body x40": "sent"}
    for name, codes in groups.items():
        results[name] = ", ".join(f"{c}: {codes.count(c)}" for c in sorted(set(codes), key=str))
    return results


def run_round(gw: Gateway, number: int, n: int, procs: int, env: dict[str, str], tmp: Path) -> None:
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    prefixes = [f"r{number}p{i}" for i in range(procs)]
    command = [sys.executable, __file__, "--client-mode", gw.listening["wsUrl"]]
    children = [
        subprocess.Popen(
            [*command, p, str(c)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for p, c in zip(prefixes, shares, strict=True)
    ]
    for child in children:
        assert child.stdout is not None
        child.stdout.readline()  # {"ready": count}
    names = [f"{p}-{i}" for p, c in zip(prefixes, shares, strict=True) for i in range(c)]
    wait_for(lambda: all(name in gw.ids for name in names), 30)
    ids = [gw.ids[name] for name in names if name in gw.ids]
    print(f"[round {number}] clients connected: {len(ids)} / {n} (gateway: {gw.open_count()} open)")
    (tmp / "ids.txt").write_text("".join(i + "\n" for i in ids))
    send = [str(BIN / "wsconn"), "send", "--endpoint", gw.listening["endpoint"], "-o", "json"]
    started = time.perf_counter()
    done = subprocess.run(
        [*send, "--ids", str(tmp / "ids.txt"), "-d", MESSAGE, "-j", "16"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - started

    def counts() -> list[int]:
        result: list[int] = []
        for child in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("report\n")
            child.stdin.flush()
            result += json.loads(child.stdout.readline())["counts"]
        return result

    wait_for(lambda: min(counts()) >= 1, 15)
    time.sleep(1.0)  # a late duplicate would show up now
    got = counts()
    print(
        f"[round {number}] broadcast delivered: {got.count(1)} / {n} got exactly one "
        f"(none: {got.count(0)}, more: {sum(c > 1 for c in got)}; wsconn send exit {done.returncode})"
    )
    print(f"[round {number}] broadcast time: {elapsed:.2f} s ({n / elapsed:.0f} POST/s, -j 16)")
    print(f"[round {number}] RSS with {n} clients: {gw.rss_mib():.1f} MiB")
    for name, value in abuse(gw, ids[0]).items():
        print(f"[round {number}] abuse {name}: {value}")
    print(f"[round {number}] gateway alive after abuse: {gw.process.poll() is None}")
    for child in children:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(60)
    wait_for(lambda: gw.open_count() == 0, 30)
    time.sleep(3.0)
    print(f"[round {number}] after disconnect: {gw.open_count()} open, RSS {gw.rss_mib():.1f} MiB")


def final_signed_get(gw: Gateway) -> str:
    from websockets.sync.client import connect

    with connect(gw.listening["wsUrl"], user_agent_header="final-check") as ws:
        wait_for(lambda: "final-check" in gw.ids, 10)
        live = exchange(gw.port, signed(gw.port, "GET", conn_path(gw.ids["final-check"])))
        ws.close()
    gone = exchange(gw.port, signed(gw.port, "GET", conn_path("nobodyHere00000=")))
    verdict = "correct" if (live, gone) == (200, 410) else "WRONG"
    return f"{verdict} (live client: {live}, unknown id: {gone})"


def stderr_lines(tmp: Path) -> int:
    """Lines on the gateway's stderr (aiohttp logs each malformed request with a traceback)."""
    return len((tmp / "stderr.txt").read_bytes().splitlines())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--client-mode", nargs=3, metavar=("URL", "PREFIX", "COUNT"))
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    if args.client_mode:
        url, prefix, count = args.client_mode
        asyncio.run(client_main(url, prefix, int(count)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="wsconn-abuse-"))
    (tmp / "config").write_text("")
    (tmp / "credentials").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WSCONN_"))}
    env.update(
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "credentials"),
        NO_PROXY="127.0.0.1,localhost",
    )
    gw = Gateway(env, tmp / "stderr.txt")
    time.sleep(1.0)
    baseline, peak, sampling = gw.rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peak.append(gw.rss_mib())

    threading.Thread(target=sample, daemon=True).start()
    print(f"gateway RSS baseline: {baseline:.1f} MiB")
    for number in range(1, args.rounds + 1):
        run_round(gw, number, args.clients, max(1, args.procs), env, tmp)
    sampling.set()
    print(f"RSS baseline / peak / after: {baseline:.1f} / {max(peak):.1f} / {gw.rss_mib():.1f} MiB")
    print(f"error events: {gw.counts.get('error', 0)}; gateway stderr lines: {stderr_lines(tmp)}")
    print(f"final signed GET: {final_signed_get(gw)}")
    print(f"gateway exit on Ctrl-C: {gw.stop()}")


if __name__ == "__main__":
    main()
