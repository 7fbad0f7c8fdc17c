"""Plugin settings as attrs classes: one-line errors naming the setting, given values kept."""

from __future__ import annotations

import sys
from typing import Any

import attrs
import pytest

from norc.aws import AWSSettings
from norc.errors import ConfigurationError
from norc.plugin_settings import (
    PluginSettings,
    boolean,
    number,
    one_of,
    optional,
    text,
    whole_number,
)


@attrs.frozen(kw_only=True)
class Spool(PluginSettings):
    """A made-up plugin's settings."""

    kind = "spool queue"

    path: str = attrs.field(validator=text(r"/\S*", "an absolute path"))
    poll: float | None = attrs.field(default=None, validator=optional(number(0, 60)))
    batch: int | None = attrs.field(default=None, validator=optional(whole_number(1, 100)))
    mode: str | None = attrs.field(default=None, validator=optional(one_of("a", "b")))
    sync: bool | None = attrs.field(default=None, validator=optional(boolean))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "the spool queue needs the setting 'path'"),
        ({"path": "rel"}, "spool queue setting 'path' must be an absolute path, got 'rel'"),
        ({"path": "/s", "poll": True}, "setting 'poll' must be a number from 0 to 60, got True"),
        ({"path": "/s", "batch": 2.0}, "setting 'batch' must be a whole number from 1 to 100"),
        ({"path": "/s", "mode": "c"}, "setting 'mode' must be 'a' or 'b', got 'c'"),
        ({"path": "/s", "sync": 1}, "setting 'sync' must be true or false, got 1"),
        ({"path": "/s", "colour": 1, "age": 2}, "unknown spool queue setting(s) 'age', 'colour'"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(settings: dict[str, Any], message: str) -> None:
    """Missing, unknown and invalid settings raise ConfigurationError with one line."""
    with pytest.raises(ConfigurationError) as info:
        Spool.parse(settings)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_given_keeps_only_what_was_given() -> None:
    """Defaults are not written back: what is stored is what the user gave, checked."""
    assert Spool.parse({"path": "/s", "sync": False}).given() == {"path": "/s", "sync": False}


@pytest.mark.parametrize("key", ["aws_secret_access_key", "SessionToken", "db_password"])
def test_aws_settings_refuse_credentials_first(key: str) -> None:
    """A credential-like key is refused before anything else, naming it and boto3's chain."""
    with pytest.raises(ConfigurationError, match="looks like a credential") as info:
        AWSSettings.parse({key: "x", "unknown": 1})
    assert repr(key) in str(info.value) and "standard chain" in str(info.value)


def test_aws_settings_give_the_client_options() -> None:
    """Region and endpoint are checked and handed to boto3's client as they are."""
    settings = AWSSettings.parse({"region": "eu-west-1", "endpoint_url": "http://h:9000"})
    assert settings.client_options() == {
        "region_name": "eu-west-1",
        "endpoint_url": "http://h:9000",
    }
    with pytest.raises(ConfigurationError, match="'endpoint_url' must be an http"):
        AWSSettings.parse({"endpoint_url": "minio:9000"})


def test_the_core_holds_the_aws_settings_without_boto3() -> None:
    """norc.aws imports no AWS library: the core's dependencies stay boto3-free."""
    import subprocess

    code = "import sys, norc.aws; print(sorted(m for m in sys.modules if 'boto' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
