"""Docs, help and completions that cannot drift from the code; a start-up kept lean."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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

    for args in (
        ["--help"],
        ["send", "--help"],
        ["status", "--help"],
        ["disconnect", "--help"],
        ["listen", "--help"],
    ):
        run = run_wsconn(*args)
        assert run.code == 0
        for code, text in EXIT_CODE_MEANINGS.items():
            assert f"{int(code):>3}  {text}" in run.stdout, (args, code)


def undocumented(readme: str) -> list[tuple[str, str]]:
    """(command, option) pairs whose exact spelling the README never shows: `-d` is not found
    inside `--dry-run`, nor `--data` inside `--data-file`."""
    assert isinstance(cli, click.Group)
    missing = []
    for name, command in [("wsconn", cli), *cli.commands.items()]:
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in param.opts + param.secondary_opts:
                    if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", readme):
                        missing.append((name, opt))
    return missing


def test_every_command_and_option_is_documented() -> None:
    assert isinstance(cli, click.Group)
    for name, command in cli.commands.items():
        assert f"### wsconn {name}" in README, name
        assert name == "demo" or "Examples" in (command.help or ""), name
    assert undocumented(README) == []


def test_the_docs_check_reads_exact_option_names() -> None:
    without_data = README.replace("--data", "--d-a-t-a")
    assert ("send", "--data") in undocumented(without_data)  # `-d` and `--dry-run` do not count


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
    "args",
    [
        ["--help"],
        ["send", "--help"],
        ["status", "--help"],
        ["local", "--help"],
        ["listen", "--help"],
    ],
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    heavy = {m for m in _imported_modules(args) if m.split(".")[0] in HEAVY}
    assert not heavy


def test_completion_imports_nothing_heavy() -> None:
    env = {"_WSCONN_COMPLETE": "bash_complete", "COMP_WORDS": "wsconn se", "COMP_CWORD": "1"}
    modules = _imported_modules([], env)
    assert "click" in modules  # the run really happened
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize("config", ["empty", "missing"])
def test_send_reads_no_botocore_when_the_env_has_everything(
    gateway: Any, tmp_path: Path, config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys and region in the environment, no config to read: a send imports no botocore."""
    if config == "missing":
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-config"))
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wsconn", "send", "--endpoint",
         gateway.endpoint, "AAAAAAAAAAAAAAA=", "x"],
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]  # the call went out: 410, gone
    lines = done.stderr.decode().splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    assert not {m for m in modules if m.split(".")[0] == "botocore"}


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


@pytest.mark.parametrize(
    "option", ["--template", "--env-vars", "--env-file", "--code-dir", "--python"]
)
def test_local_options_that_take_a_path_complete_file_names(option: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wsconn"],
        env={
            **os.environ,
            "_WSCONN_COMPLETE": "bash_complete",
            "COMP_WORDS": f"wsconn local {option} temp",
            "COMP_CWORD": "3",
        },
        capture_output=True,
        check=True,
    )
    assert done.stdout.decode().split() == ["file,temp"]  # the shell completes the file name


# -- every command line shown to a user runs as shown ------------------------------------------

_OPERATIONS = {"send", "status", "disconnect"}
_SEPARATORS = {"|", "&&", "||", ";"}


def _code_lines(text: str) -> list[str]:
    """The lines of the README's fenced code blocks."""
    blocks = text.split("```")[1::2]
    return [line for block in blocks for line in block.splitlines()]


def test_every_python_module_the_readme_runs_is_installed_by_the_package() -> None:
    """`python -m X` in a pasteable block must work after `pip install "wsconn[local]"` (and the
    app's own boto3): a module of the test extra only, such as websockets, would not be there."""
    from importlib.metadata import requires

    installed = {"wsconn", "boto3"} | {
        re.split(r"[^A-Za-z0-9_-]", dep, maxsplit=1)[0].lower().replace("-", "_")
        for dep in requires("wsconn") or []
        if "extra ==" not in dep or re.search(r"extra == .local.", dep)
    }
    assert "aiohttp" in installed and "websockets" not in installed
    for line in _code_lines(README):
        for module in re.findall(r"python[0-9.]* -m ([A-Za-z_][\w.]*)", line):
            top = module.split(".")[0]
            assert top in sys.stdlib_module_names or top in installed, line


