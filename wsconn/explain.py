"""Why a call failed: the lines shown under the one-line error, for a human at 2 a.m.

Pure functions of the error and of what was sent: no I/O, no terminal. Every 403 type the
service gives, clock skew, and the three meanings of 410 get an explanation that names the
likely cause and the fix.
"""

from __future__ import annotations

import difflib
import json
import re
from datetime import datetime, timezone
from urllib.parse import urlsplit

from wsconn.endpoint import EXECUTE_API_HOST
from wsconn.errors import SentRequest, WsconnError, redact

SKEW_ALLOWED = 300.0  # seconds: SigV4 refuses requests more than 5 minutes off
_EXPECTED = re.compile(
    r"The Canonical String for this request should have been\n'(?P<canonical>.*?)'\n\n"
    r"The String-to-Sign should have been\n'(?P<sts>.*?)'",
    re.DOTALL,
)
_ACCESS_DENIED = re.compile(
    r"User: (?P<caller>\S+) is not authorized to perform: (?P<action>\S+) on resource: (?P<resource>\S+)"
)
_REFRESH = {
    "env": "export fresh AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN "
    "(e.g. from `aws configure export-credentials`)",
    "sso": "run `aws sso login` for the profile",
    "sso-legacy": "run `aws sso login` for the profile",
    "assume-role": "the role session comes from the profile's source_profile: check those keys",
    "assume-role-with-web-identity": "check the web identity token file the profile names",
    "shared-credentials-file": "update the keys in the shared credentials file (`aws configure`)",
    "config-file": "update the keys in the config file (`aws configure`)",
    "custom-process": "run the profile's credential_process by hand and check what it prints",
    "container-role": "container credentials refresh themselves: retry, and check the task role",
    "iam-role": "instance credentials refresh themselves: retry, and check the instance role",
}


def explain(error: WsconnError, now: datetime | None = None) -> list[str]:
    """The explanation lines for an error (empty when the one line says it all)."""
    sent = error.sent
    lines: list[str] = []
    if error.http_status == 410:
        lines += [
            "410 means one of three things:",
            "  - the client disconnected (or was disconnected) earlier;",
            "  - the id never existed on this API and stage (check the id and the endpoint);",
            "  - the connection is still in its $connect handler: it is not open until that "
            "handler returns, so posting from inside $connect always answers 410.",
        ]
    elif error.http_status == 403 and sent is not None:
        lines += _forbidden(error, sent)
    if sent is not None and error.http_status is not None:
        lines += _clock(sent, now)
    return lines


def _forbidden(error: WsconnError, sent: SentRequest) -> list[str]:
    detail = error.detail or ""
    kind = error.error_type
    refresh = _REFRESH.get(sent.credential_source, "refresh the credentials")
    who = f"access key {sent.access_key} (credentials from {sent.credential_source})"
    if (
        sent.access_key.startswith("ASIA")
        and not sent.has_token
        and kind not in ("AccessDeniedException", "ForbiddenException")
    ):
        # STS issues ASIA keys with a session token; without it AWS knows neither.
        return [
            f"Access key {sent.access_key} (credentials from {sent.credential_source}) is a "
            "temporary key (ASIA...) sent without its session token: "
            "set AWS_SESSION_TOKEN (or the profile's aws_session_token) to the token issued "
            "with it."
        ]
    if kind == "InvalidSignatureException":
        return _signature(detail, sent, who)
    if kind == "AccessDeniedException":
        return _access_denied(detail, sent)
    if kind == "ForbiddenException":
        return _no_route(sent)
    if kind == "ExpiredTokenException":
        return [f"The session token of {who} has expired: {refresh}."]
    if kind == "UnrecognizedClientException":
        if sent.has_token:
            return [f"The session token or access key of {who} is not valid: {refresh}."]
        return [f"AWS does not know {who}: deleted, deactivated or mistyped? {refresh}."]
    if kind == "MissingAuthenticationTokenException":
        return [
            "The service saw no signature, or has no such route (API Gateway answers this for "
            f"unknown paths too): check the URL {sent.url}"
        ]
    return []


