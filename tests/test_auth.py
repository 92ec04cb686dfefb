"""wsconn's settings resolve exactly as botocore's session resolves them."""

from __future__ import annotations

from pathlib import Path

import botocore.session
import pytest

from wsconn.auth import AwsConfig
from wsconn.errors import ConfigError

ENV_CASES = [
    {},
    {"AWS_SESSION_TOKEN": "tok1"},
    {"AWS_SECURITY_TOKEN": "old", "AWS_SESSION_TOKEN": "new"},
    {"AWS_SECURITY_TOKEN": "", "AWS_SESSION_TOKEN": "new"},
    {"AWS_PROFILE": "other"},
]


@pytest.mark.parametrize("extra", ENV_CASES)
def test_environment_keys_are_what_botocore_returns(
    extra: dict[str, str], monkeypatch: pytest.MonkeyPatch, hermetic_env: Path
) -> None:
    (hermetic_env / "credentials").write_text(
        "[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = otherSecret\n"
    )
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    ours = AwsConfig(None).credentials()
    theirs = botocore.session.Session().get_credentials().get_frozen_credentials()
    assert (ours.access_key, ours.secret_key, ours.token) == (
        theirs.access_key,
        theirs.secret_key,
        theirs.token,
    )
    assert ours.source == "env"


def test_explicit_profile_beats_environment_keys(
    monkeypatch: pytest.MonkeyPatch, hermetic_env: Path
) -> None:
    (hermetic_env / "credentials").write_text(
        "[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = otherSecret\n"
    )
    creds = AwsConfig("other").credentials()
    assert creds.access_key == "AKIAOTHER" and creds.source == "shared-credentials-file"


def test_partial_environment_keys_are_botocores_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY"):
        AwsConfig(None).credentials()


@pytest.mark.parametrize(
    ("env", "profile", "config", "expected"),
    [
        ({"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "us-west-2"}, None, "", "eu-west-3"),
        (
            {"AWS_DEFAULT_REGION": "us-west-2"},
            None,
            "[default]\nregion = ap-south-1\n",
            "us-west-2",
        ),
        ({}, None, "[default]\nregion = ap-south-1\n", "ap-south-1"),
        ({}, "ops", "[default]\nregion = x\n[profile ops]\nregion = eu-north-1\n", "eu-north-1"),
        ({"AWS_PROFILE": "ops"}, None, "[profile ops]\nregion = eu-north-1\n", "eu-north-1"),
        ({}, None, "", None),
    ],
)
def test_region_order(
    env: dict[str, str],
    profile: str | None,
    config: str,
    expected: str | None,
    monkeypatch: pytest.MonkeyPatch,
    hermetic_env: Path,
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (hermetic_env / "config").write_text(config)
    assert AwsConfig(profile).configured_region() == expected
    if "AWS_REGION" not in env:  # botocore itself does not read AWS_REGION
        assert botocore.session.Session(profile=profile).get_config_variable("region") == expected


def test_ca_bundle_from_env_then_profile(
    monkeypatch: pytest.MonkeyPatch, hermetic_env: Path
) -> None:
    (hermetic_env / "config").write_text("[default]\nca_bundle = /etc/profile-ca.pem\n")
    assert AwsConfig(None).ca_bundle() == "/etc/profile-ca.pem"
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/env-ca.pem")
    assert AwsConfig(None).ca_bundle() == "/etc/env-ca.pem"


def test_unknown_profile_is_botocores_error(
    hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="could not be found"):
        AwsConfig("nope").credentials()
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match="could not be found"):
        AwsConfig("nope").configured_region()


def test_broken_config_file_is_a_config_error(
    hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    (hermetic_env / "config").write_text("[default\nregion = x\n")
    with pytest.raises(ConfigError):
        AwsConfig(None).configured_region()
