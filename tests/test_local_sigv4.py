"""The gateway's SigV4 verifier, against AWS's published test vector and the contract's examples."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from wsconn.local import sigv4

# The "get-vanilla" case of AWS's SigV4 test suite.
VANILLA_KEY = "AKIDEXAMPLE"
VANILLA_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
VANILLA_DATE = "20150830T123600Z"
VANILLA_HEADERS = [("Host", "example.amazonaws.com"), ("X-Amz-Date", VANILLA_DATE)]
VANILLA_CANONICAL = (
    "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)
VANILLA_STRING_TO_SIGN = (
    "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
    "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
)
VANILLA_SIGNATURE = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
VANILLA_NOW = datetime(2015, 8, 30, 12, 36, tzinfo=timezone.utc)
EMPTY_HASH = sigv4.sha256_hex(b"")


def vanilla_headers(signature: str = VANILLA_SIGNATURE) -> list[tuple[str, str]]:
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={VANILLA_KEY}/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}"
    )
    return [*VANILLA_HEADERS, ("Authorization", authorization)]


def verify_vanilla(
    headers: list[tuple[str, str]], now: datetime = VANILLA_NOW, **overrides: object
) -> sigv4.VerifiedRequest:
    arguments: dict[str, object] = {
        "method": "GET",
        "raw_target": "/",
        "headers": headers,
        "payload_hash": EMPTY_HASH,
        "access_key": VANILLA_KEY,
        "secret_key": VANILLA_SECRET,
        "token": None,
        "region": "us-east-1",
        "now": now,
        "service": "service",
        **overrides,
    }
    return sigv4.verify(**arguments)  # type: ignore[arg-type]


def test_get_vanilla_canonical_request_and_signature() -> None:
    canonical = sigv4.canonical_request(
        "GET", "/", VANILLA_HEADERS, ["host", "x-amz-date"], EMPTY_HASH
    )
    assert canonical == VANILLA_CANONICAL
    scope = sigv4.credential_scope("20150830", "us-east-1", "service")
    to_sign = sigv4.string_to_sign(VANILLA_DATE, scope, canonical)
    assert to_sign == VANILLA_STRING_TO_SIGN
    signature = sigv4.signature(VANILLA_SECRET, "20150830", "us-east-1", "service", to_sign)
    assert signature == VANILLA_SIGNATURE


def test_get_vanilla_verifies() -> None:
    verified = verify_vanilla(vanilla_headers())
    assert verified.canonical_request == VANILLA_CANONICAL
    assert verified.string_to_sign == VANILLA_STRING_TO_SIGN


def test_a_changed_signature_is_refused_with_the_expected_strings() -> None:
    with pytest.raises(sigv4.SignatureError) as info:
        verify_vanilla(vanilla_headers("0" * 64))
    assert info.value.error_type == "InvalidSignatureException"
    assert info.value.message == (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service documentation "
        "for details.\n\nThe Canonical String for this request should have been\n'"
        + VANILLA_CANONICAL
        + "'\n\nThe String-to-Sign should have been\n'"
        + VANILLA_STRING_TO_SIGN
        + "'\n"
    )


@pytest.mark.parametrize(
    ("wire", "canonical"),
    [
        ("/prod/%40connections/R0oXAdfD0kwCH6w%3D", "/prod/%2540connections/R0oXAdfD0kwCH6w%253D"),
        ("/prod/@connections/R0oXAdfD0kwCH6w%3D", "/prod/%40connections/R0oXAdfD0kwCH6w%253D"),
        ("/dev/@connections/a+b=_-~.", "/dev/%40connections/a%2Bb%3D_-~."),
        ("/$default/@connections/x", "/%24default/%40connections/x"),
        ("/a/./b/../c//d/", "/a/c/d/"),
        ("", "/"),
    ],
)
def test_canonical_uri_is_the_wire_path_encoded_once_more(wire: str, canonical: str) -> None:
    assert sigv4.canonical_uri(wire) == canonical


def test_canonical_query_is_sorted_and_encoded() -> None:
    assert sigv4.canonical_query("b=2&a=x%20y&a=1&c") == "a=1&a=x%20y&b=2&c="


def test_canonical_headers_trim_collapse_and_join() -> None:
    headers = [("X-Multi", " a   b "), ("x-multi", "c"), ("Host", "h")]
    assert sigv4.canonical_headers(headers, ["host", "x-multi"]) == "host:h\nx-multi:a b,c\n"


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (
            timedelta(minutes=6),
            "Signature expired: 20150830T123600Z is now earlier than 20150830T123700Z "
            "(20150830T124200Z - 5 min.)",
        ),
        (
            timedelta(minutes=-6),
            "Signature not yet current: 20150830T123600Z is still later than 20150830T123500Z "
            "(20150830T123000Z + 5 min.)",
        ),
    ],
)
def test_clock_skew(offset: timedelta, expected: str) -> None:
    with pytest.raises(sigv4.SignatureError) as info:
        verify_vanilla(vanilla_headers(), now=VANILLA_NOW + offset)
    assert (info.value.error_type, info.value.message) == ("InvalidSignatureException", expected)


def test_exactly_five_minutes_is_still_accepted() -> None:
    verify_vanilla(vanilla_headers(), now=VANILLA_NOW + timedelta(minutes=5))
    verify_vanilla(vanilla_headers(), now=VANILLA_NOW - timedelta(minutes=5))


@pytest.mark.parametrize(
    ("headers", "error_type"),
    [
        (VANILLA_HEADERS, "MissingAuthenticationTokenException"),
        ([*VANILLA_HEADERS, ("Authorization", "Bearer abc")], "IncompleteSignatureException"),
        (
            [*VANILLA_HEADERS, ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x")],
            "IncompleteSignatureException",
        ),
        (
            [h for h in vanilla_headers() if h[0] != "X-Amz-Date"],
            "IncompleteSignatureException",
        ),
    ],
)
def test_missing_or_malformed_authorization(
    headers: list[tuple[str, str]], error_type: str
) -> None:
    with pytest.raises(sigv4.SignatureError) as info:
        verify_vanilla(headers)
    assert info.value.error_type == error_type


def test_scope_service_region_and_key_are_checked() -> None:
    with pytest.raises(sigv4.SignatureError) as service:
        verify_vanilla(vanilla_headers(), service="execute-api")
    assert (
        service.value.message == "Credential should be scoped to correct service: 'execute-api'. "
    )
    with pytest.raises(sigv4.SignatureError) as region:
        verify_vanilla(vanilla_headers(), region="eu-west-1")
    assert region.value.message == "Credential should be scoped to a valid region. "
    with pytest.raises(sigv4.SignatureError) as key:
        verify_vanilla(vanilla_headers(), access_key="AKIDOTHER")
    assert key.value.error_type == "UnrecognizedClientException"


def test_session_token_must_match_and_be_signed() -> None:
    with pytest.raises(sigv4.SignatureError) as missing:
        verify_vanilla(vanilla_headers(), token="tok")
    assert (missing.value.error_type, missing.value.reason) == (
        "UnrecognizedClientException",
        "missing session token",
    )
    with pytest.raises(sigv4.SignatureError) as unsigned:
        verify_vanilla([*vanilla_headers(), ("X-Amz-Security-Token", "tok")], token="tok")
    assert unsigned.value.message == (
        "'x-amz-security-token' must be a 'SignedHeader' in the AWS Authorization."
    )
    with pytest.raises(sigv4.SignatureError) as unexpected:
        verify_vanilla([*vanilla_headers(), ("X-Amz-Security-Token", "tok")])
    assert unexpected.value.reason == "unexpected session token"


def test_host_must_be_signed() -> None:
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={VANILLA_KEY}/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=x-amz-date, Signature={VANILLA_SIGNATURE}"
    )
    with pytest.raises(sigv4.SignatureError) as info:
        verify_vanilla([*VANILLA_HEADERS, ("Authorization", authorization)])
    assert (
        info.value.message
        == "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
    )
