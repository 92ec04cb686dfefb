"""The command line itself: -q, JSON for usage errors, --unique, completion, help, the house rules."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run
from tests.test_commands import client, received
from wsconn.cli import cli

Wsconn = Callable[..., Run]
ROOT = Path(__file__).resolve().parent.parent
GONE_ID = "AAAAAAAAAAAAAAA="


# -- -q / --quiet ---------------------------------------------------------------------------


def test_quiet_leaves_only_the_one_line_error(gateway: Any, wsconn: Wsconn) -> None:
    loud = wsconn("status", "--endpoint", gateway.endpoint, GONE_ID)
    quiet = wsconn("status", "--endpoint", gateway.endpoint, GONE_ID, "-q")
    assert loud.code == quiet.code == 3
    first = f"wsconn: gone: {GONE_ID} is not connected (410 GoneException)\n"
    assert loud.stderr.startswith(first) and len(loud.stderr.splitlines()) > 1  # explained
    assert quiet.stderr == first


def test_quiet_works_before_the_subcommand_and_with_ids(
    gateway: Any, wsconn: Wsconn, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(GONE_ID + "\n")
    run = wsconn("-q", "status", "--endpoint", gateway.endpoint, GONE_ID)
    assert run.code == 3 and len(run.stderr.splitlines()) == 1
    bulk = wsconn("status", "--endpoint", gateway.endpoint, "--ids", str(ids), "-q")
    assert bulk.code == 3
    assert bulk.stderr.splitlines()[0].startswith("wsconn: 0 connected, 1 gone")


# -- -o json: one object on stdout, whatever fails -----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--endpont", "x", "R0oXAdfD0kwCH6w=", "m"],  # Click's own parsing error
        ["status", "--interval", "5", "R0oXAdfD0kwCH6w="],  # ours, in the command
        ["send", "--stage", "", "R0oXAdfD0kwCH6w=", "m"],  # ours, in an option's callback
        ["status", "--gone-out", "g.txt", "R0oXAdfD0kwCH6w="],
    ],
)
def test_json_output_for_usage_errors_is_one_object(wsconn: Wsconn, args: list[str]) -> None:
    for json_flag in (["-o", "json"], ["--output=json"]):
        run = wsconn(*args, *json_flag)
        assert run.code == 2, run.stderr
        (line,) = run.stdout.splitlines()
        body = json.loads(line)
        assert body["outcome"] == "usage-error" and body["httpStatus"] is None
        assert body["message"] in run.stderr
        assert len(run.stderr.splitlines()) == 1


# -- --unique compares connections -----------------------------------------------------------


def test_unique_compares_connection_ids_not_lines(
    gateway: Any, wsconn: Wsconn, tmp_path: Path
) -> None:
    with client(gateway) as (ws, cid):
        ids = tmp_path / "ids.txt"
        encoded = cid.replace("=", "%3D")
        ids.write_text(
            f"{cid}\n{gateway.endpoint}/@connections/{cid}\n {encoded}\n"
            f"{gateway.endpoint}/%40connections/{encoded}\n"
        )
        run = wsconn("send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "once")
        assert run.code == 0, run.stderr
        assert run.stdout.count("\tsent\t") == 4  # without --unique, four lines are four sends
        for _ in range(4):
            assert received(ws) == "once"
        run = wsconn(
            "send", "--endpoint", gateway.endpoint, "--ids", str(ids), "-d", "u", "--unique"
        )
        assert run.code == 0, run.stderr
        assert run.stdout.count("\tsent\t") == 1
        assert received(ws) == "u"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)


# -- completion -----------------------------------------------------------------------------


def _complete(words: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "wsconn"],
        env={
            **os.environ,
            **(env or {}),
            "_WSCONN_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        },
        capture_output=True,
        check=True,
        cwd=cwd,
    )
    return done.stdout.decode().split()


@pytest.mark.parametrize(
    "words",
    [
        "wsconn send --ids ",
        "wsconn status --ids i",
        "wsconn send --gone-out ",
        "wsconn disconnect --failed-out ",
        "wsconn status --ca-bundle ",
        "wsconn config --ca-bundle ",
    ],
)
def test_completion_offers_files_for_file_options(words: str) -> None:
    assert _complete(words)[0].startswith("file,")


def test_completion_offers_files_after_data_at(tmp_path: Path) -> None:
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    (tmp_path / "message.json").write_text("{}")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "avatar.png").write_bytes(b"")
    assert _complete("wsconn send -d @", cwd=tmp_path) == ["plain,@message.json", "plain,@more/"]
    assert _complete("wsconn send -d @more/a", cwd=tmp_path) == ["plain,@more/avatar.png"]
    assert _complete("wsconn send --data plain", cwd=tmp_path) == []


def test_completion_offers_profile_names(hermetic_env: Path) -> None:
    (hermetic_env / "config").write_text(
        "[default]\nregion = us-east-1\n[profile prod]\nregion = eu-west-1\n"
        "[profile prod-eu]\n[sso-session corp]\nsso_region = us-east-1\n"
    )
    (hermetic_env / "credentials").write_text("[ci]\naws_access_key_id = x\n")
    assert _complete("wsconn send --profile ") == [
        "plain,ci",
        "plain,default",
        "plain,prod",
        "plain,prod-eu",
    ]
    assert _complete("wsconn --profile pro") == ["plain,prod", "plain,prod-eu"]


def test_profile_completion_stays_lean() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wsconn"],
        env={
            **os.environ,
            "_WSCONN_COMPLETE": "bash_complete",
            "COMP_WORDS": "wsconn send --profile ",
            "COMP_CWORD": "3",
        },
        capture_output=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.decode().splitlines()}
    assert "configparser" in imported  # it ran
    assert not {m for m in imported if m.split(".")[0] in {"botocore", "requests", "rich"}}


# -- help -----------------------------------------------------------------------------------

_CLICK_METAVARS = re.compile(
    r"^\s+(?:-\w, )?--[\w-]+ (?:TEXT|INTEGER|FLOAT|[A-Z]+ RANGE|FILENAME)\b"
)


@pytest.mark.parametrize("command", ["", *sorted(cli.commands)])  # type: ignore[attr-defined]
def test_help_metavars_say_what_a_value_is(wsconn: Wsconn, command: str) -> None:
    run = wsconn(*([command] if command else []), "--help")
    assert run.code == 0
    vague = [line for line in run.stdout.splitlines() if _CLICK_METAVARS.match(line)]
    assert not vague


# -- the house ------------------------------------------------------------------------------


def _calls_to(name: str, path: Path) -> list[int]:
    """Lines of a module that use attribute `name`."""
    tree = ast.parse(path.read_text())
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == name
    ]


def test_one_place_decides_what_is_a_terminal() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "wsconn").rglob("*.py"))
        if (lines := _calls_to("isatty", path))
    }
    assert set(found) == {"wsconn/streams.py"}, found


def test_fanout_does_not_import_render() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, wsconn.fanout; print('wsconn.render' in sys.modules)"],
        capture_output=True,
        check=True,
    )
    assert done.stdout.strip() == b"False"


def _constants(path: Path) -> list[object]:
    """The literal values in a module's code (docstrings, which explain, left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and id(node) not in docstrings
        and isinstance(node.value, (int, float, str)) and not isinstance(node.value, bool)
    ]  # fmt: skip


@pytest.mark.parametrize("literal", ["131072", "600.0", "7200", "128 KiB"])
def test_each_limit_is_written_once(literal: str) -> None:
    holders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "wsconn").rglob("*.py"))
        if any(
            literal in (value if isinstance(value, str) else repr(value))
            for value in _constants(path)
        )
    ]
    assert holders == ["wsconn/limits.py"], holders


def test_duration_formatting_lives_in_limits() -> None:
    defined = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "wsconn").rglob("*.py"))
        if any(
            isinstance(node, ast.FunctionDef) and node.name == "format_duration"
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert defined == ["wsconn/limits.py"]


def test_limits_imports_neither_click_nor_rich() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, wsconn.limits, wsconn.timestamps, wsconn.streams; "
         "print(sorted(m for m in ('click', 'rich') if m in sys.modules))"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    assert done.stdout.strip() == b"[]"
