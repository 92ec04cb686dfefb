"""The Lambda Invoke API client: ``lambda:NAME@URL`` targets (sam local start-lambda, the RIE, ...)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import aiohttp

from wsconn.local.app import Function, LambdaTarget
from wsconn.local.backends.workers import Outcome, describe_error


def invocation_url(target: LambdaTarget) -> str:
    """``{url}/2015-03-31/functions/{name}/invocations``, the name percent-encoded as botocore does."""
    return f"{target.url}/2015-03-31/functions/{quote(target.name, safe='')}/invocations"


async def invoke_lambda(
    session: aiohttp.ClientSession, function: Function, event: object
) -> tuple[Outcome, str | None]:
    """POST ``event`` as a RequestResponse invocation; the outcome and the server's request id.

    A function error (``X-Amz-Function-Error``) is an error with its ``{errorMessage, errorType}``
    body as the payload; an answer other than 2xx, or no answer, is an error too.
    """
    assert isinstance(function.target, LambdaTarget)
    url = invocation_url(function.target)
    timeout = function.timeout
    try:
        async with session.post(
            url,
            data=json.dumps(event).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Amz-Invocation-Type": "RequestResponse",
            },
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            body = await response.read()
            request_id = response.headers.get("x-amzn-RequestId")
            status = response.status
            function_error = response.headers.get("X-Amz-Function-Error")
            error_type = response.headers.get("x-amzn-ErrorType", "")
    except asyncio.TimeoutError:
        return Outcome(None, f"Task timed out after {timeout:.2f} seconds", timed_out=True), None
    except aiohttp.ClientError as exc:
        return Outcome(None, f"cannot reach {url}: {exc}"), None
    payload = _decode(body)
    if not 200 <= status < 300:
        message = (
            payload.get("message") or payload.get("Message") if isinstance(payload, dict) else None
        )
        reason = error_type.split(":")[0] or f"HTTP {status}"
        text = f"Invoke API answered {status} {reason}" + (f": {message}" if message else "")
        return Outcome(payload, text), request_id
    if function_error:
        error = payload if isinstance(payload, dict) else {"errorMessage": str(payload)}
        return Outcome(payload, describe_error(error)), request_id
    return Outcome(payload, None), request_id


def _decode(body: bytes) -> object | None:
    """The answer's JSON value; a body that is not JSON (a raw payload) as text."""
    if not body:
        return None
    try:
        value: object = json.loads(body)
        return value
    except ValueError:
        return body.decode("utf-8", "replace")
