"""Events the local gateway reports, as plain JSON-able dicts, and a JSON-lines sink for them.

Every event has ``"event"`` (its name) and ``"time"`` (ISO 8601 UTC, milliseconds, ``Z``). None ever
carries the secret key or the session token.

- ``listening``: endpoint, wsUrl, stage, region, auth, accessKeyId, credentialSource,
  connectAuth ("none"|"iam"), routes (the route keys), callbackEndpoint (the HTTPS endpoint
  handlers call back on, null without a backend) (once; first, but for the
  ``log`` lines handlers print while they load)
- ``connect``: connectionId, sourceIp, userAgent, query (dict of query parameters, last value wins)
- ``message``: connectionId, type ("text"|"binary"), bytes, data (text only, first 200 characters)
- ``post``: connectionId, bytes, frame ("text"|"binary"), status
- ``get``: connectionId, status
- ``disconnect``: connectionId, code, reason, by ("client"|"api"|"idle-timeout"|"max-duration"|
  "gateway"|"protocol")
- ``gone``: method, path (raw request target), connectionId, status (410), errorType, reason
  (a management request for a connection that is not open: closed, never existed, or dropped)
- ``denied``: method, path (raw request target), status, errorType, reason (a short why): every
  other refusal (403, 400, 413, and injected faults)
- ``invoke``: route (a route key, or "authorizer"), target, requestId (the event's), statusCode
  (the answer's, 502 for a failure, null when unreadable), durationMs, error (one line, or null)
- ``log``: route, stream ("stdout"|"stderr"), line: one line a handler printed
- ``error``: method, path, error (an unexpected failure answered with 500; the server keeps running)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TextIO

from wsconn.timestamps import iso_ms, utc_now

Event = dict[str, object]
EventSink = Callable[[Event], None]


def make_event(name: str, **fields: object) -> Event:
    """An event dict: name and time first, then ``fields`` in order."""
    return {"event": name, "time": iso_ms(utc_now()), **fields}


def json_lines_sink(stream: TextIO) -> EventSink:
    """A sink writing each event as one compact JSON line, flushed at once (scripts tail it)."""

    def write(event: Event) -> None:
        stream.write(json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n")
        stream.flush()

    return write
