"""wsconn's SigV4 signer agrees with botocore's, byte for byte, on the wire forms that bite."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from wsconn.auth import Credentials, Signer, canonical_uri

MOMENT = datetime(2026, 11, 29, 5, 10, 0, tzinfo=timezone.utc)


def botocore_authorization(
    method: str, url: str, body: bytes, creds: Credentials, region: str, host: str
) -> tuple[str, datetime]:
    """botocore's Authorization header for the request, and the moment it signed at."""
    request = AWSRequest(method=method, url=url, data=body, headers={"host": host})
    auth = SigV4Auth(
        BotoCredentials(creds.access_key, creds.secret_key, creds.token), "execute-api", region
    )
    auth.add_auth(request)
    moment = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc
    )
    return str(request.headers["Authorization"]), moment


@pytest.mark.parametrize(
    "token", [None, "FQoGZXIvYXdzEJr//session+token=", "FQoG  ZXIv   session  token="]
)
@pytest.mark.parametrize(
    ("method", "netloc", "path", "body"),
    [
        (
            "POST",
            "abc123.execute-api.us-east-1.amazonaws.com",
            "/prod/@connections/R0oXAdfD0kwCH6w%3D",
            b"hello",
        ),
        (
            "POST",
            "abc123.execute-api.us-east-1.amazonaws.com",
            "/prod/%40connections/R0oXAdfD0kwCH6w%3D",
            b"\x00\xff",
        ),
        ("GET", "127.0.0.1:8080", "/$default/@connections/a%2Bb%2Fc%3D", b""),
        ("DELETE", "ws.example.com", "/base/path/@connections/x_y-z.~", b""),
    ],
)
def test_same_signature_as_botocore(
    method: str, netloc: str, path: str, body: bytes, token: str | None
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token, "env")
    theirs, moment = botocore_authorization(
        method, f"http://{netloc}{path}", body, creds, "us-east-1", netloc
    )
    ours = Signer(creds, "us-east-1").sign(method, netloc, path, body, now=moment)
    assert ours.headers["authorization"] == theirs
    if token:
        assert ours.headers["x-amz-security-token"] == token
        assert "x-amz-security-token" in ours.headers["authorization"]


def test_canonical_uri_is_double_encoded_as_the_contract_says() -> None:
    assert (
        canonical_uri("/prod/%40connections/R0oXAdfD0kwCH6w%3D")
        == "/prod/%2540connections/R0oXAdfD0kwCH6w%253D"
    )
    assert (
        canonical_uri("/prod/@connections/R0oXAdfD0kwCH6w%3D")
        == "/prod/%40connections/R0oXAdfD0kwCH6w%253D"
    )


def test_signing_key_is_rederived_when_the_day_changes() -> None:
    creds = Credentials("AKIDEXAMPLE", "secret", None, "env")
    signer = Signer(creds, "eu-west-1")
    day1 = signer.sign("GET", "h", "/p", b"", now=MOMENT)
    day2 = signer.sign("GET", "h", "/p", b"", now=MOMENT.replace(day=30))
    fresh = Signer(creds, "eu-west-1").sign("GET", "h", "/p", b"", now=MOMENT.replace(day=30))
    assert day1.headers["authorization"] != day2.headers["authorization"]
    assert day2.headers["authorization"] == fresh.headers["authorization"]


def test_repr_never_shows_secrets() -> None:
    creds = Credentials("AKIDEXAMPLE", "TOPSECRETKEY", "SESSIONTOKEN", "env")
    assert "TOPSECRETKEY" not in repr(creds) and "SESSIONTOKEN" not in repr(creds)


@pytest.mark.parametrize(
    "path",
    ["/dev/@connections/..", "/dev/@connections/.", "/a/./b/../c/", "//dev//@connections/x", "/"],
)
def test_dot_segments_are_removed_as_botocore_does(path: str) -> None:
    from botocore.utils import normalize_url_path

    from wsconn.auth import remove_dot_segments

    assert (remove_dot_segments(path) or "/") == normalize_url_path(path)


@pytest.mark.parametrize(
    "token", [None, "FQoGZXIvYXdzEJr//session+token=", "FQoG  ZXIv   session  token="]
)
@pytest.mark.parametrize(
    ("method", "base", "body"),
    [
        ("POST", "/prod", b"hello"),
        ("GET", "", b""),
        ("DELETE", "/base/./path/../x", b""),
        ("POST", "//double", b"\x00\xff"),
    ],
)
@pytest.mark.parametrize("connection_id", ["R0oXAdfD0kwCH6w=", "a+b/c=", "x_y-z.~", ".", "..", "é"])
def test_the_fan_out_signer_signs_as_the_signer_does(
    method: str, base: str, body: bytes, connection_id: str, token: str | None
) -> None:
    from wsconn.auth import RequestSigner
    from wsconn.endpoint import encode_connection_id

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token, "env")
    signer = Signer(creds, "eu-west-1")
    prefix = f"{base}/@connections/"
    fan_out = RequestSigner(signer, method, "h.example:8443", prefix, body)
    encoded = encode_connection_id(connection_id)
    for moment in (MOMENT, MOMENT.replace(day=30, second=59)):  # the day's key follows the date
        expected = signer.sign(method, "h.example:8443", prefix + encoded, body, now=moment)
        amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        assert fan_out.authorization(encoded, amz_date) == expected.headers["authorization"]


def test_amz_date_is_now_in_sigv4_form() -> None:
    import time

    from wsconn.auth import amz_date

    before = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    stamp = amz_date()
    after = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    assert before <= stamp <= after
    assert len(stamp) == 16 and stamp[8] == "T" and stamp.endswith("Z")


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEJr//session+token="])
@pytest.mark.parametrize("query", ["", "name=ci", "token=a%2Fb%3D&name=al%20ice&empty="])
def test_upgrade_signed_in_headers_with_a_query_matches_botocore(
    query: str, token: str | None
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token, "env")
    host = "abc123.execute-api.eu-west-1.amazonaws.com"
    url = f"https://{host}/prod" + (f"?{query}" if query else "")
    theirs, moment = botocore_authorization("GET", url, b"", creds, "eu-west-1", host)
    ours = Signer(creds, "eu-west-1").sign("GET", host, "/prod", b"", now=moment, query=query)
    assert ours.headers["authorization"] == theirs


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEJr//session+token="])
@pytest.mark.parametrize("query", ["", "name=ci", "name=al%20ice&a=b%2Fc"])
def test_presigned_upgrade_matches_botocore_query_auth(query: str, token: str | None) -> None:
    from urllib.parse import parse_qs, urlsplit

    from botocore.auth import SigV4QueryAuth

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token, "env")
    host = "abc123.execute-api.eu-west-1.amazonaws.com"
    request = AWSRequest(
        method="GET",
        url=f"https://{host}/prod" + (f"?{query}" if query else ""),
        headers={"host": host},
    )
    SigV4QueryAuth(
        BotoCredentials(creds.access_key, creds.secret_key, creds.token),
        "execute-api",
        "eu-west-1",
        expires=300,
    ).add_auth(request)
    theirs = parse_qs(urlsplit(request.url).query)
    moment = datetime.strptime(theirs["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc
    )
    ours_query = Signer(creds, "eu-west-1").presign("GET", host, "/prod", query, now=moment)
    assert ours_query.startswith(query)  # the user's own parameters are kept, first
    ours = parse_qs(ours_query)
    assert ours == theirs  # every parameter, the signature included
