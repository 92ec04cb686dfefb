"""Docs, help and completions that cannot drift from the code; a start-up kept lean."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from wsconn.cli import cli
from wsconn.errors import EXIT_CODE_MEANINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
HEAVY = ("botocore", "requests", "rich", "aiohttp", "urllib3")


def test_readme_exit_code_table_is_the_code_table() -> None:
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", README, flags=re.MULTILINE)
    assert {int(code): text for code, text in rows} == {
        int(code): text for code, text in EXIT_CODE_MEANINGS.items()
    }


def test_help_shows_the_exit_code_table(wsconn: object) -> None:
    from tests.conftest import run_wsconn

    for args in (["--help"], ["send", "--help"], ["status", "--help"], ["disconnect", "--help"]):
        run = run_wsconn(*args)
        assert run.code == 0
        for code, text in EXIT_CODE_MEANINGS.items():
            assert f"{int(code):>3}  {text}" in run.stdout, (args, code)


def test_every_command_and_option_is_documented() -> None:
    assert isinstance(cli, click.Group)
    for name, command in cli.commands.items():
        assert f"### wsconn {name}" in README, name
        assert name == "demo" or "Examples" in (command.help or ""), name
        for param in command.params:
            if isinstance(param, click.Option):
                assert any(opt in README for opt in param.opts), (name, param.opts)


def test_quick_start_is_two_lines_and_the_second_is_what_ci_runs() -> None:
    section = README.split("## Quick start", 1)[1]
    block = section.split("```", 2)[1].strip("\n").splitlines()
    assert len(block) == 2
    assert "wsconn demo" in block[0]
    assert block[1] == "bash .ci/test"
    assert "exec bash .ci/test" in (ROOT / ".ci" / "run").read_text()


def test_changelog_has_unreleased() -> None:
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_current(shell: str) -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "wsconn"],
        env={**os.environ, "_WSCONN_COMPLETE": f"{shell}_source"},
        capture_output=True,
        check=True,
    ).stdout.decode()
    # python -m wsconn names itself "wsconn" too (prog_name), so the scripts are identical.
    assert generated == (ROOT / "completions" / f"wsconn.{shell}").read_text()


def _imported_modules(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wsconn", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.decode().splitlines()
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}


@pytest.mark.parametrize(
    "args", [["--help"], ["send", "--help"], ["status", "--help"], ["local", "--help"]]
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    heavy = {m for m in _imported_modules(args) if m.split(".")[0] in HEAVY}
    assert not heavy


def test_completion_imports_nothing_heavy() -> None:
    env = {"_WSCONN_COMPLETE": "bash_complete", "COMP_WORDS": "wsconn se", "COMP_CWORD": "1"}
    modules = _imported_modules([], env)
    assert "click" in modules  # the run really happened
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


def test_completion_completes_subcommands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wsconn"],
        env={
            **os.environ,
            "_WSCONN_COMPLETE": "bash_complete",
            "COMP_WORDS": "wsconn s",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        check=True,
    )
    assert done.stdout.decode().split() == ["plain,send", "plain,status"]
