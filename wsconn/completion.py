"""Shell completion for values: files after `-d @`, profile names for `--profile`.

Completion runs on every Tab press: standard library and click only (no botocore, no rich).
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from click.shell_completion import CompletionItem


def data_value(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`-d @FILE`: the files and folders that complete what follows the '@'."""
    if not incomplete.startswith("@"):
        return []
    typed = os.path.expanduser(incomplete[1:])
    folder, prefix = os.path.split(typed)
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:
        return []
    items = []
    for name in names:
        if not name.startswith(prefix) or (name.startswith(".") and not prefix.startswith(".")):
            continue
        path = os.path.join(folder, name)
        shown = incomplete[: len(incomplete) - len(prefix)] + name  # as typed, '~' and all
        items.append(CompletionItem(shown + ("/" if os.path.isdir(path) else "")))
    return items


def profile_names(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`--profile`: the profiles named in the AWS config and credentials files."""
    import configparser  # here: only a Tab after --profile pays for it

    names: set[str] = set()
    files = (
        (os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config", True),
        (os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", False),
    )
    for path, is_config in files:
        parser = configparser.RawConfigParser(default_section="\x00none")
        try:
            parser.read(Path(path).expanduser(), encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            continue
        for section in parser.sections():
            if is_config and section.startswith("profile "):
                names.add(section[len("profile ") :].strip())
            elif is_config and section != "default":
                continue  # [sso-session x], [services x]: not profiles
            else:
                names.add(section.strip())
    return [CompletionItem(name) for name in sorted(names) if name.startswith(incomplete)]
