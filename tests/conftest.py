"""Hermetic test environment: fake keys, temp AWS config files, loopback only.

Nothing here may reach AWS or the instance metadata address: the autouse fixture below
clears every AWS_* variable and points the config files at empty temp files.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

FAKE_ACCESS_KEY = "AKIAWSCONNTEST000001"
FAKE_SECRET_KEY = "wsconnTESTsecret/DoNotLeak+0123456789abcd"
FAKE_SESSION_TOKEN = "wsconnTESTsessionTokenDoNotLeak//0123456789=="


def default_sigint() -> None:
    """``preexec_fn`` for a child a test will Ctrl-C: SIGINT back to its default in the child.

    A shell starts a background job (``pytest &``, some CI runners) with SIGINT ignored, and
    children inherit that: without this, Ctrl-C tests would fail however right the code is.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Every test runs with fake keys, empty temp config files and no way to reach AWS."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "WSCONN_")) or name in {"FORCE_COLOR", "NO_COLOR"}:
            monkeypatch.delenv(name, raising=False)
    aws_dir = tmp_path / "aws"
    aws_dir.mkdir()
    (aws_dir / "config").write_text("")
    (aws_dir / "credentials").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_dir / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_dir / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    # Loopback traffic must never go through a proxy.
    for proxy in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield aws_dir


@dataclass
class Run:
    """One `wsconn` invocation as a user makes it: exit code and the two streams."""

    code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def run_wsconn(*args: str, input: bytes | str | None = None) -> Run:
    """Call wsconn's console-script entry point (our exit mapping included) in-process."""
    from wsconn.cli import main

    runner = CliRunner()
    with runner.isolation(input=input) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        stdout_bytes = out.getvalue()
        stderr = err.getvalue().decode("utf-8", "replace")
    return Run(code, stdout_bytes.decode("utf-8", "replace"), stderr, stdout_bytes)


@pytest.fixture
def wsconn() -> Callable[..., Run]:
    return run_wsconn


@pytest.fixture
def gateway() -> Iterator[Any]:
    """The project's own local gateway on a free loopback port, trusting the env's fake keys."""
    from wsconn.local.gateway import GatewayConfig, GatewayThread

    events: list[dict[str, object]] = []
    thread = GatewayThread(GatewayConfig(port=0), on_event=events.append)
    thread.start()
    thread.events = events  # type: ignore[attr-defined]
    try:
        yield thread
    finally:
        thread.stop()
