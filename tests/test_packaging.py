"""What users install and where the project says it runs: the wheel's contents, the README as the
package index shows it, and the Python versions CI tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wsconn import __version__

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = (ROOT / "pyproject.toml").read_text()
# Where each completion script lands under the install prefix (sys.prefix, a venv, ~/.local).
COMPLETIONS = {
    "bash": "share/bash-completion/completions/wsconn",
    "zsh": "share/zsh/site-functions/_wsconn",
    "fish": "share/fish/vendor_completions.d/wsconn.fish",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel built from this tree by the project's build backend (hatchling, no network)."""
    out = tmp_path_factory.mktemp("dist")
    code = "import sys\nfrom hatchling.build import build_wheel\nprint(build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, check=True
    )
    name = done.stdout.decode().strip().splitlines()[-1]
    return zipfile.ZipFile(out / name)


def test_the_repository_and_the_wheel_carry_the_mit_license(wheel: zipfile.ZipFile) -> None:
    license_text = (ROOT / "LICENSE").read_bytes()
    assert license_text.startswith(b"MIT License\n")
    assert 'license = "MIT"' in PYPROJECT
    dist_info = f"wsconn-{__version__}.dist-info"
    assert wheel.read(f"{dist_info}/licenses/LICENSE") == license_text
    assert "License-Expression: MIT" in wheel.read(f"{dist_info}/METADATA").decode()


@pytest.mark.parametrize("shell", sorted(COMPLETIONS))
def test_the_wheel_installs_each_completion_script_where_its_shell_looks(
    wheel: zipfile.ZipFile, shell: str
) -> None:
    data = f"wsconn-{__version__}.data/data/"
    assert (
        wheel.read(data + COMPLETIONS[shell])
        == (ROOT / "completions" / f"wsconn.{shell}").read_bytes()
    )
    assert COMPLETIONS[shell] in (ROOT / "README.md").read_text()  # and the README says where


def test_readme_links_work_on_the_package_index() -> None:
    """The package index shows README.md without the repository: no relative links or anchors."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)", readme) + re.findall(
        r"^\[[^]]+\]:\s*(\S+)", readme, re.M
    )
    targets += re.findall(r"""(?:src|href)=["']([^"']+)""", readme)
    assert [t for t in targets if not t.startswith("https://")] == []


def test_the_oldest_classifier_is_requires_python() -> None:
    versions = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', PYPROJECT)
    assert versions and min(versions, key=lambda v: int(v.split(".")[1])) == "3.10"
    assert 'requires-python = ">=3.10"' in PYPROJECT


def _fake_python(path: Path, version: str | None) -> None:
    """An executable answering the version probe with ``version`` (None: fails, as a pyenv shim
    for a version that is not selected)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f"echo {version}" if version else "echo 'pyenv: not selected' >&2; exit 127"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _ci_copy(tmp_path: Path) -> Path:
    """.ci/test and pyproject.toml in a tree without venvs."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "test", repo / ".ci" / "test")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    return repo


@pytest.fixture
def machine(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of .ci/test and an environment with fake Pythons: 3.10 on PATH (and as python3),
    3.11 only in pyenv (its PATH shim fails), a python3.12 that is really 3.9, no 3.13."""
    bin_dir, pyenv = tmp_path / "bin", tmp_path / "pyenv"
    _fake_python(bin_dir / "python3", "3.10")
    _fake_python(bin_dir / "python3.10", "3.10")
    _fake_python(bin_dir / "python3.11", None)
    _fake_python(pyenv / "versions" / "3.11.7" / "bin" / "python3.11", "3.11")
    _fake_python(bin_dir / "python3.12", "3.9")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYENV_ROOT": str(pyenv), "HOME": str(tmp_path)}
    return _ci_copy(tmp_path), env


def _ci(
    machine: tuple[Path, dict[str, str]], *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    repo, base = machine
    return subprocess.run(
        ["bash", str(repo / ".ci" / "test"), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_ci_finds_each_supported_python_on_path_or_in_pyenv(
    machine: tuple[Path, dict[str, str]],
) -> None:
    pyenv_311 = f"{machine[1]['PYENV_ROOT']}/versions/3.11.7/bin/python3.11"
    done = _ci(machine, "--list-pythons")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "3.10 .venv python3",  # the default python3 gets .venv
        f"3.11 .venv-3.11 {pyenv_311}",
        "3.12 not-found",
        "3.13 not-found",
    ]
    assert not (machine[0] / ".venv").exists()  # listing creates nothing
    limited = _ci(machine, "--list-pythons", WSCONN_PYTHONS="3.11")
    assert limited.stdout.splitlines() == [f"3.11 .venv-3.11 {pyenv_311}"]


@pytest.mark.parametrize(
    ("pythons", "code", "words"),
    [
        ("3.9", 2, "WSCONN_PYTHONS names 3.9; supported: 3.10 3.11 3.12 3.13"),
        ("3.10,3.13", 1, "WSCONN_PYTHONS asks for Python 3.13, not found on this machine"),
    ],
)
def test_ci_refuses_what_it_cannot_run_before_running_anything(
    machine: tuple[Path, dict[str, str]], pythons: str, code: int, words: str
) -> None:
    done = _ci(machine, WSCONN_PYTHONS=pythons)
    assert (done.returncode, done.stderr.strip()) == (code, "wsconn: " + words)
    assert not (machine[0] / ".venv").exists()
