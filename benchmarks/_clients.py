"""Live WebSocket clients for benchmarks/fanout.py: connect N, count what each receives.

Usage: `python benchmarks/_clients.py WS_URL N`. Client i connects to `WS_URL?client=i`, so the
gateway's connect event tells which connection id is whose. Prints `{"ready": N}` once all are
connected; then, for each line on stdin, one JSON line `{"counts": [...], "unexpected": U,
"closed": C}` (messages received per client, messages other than "hello", clients closed). Stdin
closing ends it.
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

MESSAGE = "hello"


class Clients:
    def __init__(self, count: int) -> None:
        self.counts = [0] * count
        self.unexpected = 0
        self.closed = 0

    async def drain(self, index: int, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                if message == MESSAGE:
                    self.counts[index] += 1
                else:
                    self.unexpected += 1
        except ConnectionClosed:
            pass
        self.closed += 1

    def report(self) -> str:
        state = {"counts": self.counts, "unexpected": self.unexpected, "closed": self.closed}
        return json.dumps(state)


async def main(ws_url: str, count: int) -> None:
    clients = Clients(count)
    sockets = [await connect(f"{ws_url}?client={i}", max_queue=None) for i in range(count)]
    drains = [asyncio.create_task(clients.drain(i, ws)) for i, ws in enumerate(sockets)]
    print(json.dumps({"ready": count}), flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(clients.report(), flush=True)
    for ws in sockets:
        await ws.close()
    await asyncio.wait(drains, timeout=5.0)


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    except KeyboardInterrupt:
        sys.exit(130)
