"""The call pipeline (wsconn.calls): one resolver, so `wsconn config` agrees with a call."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run
from tests.test_commands import client, received
from wsconn import errors

Wsconn = Callable[..., Run]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_config_fails_exactly_where_a_call_fails(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "moon-base-1x")
    endpoint = ["--endpoint", "http://127.0.0.1:9/dev"]
    call = wsconn("send", *endpoint, "--dry-run", "R0oXAdfD0kwCH6w=", "hi")
    config = wsconn("config", *endpoint)
    assert call.code == config.code == 8
    assert "moon-base-1x" in call.stderr and "moon-base-1x" in config.stderr
    assert f"{variable} 'moon-base-1x' is not an AWS region name" in config.stderr


def test_config_and_dry_run_report_the_same_resolution(
    wsconn: Wsconn, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (hermetic_env / "config").write_text("[profile ops]\nregion = eu-north-1\n")
    monkeypatch.setenv("AWS_PROFILE", "ops")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    endpoint = ["--endpoint", "http://127.0.0.1:9/dev"]
    config = json.loads(wsconn("config", *endpoint, "-o", "json").stdout)
    planned = json.loads(wsconn("status", *endpoint, "x=", "--dry-run", "-o", "json").stdout)
    for key in ("endpoint", "endpointSource", "region", "regionSource", "credentialSource"):
        assert config[key] == planned[key], key
    assert config["region"] == "eu-north-1" and config["regionSource"] == "profile ops"
    # An execute-api host names its region, for both.
    host = ["--endpoint", "https://abc123.execute-api.ap-south-1.amazonaws.com/prod"]
    config = json.loads(wsconn("config", *host, "-o", "json").stdout)
    planned = json.loads(wsconn("status", *host, "x=", "--dry-run", "-o", "json").stdout)
    assert config["regionSource"] == planned["regionSource"]
    assert config["region"] == planned["region"] == "ap-south-1"


def test_config_check_is_a_preflight_step(wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = ["--endpoint", "http://127.0.0.1:9/dev"]
    fine = wsconn("config", "--check", *endpoint)
    assert fine.code == 0 and fine.stdout == "" and fine.stderr == ""
    no_endpoint = wsconn("config", "--check")
    assert no_endpoint.code == 8 and no_endpoint.stdout == ""
    assert no_endpoint.stderr.startswith("wsconn: configuration: no endpoint: pass --endpoint")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    no_keys = wsconn("config", "--check", *endpoint, "-o", "json")
    assert no_keys.code == 8
    assert json.loads(no_keys.stdout)["problems"] == [no_keys.stderr.strip()[len("wsconn: ") :]]
    assert "no AWS credentials found" in no_keys.stderr


def test_config_help_lists_only_options_that_do_something_there(wsconn: Wsconn) -> None:
    text = wsconn("config", "--help").stdout.split("Options:")[1].split("Exit codes:")[0]
    for useless in ("--verbose", "--dry-run", "--quiet", "--ids"):
        assert useless not in text
    for useful in ("--endpoint", "--profile", "--region", "--ca-bundle", "--check", "--output"):
        assert useful in text


def test_the_outcome_word_belongs_to_the_error_class(
    wsconn: Wsconn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    run = wsconn(
        "send", "--endpoint", "http://127.0.0.1:9/dev", "-o", "json", "R0oXAdfD0kwCH6w=", "x"
    )
    assert run.code == 8
    body = json.loads(run.stdout)
    assert body["outcome"] == "config-error"  # NoCredentials is a configuration error
    assert body["connectionId"] == "R0oXAdfD0kwCH6w="  # the id given is kept
    assert not hasattr(errors, "OUTCOMES")  # no second table


def test_every_outcome_word_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `outcome` |"))
    documented = set(re.findall(r"`([a-z-]+)`", row)) - {"outcome"}

    def classes(cls: type[errors.WsconnError]) -> list[type[errors.WsconnError]]:
        return [cls] + [sub for child in cls.__subclasses__() for sub in classes(child)]

    words = {cls.outcome for cls in classes(errors.WsconnError)} - {"not-attempted"}
    assert words <= documented, words - documented


def test_a_config_error_keeps_the_connection_id(wsconn: Wsconn) -> None:
    run = wsconn("status", "-o", "json", "R0oXAdfD0kwCH6w%3D")  # no endpoint anywhere
    assert run.code == 8
    body = json.loads(run.stdout)
    assert body["outcome"] == "config-error" and body["connectionId"] == "R0oXAdfD0kwCH6w="


def test_verbose_works_with_ids(gateway: Any, wsconn: Wsconn, tmp_path: Path) -> None:
    with client(gateway) as (ws, cid):
        ids = tmp_path / "ids.txt"
        ids.write_text(f"{cid}\nAAAAAAAAAAAAAAA=\n")
        run = wsconn("send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "v", "-v")
        assert run.code == 3, run.stderr
        assert received(ws) == "v"
        err = run.stderr
        assert f"* endpoint {gateway.endpoint} (from --endpoint)" in err
        assert f"> POST {gateway.endpoint}/@connections/" in err
        assert "< 200 OK" in err and "< 410 Gone" in err
        assert "* canonical request:" in err
