"""A small Lambda Invoke API server on loopback (aiohttp, in its own thread), for ``lambda:`` targets.

It answers ``POST /2015-03-31/functions/{name}/invocations`` as Lambda, ``sam local start-lambda``
and the runtime interface emulator do: the function's JSON result with 200; a function error as 200
with ``X-Amz-Function-Error: Unhandled`` and ``{errorMessage, errorType, stackTrace}``; an unknown
function as 404 ``ResourceNotFoundException``. tests/test_backends.py checks these semantics with
botocore's own Lambda client, so wsconn's client is tested against answers botocore agrees with.
"""

from __future__ import annotations

import asyncio
import json
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[Any], Any]


@dataclass
class LambdaServer:
    functions: dict[str, Handler]
    port: int = 0
    received: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds before every answer (a slow function)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        event = json.loads(await request.read() or b"null")
        self.received.append((name, dict(request.headers), event))
        request_id = str(uuid.uuid4())
        self.request_ids.append(request_id)
        if self.delay:
            await asyncio.sleep(self.delay)
        function = self.functions.get(name)
        if function is None:
            return web.json_response(
                {"Type": "User", "Message": f"Function not found: {name}"},
                status=404,
                headers={
                    "x-amzn-ErrorType": "ResourceNotFoundException",
                    "x-amzn-RequestId": request_id,
                },
            )
        headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
        try:
            result = function(event)
        except Exception as exc:
            error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            headers["X-Amz-Function-Error"] = "Unhandled"
            return web.json_response(error, headers=headers)
        return web.json_response(result, headers=headers)


@contextmanager
def lambda_server(functions: dict[str, Handler], *, delay: float = 0.0) -> Iterator[LambdaServer]:
    """A running LambdaServer on 127.0.0.1 (a free port) until the block ends."""
    server = LambdaServer(functions, delay=delay)
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/2015-03-31/functions/{name}/invocations", server._invoke)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server.port = runner.addresses[0][1]
        started.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
