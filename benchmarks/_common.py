"""Helpers the benchmarks share: paths, fake keys, the hermetic environment, processes."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
WSCONN = VENV / "bin" / "wsconn"
NODE_PEERS = REPO / "benchmarks" / ".node-peers"  # npm installs the JS SDK here (git ignores it)
JS_SDK = "@aws-sdk/client-apigatewaymanagementapi"
ACCESS_KEY = "AKIABENCHMARK0000001"
SECRET_KEY = "benchmark/fake/secret/key/0000000000000"
LOOPBACK = "127.0.0.1,localhost"


class BenchError(Exception):
    """A run that failed: the benchmark stops rather than time a broken command."""


def hermetic_env(home: Path) -> dict[str, str]:
    """A minimal environment: fake keys, empty AWS files, no metadata, loopback only."""
    (home / "config").write_text("")
    (home / "credentials").write_text("")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_PAGER": "",
        "NO_PROXY": LOOPBACK,
        "no_proxy": LOOPBACK,
    }


def ensure_js_sdk() -> tuple[str, str]:
    """npm-install the JS SDK into benchmarks/.node-peers unless it is there.

    Returns node's version and the SDK's. The machine's own node runs it; npm is needed once.
    """
    if not shutil.which("node"):
        raise BenchError("node not found: the JS SDK peer needs Node.js (and npm, once)")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    package = NODE_PEERS / "node_modules" / JS_SDK / "package.json"
    if not package.exists():
        if not shutil.which("npm"):
            raise BenchError("npm not found: the JS SDK peer needs Node.js and npm")
        print(f"setting up benchmarks/.node-peers (npm install {JS_SDK}) ...")
        NODE_PEERS.mkdir(exist_ok=True)
        (NODE_PEERS / "package.json").write_text('{"private": true}\n')
        npm = ["npm", "install", "--no-audit", "--no-fund", "--silent", JS_SDK]
        subprocess.run(npm, cwd=NODE_PEERS, check=True, timeout=600)
    return node.stdout.strip(), str(json.loads(package.read_text())["version"])


def node_env(env: dict[str, str]) -> dict[str, str]:
    """`env` plus where the benchmark's JS scripts find the SDK, and the region the JS SDK reads
    (AWS_REGION, as Lambda sets it; it ignores AWS_DEFAULT_REGION)."""
    modules = str(NODE_PEERS / "node_modules")
    return env | {"WSCONN_BENCH_NODE_MODULES": modules, "AWS_REGION": env["AWS_DEFAULT_REGION"]}


def require_repo_venv(parser: argparse.ArgumentParser) -> None:
    """Stop with a usage error unless this is the repo's .venv python."""
    if Path(sys.prefix).resolve() != VENV.resolve():
        parser.error(f"run with the repo's venv: {VENV / 'bin' / 'python'}")


@dataclass
class Run:
    """One whole process: wall and CPU seconds, peak RSS (KB), exit code, stdout, stderr's end."""

    wall_s: float
    cpu_s: float
    maxrss_kb: int
    code: int
    stdout: str
    stderr: str


def measure(cmd: list[str], env: dict[str, str], workdir: Path, timeout: float) -> Run:
    """Run `cmd` to the end (killed after `timeout` s); its rusage from os.wait4: CPU, peak RSS."""
    out_path, err_path = workdir / "run.out", workdir / "run.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdin=DEVNULL, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall_s = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
    cpu_s = usage.ru_utime + usage.ru_stime
    stderr = err_path.read_text()[-800:].strip()
    return Run(wall_s, cpu_s, usage.ru_maxrss, proc.returncode, out_path.read_text(), stderr)


def stop(proc: subprocess.Popen[str]) -> None:
    """End a helper process we started: close its stdin (or terminate it), then kill."""
    if proc.poll() is not None:
        return
    if proc.stdin is not None:
        proc.stdin.close()
    else:
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
