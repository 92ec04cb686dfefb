"""Every endpoint form a user has, resolved in the documented order."""

from __future__ import annotations

import pytest

from wsconn.endpoint import (
    encode_connection_id,
    parse_connection_url,
    parse_endpoint,
    resolve_target,
)
from wsconn.errors import ConfigError, UsageError

API = "https://abc123.execute-api.us-east-1.amazonaws.com"


def resolve(connection: str = "R0oXAdfD0kwCH6w=", **kwargs: object) -> str:
    options: dict[str, object] = {
        "endpoint": None,
        "api_id": None,
        "stage": None,
        "region": lambda: "eu-west-1",
        "environ": {},
    }
    options.update(kwargs)
    return resolve_target(connection, **options).url  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("R0oXAdfD0kwCH6w=", "R0oXAdfD0kwCH6w%3D"),
        ("a+b/c=", "a%2Bb%2Fc%3D"),
        ("A-z_0.9~", "A-z_0.9~"),
        ("sp ace", "sp%20ace"),
    ],
)
def test_connection_id_keeps_only_unreserved(raw: str, encoded: str) -> None:
    assert encode_connection_id(raw) == encoded


@pytest.mark.parametrize(
    "url",
    [
        f"{API}/prod/@connections/R0oXAdfD0kwCH6w=",
        f"{API}/prod/%40connections/R0oXAdfD0kwCH6w%3D",
        f"{API}/prod/%40Connections/R0oXAdfD0kwCH6w%3d",
        f"{API}/prod/@connections/R0oXAdfD0kwCH6w%3D/",
        "wss://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w=",
    ],
)
def test_connection_url_forms_are_not_encoded_twice(url: str) -> None:
    target = parse_connection_url(url)
    assert target.connection_id == "R0oXAdfD0kwCH6w="
    assert target.url == f"{API}/prod/@connections/R0oXAdfD0kwCH6w%3D"
    assert target.endpoint.host_region == "us-east-1"


def test_connection_url_wins_over_every_other_source() -> None:
    url = f"{API}/prod/@connections/abc%2Bdef%2Fg%3D"
    assert (
        resolve(
            url,
            endpoint="http://127.0.0.1:1/x",
            api_id="zzz",
            stage="s",
            environ={"WSCONN_ENDPOINT": "http://h/e"},
        )
        == url
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        f"{API}/prod",
        f"{API}/prod/",
        f"{API}/prod/@connections",
        f"{API}/prod/%40connections/",
        "wss://abc123.execute-api.us-east-1.amazonaws.com/prod",
        f"{API}:443/prod",
        "HTTPS://ABC123.execute-api.us-east-1.amazonaws.com/prod",
    ],
)
def test_endpoint_forms(endpoint: str) -> None:
    assert resolve(endpoint=endpoint) == f"{API}/prod/@connections/R0oXAdfD0kwCH6w%3D"


def test_ws_and_http_loopback_endpoints_keep_port() -> None:
    assert (
        resolve(endpoint="ws://127.0.0.1:8080/dev")
        == "http://127.0.0.1:8080/dev/@connections/R0oXAdfD0kwCH6w%3D"
    )
    assert (
        resolve(endpoint="http://[::1]:9/dev")
        == "http://[::1]:9/dev/@connections/R0oXAdfD0kwCH6w%3D"
    )


def test_custom_domain_has_no_stage_and_no_region() -> None:
    endpoint = parse_endpoint("https://ws.example.com/chat", "--endpoint")
    assert endpoint.connection_url("x=") == "https://ws.example.com/chat/@connections/x%3D"
    assert endpoint.host_region is None
    assert parse_endpoint("https://ws.example.com", "--endpoint").connection_url("x") == (
        "https://ws.example.com/@connections/x"
    )


def test_api_id_and_stage() -> None:
    assert (
        resolve(api_id="abc123", stage="prod")
        == "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/@connections/R0oXAdfD0kwCH6w%3D"
    )


def test_default_stage_is_kept_raw() -> None:
    assert resolve(api_id="abc123", stage="$default").startswith(
        "https://abc123.execute-api.eu-west-1.amazonaws.com/$default/@connections/"
    )
    assert resolve(endpoint=f"{API}/$default") == f"{API}/$default/@connections/R0oXAdfD0kwCH6w%3D"


def test_china_regions_use_com_cn() -> None:
    url = resolve(api_id="abc123", stage="prod", region=lambda: "cn-north-1")
    assert url.startswith("https://abc123.execute-api.cn-north-1.amazonaws.com.cn/prod/")
    target = parse_connection_url(url)
    assert target.endpoint.host_region == "cn-north-1"


def test_api_id_without_region_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--region"):
        resolve(api_id="abc123", stage="prod", region=lambda: None)


def test_api_id_without_stage_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--stage"):
        resolve(api_id="abc123")


def test_environment_order() -> None:
    env = {
        "WSCONN_ENDPOINT": "http://127.0.0.1:1/first",
        "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": "http://127.0.0.1:2/second",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:3/third",
    }
    assert resolve(environ=env).startswith("http://127.0.0.1:1/first/")
    del env["WSCONN_ENDPOINT"]
    assert resolve(environ=env).startswith("http://127.0.0.1:2/second/")
    del env["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"]
    assert resolve(environ=env).startswith("http://127.0.0.1:3/third/")
    # --api-id/--stage comes before the environment, --endpoint before both.
    assert resolve(environ=env, api_id="abc123", stage="p").startswith("https://abc123.")
    assert resolve(environ=env, endpoint="http://127.0.0.1:4/opt").startswith(
        "http://127.0.0.1:4/opt/"
    )


def test_no_endpoint_never_falls_back_to_the_sdk_trap() -> None:
    with pytest.raises(ConfigError, match="no endpoint"):
        resolve()
    with pytest.raises(UsageError, match="no api-id"):
        resolve(endpoint="https://execute-api.us-east-1.amazonaws.com/")


def test_bare_id_typed_encoded_is_decoded_once() -> None:
    assert resolve("R0oXAdfD0kwCH6w%3D", endpoint=f"{API}/prod").endswith("/R0oXAdfD0kwCH6w%3D")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://host/prod", "must start with"),
        ("https:///prod", "no host"),
        ("https://user:pw@host/prod", "user name"),
        ("https://host/prod?x=1", "query"),
        ("https://host:99999/prod", "not a valid URL"),
    ],
)
def test_bad_endpoints_are_usage_errors_when_typed(url: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        resolve(endpoint=url)
    # The same URL read from the environment is a configuration error.
    with pytest.raises(ConfigError, match=why):
        resolve(environ={"WSCONN_ENDPOINT": url})


def test_endpoint_naming_a_connection_is_refused() -> None:
    with pytest.raises(UsageError, match="names a connection"):
        resolve(endpoint=f"{API}/prod/@connections/abc")


def test_connection_url_without_id_is_refused() -> None:
    with pytest.raises(UsageError, match="no '/@connections/"):
        resolve(f"{API}/prod/")