def _help_lines() -> list[str]:
    assert isinstance(cli, click.Group)
    texts = [cli.epilog or ""] + [
        cli.commands[name].help or "" for name in ("send", "status", "disconnect", "config")
    ]
    return [line.strip() for text in texts for line in text.splitlines()]


def _invocations(line: str) -> list[list[str]]:
    """The `wsconn ...` commands in a shell line (pipelines and && lists split), comments dropped."""
    import shlex

    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command[:1] == ["wsconn"]]


def _exports(text: str) -> dict[str, str]:
    found = re.findall(r"^export (\w+)=(\S+)$", "\n".join(_code_lines(text)), flags=re.MULTILINE)
    return dict(found)


def _examples() -> list[tuple[str, list[str]]]:
    examples = []
    for where, lines in (("README", _code_lines(README)), ("--help", _help_lines())):
        for line in lines:
            for command in _invocations(line):
                if command[1] in _OPERATIONS | {"config"}:
                    examples.append((f"{where}: {line}", command))
    return examples


def test_there_are_examples_to_check() -> None:
    assert len(_examples()) >= 25


@pytest.mark.parametrize("where,command", _examples(), ids=[where for where, _ in _examples()])
def test_every_example_runs_as_shown(
    where: str,
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    hermetic_env: Path,
) -> None:
    """In a shell with AWS credentials and only the variables the README says to export (no
    region), each example resolves and signs (sent as --dry-run: nothing leaves the machine)."""
    from tests.conftest import run_wsconn

    monkeypatch.delenv("AWS_DEFAULT_REGION")
    for name, value in _exports(README).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    args = [os.path.expandvars(arg) for arg in command[1:]]
    assert not [arg for arg in args if "$" in arg and "$default" not in arg], args  # all set
    for i, arg in enumerate(args):  # the user's own files and profiles exist
        if arg.startswith("@") and len(arg) > 1 and arg != "@-":
            (tmp_path / arg[1:]).write_bytes(b'{"type":"hello"}')
        if i and args[i - 1] == "--ids" and arg != "-":
            (tmp_path / arg).write_text("R0oXAdfD0kwCH6w=\n")
        if i and args[i - 1] == "--profile":
            (hermetic_env / "config").write_text(f"[profile {arg}]\nregion = eu-west-1\n")
            (hermetic_env / "credentials").write_text(
                f"[{arg}]\naws_access_key_id = AKIAEXAMPLE000000001\naws_secret_access_key = x\n"
            )
    if args[0] in _OPERATIONS and "--dry-run" not in args:
        args.append("--dry-run")
    run = run_wsconn(*args, input=b"R0oXAdfD0kwCH6w=\n")
    assert run.code == 0, (where, run.stderr)


def test_every_command_wsconn_demo_shows_runs_with_what_it_says_to_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shlex

    from tests.conftest import run_wsconn

    done = subprocess.run(
        [sys.executable, "-m", "wsconn", "demo"], capture_output=True, timeout=120, check=True
    )
    text = done.stdout.decode()
    export = re.search(r"export (AWS_ACCESS_KEY_ID=\S+ AWS_SECRET_ACCESS_KEY=\S+ AWS_\S+)", text)
    assert export is not None, text
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for assignment in shlex.split(export.group(1)):
        name, value = assignment.split("=", 1)
        monkeypatch.setenv(name, value)
    commands = [
        command
        for line in text.splitlines()
        if line.startswith("$ ")
        for command in _invocations(line[2:])
    ]
    assert len(commands) >= 4
    for command in commands:
        run = run_wsconn(*command[1:], "--dry-run", input=b"x")  # the gateway is gone: sign only
        assert run.code == 0, (command, run.stderr)
