"""wsconn: the command line for Amazon API Gateway's WebSocket @connections API."""

__version__ = "0.1.0"