def _no_route(sent: SentRequest) -> list[str]:
    """Where the request went, and what of the URL to check (the one line names the causes)."""
    parts = urlsplit(sent.url)
    host = parts.netloc
    base = parts.path.split("/@connections", 1)[0]
    lines = [f"URL used: {sent.url}", f"Endpoint from: {sent.endpoint_source}"]
    if not base:
        lines.append(
            f"The URL has no stage: it goes first in the path ({parts.scheme}://{host}/{{stage}}), "
            "unless the host is a custom domain whose API mapping has an empty base path."
        )
    elif EXECUTE_API_HOST.match(host.rsplit(":", 1)[0]):
        api_id, stage = host.split(".", 1)[0], base.strip("/").split("/", 1)[0]
        lines.append(
            f"Check that API {api_id} has a stage named {stage!r} (the first path segment), "
            "and that its default endpoint is enabled."
        )
    else:
        lines.append(
            f"A custom domain's base path mapping selects the stage itself: if {base} ends with "
            "the stage, leave the stage out."
        )
    return lines


def _signature(detail: str, sent: SentRequest, who: str) -> list[str]:
    if "scoped to a valid region" in detail:
        return [
            f"Wrong region: wsconn signed for {sent.region} (from {sent.region_source}); "
            "the API is in another region: pass --region with the API's region."
        ]
    if "scoped to correct service" in detail:
        return [
            "The signature names another service: wsconn signs for execute-api, so something "
            "between (a proxy?) re-signed the request."
        ]
    if detail.startswith(("Signature expired", "Signature not yet current")):
        return [
            "The request's time is more than 5 minutes from the service's (see the clock below)."
        ]
    match = _EXPECTED.search(detail)
    if match is None:
        return [f"The service refused the signature made with {who}."]
    # Compared and shown with session tokens hidden (AWS echoes the token in its canonical string).
    theirs_canonical, theirs_sts = redact(match.group("canonical")), match.group("sts")
    ours_canonical = redact(sent.canonical_request)
    lines: list[str] = []
    ours_lines = ours_canonical.splitlines()
    theirs_lines = theirs_canonical.splitlines()
    if theirs_canonical == ours_canonical and theirs_sts == sent.string_to_sign:
        lines.append(
            f"Wrong secret key: the service built the same canonical request and string-to-sign, "
            f"so the secret used does not belong to {who}."
        )
    elif ours_lines[1:2] != theirs_lines[1:2]:
        lines.append(
            "Path encoding: the service canonicalised the path differently from what wsconn "
            "signed, so something between (a proxy, a load balancer) rewrote the path."
        )
    elif theirs_canonical != ours_canonical:
        lines.append("A signed part of the request changed on its way (headers or body): a proxy?")
    else:
        lines.append("The string-to-sign differs: the date, region or service in the scope.")
    for name, ours, theirs in (
        ("canonical request", ours_canonical, theirs_canonical),
        ("string-to-sign", sent.string_to_sign, theirs_sts),
    ):
        diff = list(
            difflib.unified_diff(
                ours.splitlines(),
                theirs.splitlines(),
                f"{name} wsconn signed",
                f"{name} the service expected",
                lineterm="",
                n=0,
            )
        )
        lines += [f"  {line}" for line in diff] or [f"  ({name}: identical)"]
    return lines


def _access_denied(detail: str, sent: SentRequest) -> list[str]:
    match = _ACCESS_DENIED.search(detail)
    if match:
        resource = match.group("resource")
        lines = [f"IAM refused {match.group('caller')}", f"on {resource}."]
        allow = re.sub(r"/@connections/.*$", "/@connections/*", resource)
    else:
        lines = ["IAM refused the caller."]
        allow = sent.resource_pattern
    statement = {"Effect": "Allow", "Action": "execute-api:ManageConnections", "Resource": allow}
    lines.append("A policy statement that allows it:")
    lines += ["  " + line for line in json.dumps(statement, indent=2).splitlines()]
    return lines


def _clock(sent: SentRequest, now: datetime | None) -> list[str]:
    if sent.server_date is None:
        return []
    here = sent.local_date or now or datetime.now(timezone.utc)
    skew = (here - sent.server_date).total_seconds()
    if abs(skew) < 60:  # the Date header has whole seconds; small differences are noise
        return []
    direction = "ahead of" if skew > 0 else "behind"
    verdict = "more than" if abs(skew) > SKEW_ALLOWED else "within"
    return [
        f"Clock: this machine is {_duration(abs(skew))} {direction} the service "
        f"(its Date: {sent.server_date:%Y-%m-%d %H:%M:%S} UTC), {verdict} the 5 minutes SigV4 "
        "allows: set the clock right (NTP, e.g. `timedatectl set-ntp true`)."
    ]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
