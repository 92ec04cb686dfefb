"""What a backend is configured from: target text, env files, the interpreter, a handler's environment."""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from wsconn.errors import ConfigError
from wsconn.local.app import Function, LambdaTarget, PythonTarget, Target

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_PYTHON_TARGET = re.compile(rf"({_IDENTIFIER}(?:\.{_IDENTIFIER})*):({_IDENTIFIER})")
_TARGET_FORMS = "MODULE:FUNCTION (e.g. app:handler) or lambda:NAME@URL"

# Variables a handler inherits from wsconn's own environment; everything else (AWS_PROFILE, a
# PYTHONPATH, the shell's clutter) stays out, as it would on Lambda. The run's env and the
# function's env are layered on top.
_INHERITED = {
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TMPDIR",
    "TEMP",
    "TMP",
    "VIRTUAL_ENV",
    "SYSTEMROOT",
    "COMSPEC",
    "PATHEXT",
    "WINDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "AWS_EC2_METADATA_DISABLED",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
}


def parse_target(text: str) -> Target:
    """``MODULE:FUNCTION`` → PythonTarget, ``lambda:NAME@URL`` → LambdaTarget; else ConfigError."""
    if text.startswith("lambda:"):
        name, at, url = text[len("lambda:") :].partition("@")
        if not name or not at:
            raise ConfigError(
                f"target {text!r}: a Lambda target is lambda:NAME@URL "
                "(e.g. lambda:SendFn@http://127.0.0.1:3001)"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"target {text!r}: {url!r} is not an http:// or https:// URL")
        return LambdaTarget(name=name, url=url.rstrip("/"))
    match = _PYTHON_TARGET.fullmatch(text)
    if match is None:
        hint = ""
        if ":" not in text and "." in text:
            module, _, function = text.rpartition(".")
            hint = f" (did you mean {module}:{function}?)"
        raise ConfigError(f"target {text!r}: expected {_TARGET_FORMS}{hint}")
    return PythonTarget(module=match.group(1), function=match.group(2))


def parse_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables of a dotenv file (``KEY=VALUE``, ``export``, quotes, comments, ``${VAR}``).

    Parsed by python-dotenv, so a handler sees the values its own ``load_dotenv()`` would. A bare
    ``KEY`` takes wsconn's own value of KEY (as ``docker --env-file`` does), or is left out.
    """
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"--env-file {os.fspath(path)}: {reason}") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.string.strip()
            raise ConfigError(
                f"--env-file {os.fspath(path)}, line {binding.original.line}: "
                f"not KEY=VALUE: {line[:60]!r}"
            )
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    result: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            value = os.environ.get(key)
        if value is not None:
            result[key] = value
    return result


def default_python() -> str:
    """The interpreter that runs Python handlers by default: the active virtualenv's (or conda
    environment's), else the one wsconn runs on."""
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = os.environ.get(variable)
        if not prefix:
            continue
        for candidate in (Path(prefix) / "bin" / "python", Path(prefix) / "Scripts" / "python.exe"):
            if candidate.is_file():
                return str(candidate)
    return sys.executable


def handler_environment(
    function: Function,
    *,
    code_dir: Path,
    region: str,
    run_env: Mapping[str, str],
) -> dict[str, str]:
    """A Python handler's environment: a clean base, Lambda's variables, the run's, the function's.

    Later layers win: ``run_env`` (the gateway's credentials, CA bundle, endpoint) over Lambda's
    variables, and the function's own env (``--env``, a template's Variables) over everything.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key in _INHERITED or key.startswith("LC_")
    }
    target = function.target
    handler = f"{target.module}.{target.function}" if isinstance(target, PythonTarget) else ""
    env.update(
        {
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "_HANDLER": handler,
            "TZ": ":UTC",
        }
    )
    if function.runtime:
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{function.runtime}"
    env.update(run_env)
    env.update(function.env)
    _bypass_proxy_for_loopback(env)
    return env


def _bypass_proxy_for_loopback(env: dict[str, str]) -> None:
    """With a proxy configured, callbacks to the local gateway must still go straight to it."""
    if not any(
        env.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    ):
        return
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [host for host in env.get(name, "").split(",") if host.strip()]
        hosts += [host for host in ("127.0.0.1", "localhost") if host not in hosts]
        env[name] = ",".join(hosts)
