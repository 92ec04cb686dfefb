"""How the gateway's events read on a terminal (wsconn.local.console.describe, a pure function)."""

from __future__ import annotations

from wsconn.local.console import describe


def test_a_denied_connect_without_an_error_type_shows_no_none() -> None:
    # What the gateway emits when a $connect handler raises: 502, and no AWS error type.
    event = {
        "event": "denied",
        "method": "GET",
        "path": "/dev",
        "status": 502,
        "errorType": None,
        "reason": "$connect failed: RuntimeError: boom",
    }
    assert describe(event) == ("denied", "GET /dev -> 502: $connect failed: RuntimeError: boom")


def test_a_denied_request_with_an_error_type_names_it() -> None:
    event = {
        "event": "denied",
        "method": "POST",
        "path": "/prod/@connections/x",
        "status": 403,
        "errorType": "ForbiddenException",
        "reason": "no such stage",
    }
    assert (
        describe(event)[1] == "POST /prod/@connections/x -> 403 ForbiddenException: no such stage"
    )
