"""Hermetic test environment: fake keys, temp AWS config files, loopback only.

Nothing here may reach AWS or the instance metadata address: the autouse fixture below
clears every AWS_* variable and points the config files at empty temp files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKE_ACCESS_KEY = "AKIAWSCONNTEST000001"
FAKE_SECRET_KEY = "wsconnTESTsecret/DoNotLeak+0123456789abcd"
FAKE_SESSION_TOKEN = "wsconnTESTsessionTokenDoNotLeak//0123456789=="


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
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield aws_dir
