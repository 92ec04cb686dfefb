"""Bad input, case by case: a one-line message, its documented exit code, no traceback, and
nothing sent. Each case runs against a recording server, which must see no request."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Run, run_wsconn
from tests.scripted_server import ScriptedServer, Step, scripted

USAGE, CONFIG, TOO_LARGE = 2, 8, 6


@dataclass
class Case:
    name: str
    args: list[str]  # {ep} is the recording server's endpoint, {tmp} a temp folder
    code: int
    words: str  # in the one-line message
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    stdin: bytes | None = None
    config: str | None = None  # the AWS config file's text
    setup: Callable[[Path], None] | None = None


def _fifo(tmp: Path) -> None:
    os.mkfifo(tmp / "fifo")


def _ids(text: bytes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / "ids.txt").write_bytes(text)


def _file(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(data)


ID = "R0oXAdfD0kwCH6w="
CASES = [
    # connection ids
    Case("empty id", ["send", "--endpoint", "{ep}", "", "x"], USAGE, "connection id is empty"),
    Case("blank id", ["send", "--endpoint", "{ep}", "   ", "x"], USAGE, "connection id is empty"),
    Case("non-ASCII id", ["status", "--endpoint", "{ep}", "ñañá="], USAGE, "holds 'ñ'"),
    Case("control character", ["status", "--endpoint", "{ep}", "a\x07b="], USAGE, "holds '\\x07'"),
    Case("tab in id", ["status", "--endpoint", "{ep}", "a\tb="], USAGE, "holds '\\t', which no id can hold: ids hold no tabs"),
    Case("newline in id", ["disconnect", "--endpoint", "{ep}", "a\nb"], USAGE, "holds '\\n'"),
    Case("jq's null (a missing field)", ["send", "--endpoint", "{ep}", "null", "x"], USAGE, "the connection id is 'null': the JSON it was read from has none there (jq -r prints null"),
    Case("over-long id", ["status", "--endpoint", "{ep}", "a" * 300], USAGE, "300 characters"),
    Case("non-ASCII in a URL", ["status", "{ep}/@connections/%C3%B1="], USAGE, "holds 'ñ'"),
    Case("empty id in a URL", ["status", "{ep}/@connections/"], USAGE, "no '/@connections/{id}'"),
    Case("slash in a URL id", ["status", "{ep}/@connections/a/b"], USAGE, "must be written %2F"),
    # URLs
    Case("no host", ["send", "https:///prod/@connections/x", "m"], USAGE, "has no host"),
    Case("wrong scheme", ["send", "--endpoint", "ftp://h/prod", ID, "m"], USAGE, "must start with https://"),
    Case("user-info", ["send", "--endpoint", "https://u:p@h/prod", ID, "m"], USAGE, "user name or password"),
    Case("query", ["send", "--endpoint", "https://h/prod?stage=x", ID, "m"], USAGE, "query string"),
    Case("fragment", ["send", "--endpoint", "https://h/prod#x", ID, "m"], USAGE, "query string or fragment"),
    Case("broken IPv6", ["send", "--endpoint", "http://[::1/dev", ID, "m"], USAGE, "not a valid URL"),
    Case("port out of range", ["send", "--endpoint", "http://127.0.0.1:70000/d", ID, "m"], USAGE, "not a valid URL"),
    Case("port not a number", ["send", "--endpoint", "http://127.0.0.1:x/d", ID, "m"], USAGE, "not a valid URL"),
    Case("execute-api host without api-id", ["send", "--endpoint", "https://execute-api.us-east-1.amazonaws.com/prod", ID, "m"], USAGE, "has no api-id"),
    Case("execute-api URL without a stage", ["send", "https://abc123.execute-api.us-east-1.amazonaws.com/@connections/x=", "m"], USAGE, "has no stage"),
    Case("same file for --ids and --failed-out", ["send", "--endpoint", "{ep}", "--ids", "{tmp}/ids.txt", "-d", "x", "--failed-out", "{tmp}/ids.txt"], USAGE, "is the --ids file"),
    Case("endpoint naming a connection", ["send", "--endpoint", "{ep}/@connections/x", ID, "m"], USAGE, "names a connection"),
    Case("bad URL in the environment", ["send", ID, "m"], CONFIG, "WSCONN_ENDPOINT 'ftp://x/y' must start", env={"WSCONN_ENDPOINT": "ftp://x/y"}),
    Case("no endpoint at all", ["send", ID, "m"], CONFIG, "no endpoint"),
    Case("api-id without stage", ["send", "--api-id", "abc123", ID, "m"], USAGE, "--api-id and --stage go together"),
    Case("bad api-id", ["send", "--api-id", "ABC!", "--stage", "p", ID, "m"], USAGE, "is not an API id"),
    # regions
    Case("unknown region", ["send", "--endpoint", "{ep}", "--region", "moon", ID, "m"], USAGE, "not an AWS region name"),
    Case("region with spaces", ["send", "--endpoint", "{ep}", "--region", "us east 1", ID, "m"], USAGE, "not an AWS region name"),
    Case("bad region in the environment", ["send", "--endpoint", "{ep}", ID, "m"], CONFIG, "AWS_DEFAULT_REGION 'Mars-1'", env={"AWS_DEFAULT_REGION": "Mars-1"}),
    Case("no region for a loopback host", ["send", "--endpoint", "{ep}", ID, "m"], CONFIG, "pass --region", unset=("AWS_DEFAULT_REGION",)),
    # messages
    Case("missing file", ["send", "--endpoint", "{ep}", "-d", "@{tmp}/missing", ID], CONFIG, "No such file"),
    Case("a directory", ["send", "--endpoint", "{ep}", "-d", "@{tmp}", ID], CONFIG, "it is a directory"),
    Case("a FIFO nobody writes", ["send", "--endpoint", "{ep}", "--timeout", "0.5", "-d", "@{tmp}/fifo", ID], CONFIG, "nothing came through the pipe", setup=_fifo),
    Case("message too large", ["send", "--endpoint", "{ep}", ID, "-d", "@{tmp}/big"], TOO_LARGE, "131072", setup=_file("big", b"x" * 131073)),
    Case("stdin too large", ["send", "--endpoint", "{ep}", ID], TOO_LARGE, "131072", stdin=b"y" * 200_000),
    Case("MESSAGE and -d", ["send", "--endpoint", "{ep}", ID, "m", "-d", "n"], USAGE, "not both"),
    # options
    Case("--ids and an id", ["send", "--endpoint", "{ep}", ID, "--ids", "{tmp}/ids.txt", "-d", "x"], USAGE, "not both"),
    Case("--ids send without -d", ["send", "--endpoint", "{ep}", "--ids", "{tmp}/ids.txt"], USAGE, "with -d"),
    Case("-j 0", ["send", "--endpoint", "{ep}", "--ids", "{tmp}/ids.txt", "-d", "x", "-j", "0"], USAGE, "0 is not in the range"),
    Case("negative --rate", ["send", "--endpoint", "{ep}", "--ids", "{tmp}/ids.txt", "-d", "x", "--rate", "-5"], USAGE, "--rate"),
    Case("--timeout 0", ["send", "--endpoint", "{ep}", "--timeout", "0", ID, "m"], USAGE, "--timeout"),
    Case("--retries 99", ["send", "--endpoint", "{ep}", "--retries", "99", ID, "m"], USAGE, "--retries"),
    Case("-o yaml", ["status", "--endpoint", "{ep}", "-o", "yaml", ID], USAGE, "'yaml' is not one of"),
    Case("unknown option", ["send", "--endpont", "{ep}", ID, "m"], USAGE, "No such option"),
    Case("--region contradicting the host", ["send", "--dry-run", "--endpoint", "https://abc123.execute-api.us-east-1.amazonaws.com/prod", "--region", "eu-west-1", ID, "m"], USAGE, "--region eu-west-1 contradicts the endpoint's host abc123.execute-api.us-east-1.amazonaws.com, which is in us-east-1"),
    Case("--region contradicting a connection URL", ["status", "--dry-run", "--region", "eu-west-1", f"https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/{ID}"], USAGE, "contradicts"),
    Case("--stage '' (an unquoted $default)", ["send", "--api-id", "abc123", "--stage", "", ID, "m"], USAGE, "--stage is empty: an unquoted $default is expanded by the shell to nothing; quote it: --stage '$default'"),
    Case("--ids FILE and a message", ["send", "--endpoint", "{ep}", "--ids", "{tmp}/ids.txt", "hi"], USAGE, "with --ids, the message goes in -d: --ids {tmp}/ids.txt -d hi"),
    Case("an endpoint URL as CONNECTION", ["send", "{ep}", ID, "hi"], USAGE, "is an endpoint, not a connection: pass it with --endpoint"),
    Case("a wss endpoint as CONNECTION", ["status", "wss://abc123.execute-api.us-east-1.amazonaws.com/prod", ID], USAGE, "is an endpoint, not a connection: pass it with --endpoint"),
    Case("an endpoint URL as CONNECTION, and a bad option value", ["send", "{ep}", ID, "hi", "--timeout", "0"], USAGE, "Invalid value for '--timeout'"),
    Case("--interval without --watch", ["status", "--endpoint", "{ep}", "--interval", "5", ID], USAGE, "--interval goes with --watch"),
    Case("-q and -v", ["send", "--endpoint", "{ep}", "-q", "-v", ID, "m"], USAGE, "-q/--quiet and -v/--verbose contradict"),
    Case("--watch with --ids", ["status", "--endpoint", "{ep}", "--watch", "--ids", "{tmp}/ids.txt"], USAGE, "--watch follows one connection"),
    Case("missing --ids file", ["status", "--endpoint", "{ep}", "--ids", "{tmp}/nope.txt"], CONFIG, "cannot read --ids"),
    Case("unwritable --gone-out", ["status", "--endpoint", "{ep}", "--ids", "{tmp}/ids.txt", "--gone-out", "{tmp}/no/such/dir/g.txt"], CONFIG, "cannot write"),
    Case("missing --ca-bundle", ["send", "--endpoint", "{ep}", "--ca-bundle", "{tmp}/ca.pem", ID, "m"], CONFIG, "is not a readable file"),
    # credentials and configuration
    Case("no credentials", ["send", "--endpoint", "{ep}", ID, "m"], CONFIG, "no AWS credentials found", unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
    Case("half the keys", ["send", "--endpoint", "{ep}", ID, "m"], CONFIG, "AWS_SECRET_ACCESS_KEY", unset=("AWS_SECRET_ACCESS_KEY",)),
    Case("profile that does not exist", ["send", "--endpoint", "{ep}", "--profile", "ghost", ID, "m"], CONFIG, "ghost"),
    Case("broken config file", ["send", "--endpoint", "{ep}", ID, "m"], CONFIG, "Unable to parse config file", unset=("AWS_DEFAULT_REGION",), config="[default\nregion = us-east-1\n"),
    Case("credential_process that fails", ["send", "--endpoint", "{ep}", "--profile", "p", ID, "m"], CONFIG, "custom-process", config=f"[profile p]\ncredential_process = {sys.executable} -c 'import sys; sys.exit(3)'\n"),
    Case("credential_process printing garbage", ["send", "--endpoint", "{ep}", "--profile", "p", ID, "m"], CONFIG, "print the JSON", config=f"[profile p]\ncredential_process = {sys.executable} -c 'print(42 * 7)'\n"),
    Case("expired credentials", ["send", "--endpoint", "{ep}", ID, "m"], CONFIG, "expired", env={"AWS_CREDENTIAL_EXPIRATION": "2020-01-01T00:00:00Z"}),
]  # fmt: skip


@pytest.fixture
def recorder() -> Iterator[ScriptedServer]:
    with scripted(Step(200)) as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(
    case: Case,
    recorder: ScriptedServer,
    tmp_path: Path,
    hermetic_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "ids.txt").write_text(ID + "\n")
    if case.setup:
        case.setup(tmp_path)
    if case.config is not None:
        (hermetic_env / "config").write_text(case.config)
    for name in case.unset:
        monkeypatch.delenv(name)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    args = [a.replace("{ep}", recorder.endpoint).replace("{tmp}", str(tmp_path)) for a in case.args]
    run = run_wsconn(*args, input=case.stdin)
    assert run.code == case.code, run.stderr
    assert case.words.replace("{tmp}", str(tmp_path)) in run.stderr, run.stderr
    assert run.stderr.startswith("wsconn: ") and run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert recorder.requests == []  # nothing was sent


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40


def test_closed_stdin(recorder: ScriptedServer) -> None:
    """`wsconn send ID <&-`: standard input closed, no message anywhere."""
    for args, words in (
        (["send", "--endpoint", recorder.endpoint, ID], "no message"),
        (["send", "--endpoint", recorder.endpoint, ID, "-d", "@-"], "standard input is closed"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "wsconn", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
            preexec_fn=lambda: os.close(0),
        )
        assert done.returncode == 2, done.stderr
        assert words.encode() in done.stderr and b"Traceback" not in done.stderr
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("name", "content", "outcomes"),
    [
        ("crlf and bom", b"\xef\xbb\xbfAAAAAAAAAAAAAAA=\r\nBBBBBBBBBBBBBBB=\r\n", {"sent": 2}),
        (
            "very long line",
            b"A" * 1_000_000 + b"\nBBBBBBBBBBBBBBB=\n",
            {"usage-error": 1, "sent": 1},
        ),
        ("binary junk", b"\x00\xff\xfe\x80junk\nBBBBBBBBBBBBBBB=\n", {"usage-error": 1, "sent": 1}),
    ],
)
def test_ids_files_with_odd_content(
    name: str, content: bytes, outcomes: dict[str, int], recorder: ScriptedServer, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(content)
    run: Run = run_wsconn(
        "send", "--endpoint", recorder.endpoint, "--ids", str(ids), "-d", "x", "-o", "json"
    )
    import json

    got: dict[str, int] = {}
    for line in run.stdout.splitlines():
        outcome = json.loads(line)["outcome"]
        got[outcome] = got.get(outcome, 0) + 1
    assert got == outcomes, run.stdout
    assert len(recorder.requests) == outcomes.get("sent", 0)  # bad lines sent nothing
    assert run.code == (2 if "usage-error" in outcomes else 0)
    assert "Traceback" not in run.stderr


def test_unreadable_file(recorder: ScriptedServer, tmp_path: Path) -> None:
    """A file this user may not read. Root reads anything, so as root wsconn runs without the
    capabilities that bypass file permissions (setpriv, from util-linux)."""
    secret = tmp_path / "unreadable.bin"
    secret.write_bytes(b"x")
    secret.chmod(0)
    command = [sys.executable, "-m", "wsconn", "send", "--endpoint", recorder.endpoint]
    command += ["-d", f"@{secret}", ID]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's read-anything capability"
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, timeout=30, check=False)
    assert done.returncode == CONFIG, done.stderr
    assert b"Permission denied" in done.stderr and b"Traceback" not in done.stderr
    assert recorder.requests == []
