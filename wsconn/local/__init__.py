"""``wsconn local``: a faithful local API Gateway WebSocket endpoint with its ``@connections`` API.

Importing this package imports aiohttp (the ``local`` extra); the core CLI imports it only inside
the ``local`` and ``demo`` commands.
"""

from __future__ import annotations

from wsconn.local.credentials import LocalCredentials, resolve_credentials
from wsconn.local.events import Event, EventSink, json_lines_sink
from wsconn.local.gateway import GatewayConfig, GatewayThread, LocalGateway, serve

__all__ = [
    "Event",
    "EventSink",
    "GatewayConfig",
    "GatewayThread",
    "LocalCredentials",
    "LocalGateway",
    "json_lines_sink",
    "resolve_credentials",
    "serve",
]
