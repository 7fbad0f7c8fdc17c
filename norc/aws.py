"""The settings every AWS plugin shares (norc-s3, norc-sqs), parsed without boto3.

:class:`AWSSettings` holds the region and the endpoint, and refuses any key that looks
like a credential: plugin settings are stored where others can read them (a queue's in
Norc's database, a log store's in ``norc.toml`` or the environment), so credentials
only ever come from boto3's standard chain. The core holds this and not the plugins
because both plugins need exactly the same rules and messages; it imports no AWS
library, so the core's dependencies do not grow (boto3 stays the plugins' own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from norc.errors import ConfigurationError
from norc.plugin_settings import PluginSettings, http_url, optional, text

__all__ = ["CREDENTIAL_WORDS", "AWSSettings"]

#: Parts of a key that mark it as a credential (compared lower-cased).
CREDENTIAL_WORDS = ("secret", "access_key", "accesskey", "token", "password", "credential")


@attrs.frozen(kw_only=True)
class AWSSettings(PluginSettings):
    """Region and endpoint of an AWS service; subclass it with the plugin's own settings."""

    kind = "AWS"

    #: The AWS region; None: boto3's chain (``AWS_DEFAULT_REGION``, the profile's).
    region: str | None = attrs.field(default=None, validator=optional(text()))
    #: Another endpoint of the service (a VPC endpoint, MinIO, a local test server).
    endpoint_url: str | None = attrs.field(default=None, validator=optional(http_url))

    @classmethod
    def check_keys(cls, settings: Mapping[str, Any]) -> None:
        """Refuse a key that looks like a credential, naming it and the way to give one."""
        for key in settings:
            if any(word in str(key).lower() for word in CREDENTIAL_WORDS):
                raise ConfigurationError(
                    f"{cls.kind} setting {key!r} looks like a credential: Norc never keeps"
                    " credentials in settings (everyone who can read the database or the"
                    " configuration could read them); give them to boto3 through its"
                    " standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE"
                    " and ~/.aws/credentials, or an instance, task or pod role)"
                )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``session.client(service, **options)``."""
        return {"region_name": self.region, "endpoint_url": self.endpoint_url}
