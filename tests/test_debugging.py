"""--dry-run, `wsconn config`, `status --watch`, -v, and a scan for secrets in every mode."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    FAKE_SESSION_TOKEN,
    Run,
    default_sigint,
)
from tests.test_commands import client, received
from wsconn.local.credentials import LocalCredentials
from wsconn.local.gateway import GatewayConfig, GatewayThread

Wsconn = Callable[..., Run]
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


@contextmanager
def token_gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A gateway that trusts the fake keys with a session token, and that token in the env."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_SESSION_TOKEN)
    creds = LocalCredentials(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)
    events: list[dict[str, object]] = []
    with GatewayThread(GatewayConfig(port=0, credentials=creds), on_event=events.append) as gw:
        gw.events = events
        yield gw


def run_shell(script: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", script], capture_output=True, timeout=30, check=False)


@needs_curl
def test_dry_run_prints_a_curl_that_really_works(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with token_gateway(monkeypatch) as gw, client(gw) as (ws, cid):
        before = len(gw.events)
        run = wsconn("send", "--endpoint", gw.endpoint, cid, "it's 'quoted' & $pecial", "--dry-run")
        assert run.code == 0, run.stderr
        assert len(gw.events) == before  # nothing was sent
        assert FAKE_SESSION_TOKEN not in run.stdout and "$AWS_SESSION_TOKEN" in run.stdout
        assert f"# credentials from env, access key {'*' * 16}0001" in run.stdout
        done = run_shell(run.stdout)  # comments and all, as pasted into a shell
        assert done.returncode == 0 and done.stdout == b"", done.stderr
        assert received(ws) == "it's 'quoted' & $pecial"


@needs_curl
def test_dry_run_binary_status_and_disconnect_curls(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with token_gateway(monkeypatch) as gw, client(gw, user_agent="dry/1") as (ws, cid):
        payload = b"\x00\xff%s\\n\x01"
        run = wsconn("send", "--endpoint", gw.endpoint, cid, "--dry-run", input=payload)
        assert run.code == 0
        assert run_shell(run.stdout).returncode == 0
        assert received(ws) == payload
        run = wsconn("status", "--endpoint", gw.endpoint, cid, "--dry-run", "-o", "json")
        described = json.loads(run.stdout)
        assert described["endpointSource"] == "--endpoint" and described["method"] == "GET"
        answer = run_shell(described["curl"])
        assert json.loads(answer.stdout)["identity"]["userAgent"] == "dry/1"
        run = wsconn("disconnect", "--endpoint", gw.endpoint, cid, "--dry-run")
        assert run_shell(run.stdout).returncode == 0
        assert any(e["event"] == "disconnect" and e["by"] == "api" for e in gw.events)


@needs_curl
def test_dry_run_piped_to_sh_fails_when_the_request_fails(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--dry-run ... | sh` is honest: a 4xx exits non-zero, with the status and the body shown."""
    with token_gateway(monkeypatch) as gw:
        gone = wsconn("send", "--endpoint", gw.endpoint, "R0oXAdfD0kwCH6w=", "hi", "--dry-run")
        done = run_shell(gone.stdout)
        assert done.returncode != 0
        assert b"HTTP 410" in done.stderr, done.stderr
        status = wsconn("status", "--endpoint", gw.endpoint, "R0oXAdfD0kwCH6w=", "--dry-run")
        assert run_shell(status.stdout).returncode != 0
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    events: list[dict[str, object]] = []
    config = GatewayConfig(port=0, deny_methods=("POST",))
    with GatewayThread(config, on_event=events.append) as gw:
        gw.events = events
        with client(gw) as (_ws, cid):
            denied = wsconn("send", "--endpoint", gw.endpoint, cid, "hi", "--dry-run")
            done = run_shell(denied.stdout)
            assert done.returncode != 0
            assert b"HTTP 403" in done.stderr, done.stderr
            assert b"is not authorized to perform: execute-api:ManageConnections" in done.stdout
            # A request that succeeds still exits 0, its status on stderr, stdout as the body.
            ok = run_shell(wsconn("status", "--endpoint", gw.endpoint, cid, "--dry-run").stdout)
            assert ok.returncode == 0 and b"HTTP 200" in ok.stderr, ok.stderr
            assert json.loads(ok.stdout)["connectedAt"].endswith("Z")


def test_dry_run_with_ids_prints_one_request_per_id(
    gateway: Any, wsconn: Wsconn, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("a=\nb=\n# c\n")
    run = wsconn("send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "x", "--dry-run")
    assert run.code == 0
    curls = [line for line in run.stdout.splitlines() if line.startswith("curl ")]
    assert len(curls) == 2 and "/@connections/a%3D" in curls[0] and "/@connections/b%3D" in curls[1]
    assert not [e for e in gateway.events if e["event"] in {"post", "gone", "denied"}]


def test_config_shows_every_setting_and_its_source(
    wsconn: Wsconn, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not checked until a call\n")
    (hermetic_env / "config").write_text(
        f"[profile ops]\nregion = eu-north-1\nca_bundle = {bundle}\n"
    )
    (hermetic_env / "credentials").write_text(
        "[ops]\naws_access_key_id = AKIAOPSPROFILE00WXYZ\naws_secret_access_key = s3cr3t\n"
    )
    monkeypatch.setenv("WSCONN_ENDPOINT", "https://ws.example.com/chat")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    run = wsconn("config", "--profile", "ops", "-o", "json", "--timeout", "3")
    assert run.code == 0, run.stderr
    assert run.stdout.count("\n") == 1  # one object, on one line
    report = json.loads(run.stdout)
    # One flat object: `jq -r .region` works, sources under their own keys, numbers as numbers.
    assert report == {
        "endpoint": "https://ws.example.com/chat",
        "endpointSource": "WSCONN_ENDPOINT",
        "region": "eu-north-1",
        "regionSource": "profile ops",
        "profile": "ops",
        "profileSource": "--profile",
        "accessKeyId": "****************WXYZ",
        "credentialSource": "shared-credentials-file",
        "sessionToken": None,
        "timeout": 3.0,
        "timeoutSource": "--timeout",
        "retries": 3,
        "retriesSource": "default",
        "caBundle": str(bundle),
        "caBundleSource": "profile ops",
        "problems": [],
    }
    assert not [key for key in report if " " in key]
    assert "s3cr3t" not in run.stdout + run.stderr


def test_config_text_reports_what_is_missing_and_exits_8(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    run = wsconn("config")
    assert run.code == 8
    lines = {line.split()[0]: line for line in run.stdout.splitlines()}
    assert "no endpoint" in lines["endpoint"]
    assert "access key  -  (configuration: no AWS credentials found" in lines["access"]
    assert "us-east-1  (AWS_DEFAULT_REGION)" in lines["region"]
    # What is missing, on stderr, one line each.
    assert run.stderr.splitlines()[0].startswith("wsconn: configuration: no endpoint")
    assert run.stderr.splitlines()[1].startswith("wsconn: configuration: no AWS credentials")


def test_watch_follows_until_gone_and_exits_3(wsconn: Wsconn) -> None:
    events: list[dict[str, object]] = []
    with GatewayThread(GatewayConfig(port=0, idle_timeout=1.5), on_event=events.append) as gw:
        gw.events = events  # type: ignore[attr-defined]
        with client(gw) as (ws, cid):
            ws.send("activity")  # lastActiveAt moves between polls
            run = wsconn(
                "status",
                "--watch",
                "--interval",
                "0.2",
                "--endpoint",
                gw.endpoint,
                cid,
                "-o",
                "json",
            )
    assert run.code == 3, run.stderr
    *polls, final = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(polls) >= 3 and [p["poll"] for p in polls] == list(range(1, len(polls) + 1))
    assert all(p["outcome"] == "connected" and "idleTimeoutInSeconds" in p for p in polls)
    assert final["outcome"] == "gone" and final["httpStatus"] == 410
    # One error line that says what was seen, and why it fits, not the three meanings of 410.
    first, *why = run.stderr.splitlines()
    assert first.startswith(f"wsconn: gone: {cid} went away: last seen connected at "), first
    assert "(410 GoneException)" in first
    assert why and "three things" not in run.stderr and "disconnected" in why[0]


def test_watch_on_an_id_that_never_answered_says_so(gateway: Any, wsconn: Wsconn) -> None:
    run = wsconn("status", "--watch", "--endpoint", gateway.endpoint, "AAAAAAAAAAAAAAA=")
    assert run.code == 3
    first = run.stderr.splitlines()[0]
    assert "never seen connected" in first and "went away" not in run.stderr
    assert "three things" in run.stderr  # then the three meanings of a 410 do apply
    assert run.stdout == ""  # no poll ever showed it connected


def test_watch_text_ends_with_a_gone_line(wsconn: Wsconn) -> None:
    events: list[dict[str, object]] = []
    with GatewayThread(GatewayConfig(port=0, idle_timeout=1.0), on_event=events.append) as gw:
        gw.events = events  # type: ignore[attr-defined]
        with client(gw) as (_ws, cid):
            run = wsconn("status", "--watch", "--interval", "0.2", "--endpoint", gw.endpoint, cid)
    assert run.code == 3
    *polls, last = run.stdout.splitlines()
    assert polls and all(" connected " in line for line in polls)
    assert "  gone (last seen connected at " in last


def test_watch_highlights_activity_changes(wsconn: Wsconn, gateway: Any) -> None:
    with client(gateway) as (ws, cid):
        process = subprocess.Popen(
            [sys.executable, "-m", "wsconn", "status", "--watch", "--interval", "0.2",
             "--endpoint", gateway.endpoint, cid, "-o", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
            preexec_fn=default_sigint,
        )  # fmt: skip
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        ws.send("now I am active")
        changed = None
        for _ in range(30):
            poll = json.loads(process.stdout.readline())
            if poll["activityChanged"]:
                changed = poll
                break
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        assert process.returncode == 130
        assert first["activityChanged"] is False
        assert changed is not None and changed["lastActiveAt"] > first["lastActiveAt"]
        assert b"Traceback" not in (process.stderr.read() if process.stderr else b"")


def test_verbose_shows_resolution_signing_and_timings(gateway: Any, wsconn: Wsconn) -> None:
    with client(gateway) as (ws, cid):
        run = wsconn("send", "--endpoint", gateway.endpoint, cid, "v", "-v")
        assert run.code == 0
        err = run.stderr
        assert (
            f"* endpoint {gateway.endpoint} (from --endpoint), region us-east-1 (from AWS_DEFAULT_REGION)"
            in err
        )
        assert "* canonical request:" in err and "* string to sign:" in err
        assert "*   AWS4-HMAC-SHA256" in err
        assert "* time: connect " in err and "first byte" in err and "total" in err
        assert received(ws) == "v"


def test_no_secret_in_any_output(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every command and mode, with a known secret key and session token: neither appears anywhere."""
    gone_out, failed_out = tmp_path / "gone.txt", tmp_path / "failed.txt"
    ids = tmp_path / "ids.txt"
    with token_gateway(monkeypatch) as gw, client(gw) as (_ws, cid):
        ids.write_text(f"{cid}\nAAAAAAAAAAAAAAA=\n")
        ep = ["--endpoint", gw.endpoint]
        runs = [
            wsconn("send", *ep, cid, "x", "-v"),
            wsconn("send", *ep, cid, "x", "-v", "-o", "json"),
            wsconn("status", *ep, cid, "-v"),
            wsconn("status", *ep, cid, "-o", "json"),
            wsconn("send", *ep, cid, "x", "--dry-run"),
            wsconn("status", *ep, cid, "--dry-run", "-o", "json"),
            wsconn("config", *ep),
            wsconn("config", *ep, "-o", "json"),
            wsconn("send", *ep, "--ids", str(ids), "-d", "x", "-o", "json",
                   "--gone-out", str(gone_out), "--failed-out", str(failed_out)),
            wsconn("status", *ep, "AAAAAAAAAAAAAAA=", "-v", "-o", "json"),  # 410 explained
            wsconn("send", "--endpoint", gw.endpoint.replace("/dev", "/prod"), cid, "x", "-v"),
            wsconn("disconnect", *ep, cid, "-v"),
        ]  # fmt: skip
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "WRONGsecret")  # a signature mismatch, -v
        runs.append(wsconn("send", *ep, cid, "x", "-v", "-o", "json"))
    assert [r.code for r in runs] == [0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 4, 0, 4]
    written = gone_out.read_text() + failed_out.read_text()
    for text in [written] + [r.stdout + r.stderr for r in runs]:
        assert FAKE_SECRET_KEY not in text
        assert FAKE_SESSION_TOKEN not in text
        assert "WRONGsecret" not in text
