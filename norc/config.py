"""Settings: explicit arguments win over environment variables, which win over a TOML file.

Keys (environment variable / TOML key under ``[norc]``):

- ``NORC_DATABASE_URL`` / ``database_url``: default ``sqlite:///norc.db`` in the working directory.
- ``NORC_LOG_DIR`` / ``log_dir``: default ``norc-logs`` in the working directory.
- ``NORC_LOG_STORE`` / ``log_store``: where finished logs go, default ``local``;
  the store's own settings sit in a ``[norc.log_store_settings]`` table.
- ``NORC_DISABLE_PLUGINS`` / ``disable_plugins``: plugin names not to load (comma list).
- ``NORC_HEARTBEAT_INTERVAL`` (3 s) and ``NORC_HEARTBEAT_TIMEOUT`` (23 s), as in the seed.
- ``NORC_CONFIG``: the TOML file to read, default ``norc.toml`` in the working directory if present.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from norc.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///norc.db"
DEFAULT_LOG_DIR = "norc-logs"


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ConfigurationError(f"{attribute.name} must be > 0, got {value!r}")


def _without_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    return repr(re.sub(r"(://[^:/@\s]*:)[^@/\s]*@", r"\1***@", url))


@attrs.frozen(kw_only=True)
class Settings:
    """Everything a :class:`norc.Norc` handle is configured with."""

    # A URL may carry a password: never in a repr (logs, tracebacks, error reports).
    database_url: str = attrs.field(default=DEFAULT_DATABASE_URL, repr=_without_password)
    log_dir: Path = attrs.field(default=Path(DEFAULT_LOG_DIR), converter=Path)
    log_store: str = "local"
    log_store_settings: Mapping[str, Any] = attrs.Factory(dict)
    disable_plugins: tuple[str, ...] = ()
    heartbeat_interval: float = attrs.field(default=3.0, validator=_positive)
    heartbeat_timeout: float = attrs.field(default=23.0, validator=_positive)
    #: Where ``norc web`` is reached (``https://norc.example.com``): alert messages link
    #: to the instance's page there. None: no link.
    web_url: str | None = None

    @classmethod
    def load(cls, *, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Combine the TOML file, the environment and ``overrides`` (None means unset)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_path = env.get("NORC_CONFIG")
        path = Path(config_path) if config_path else Path("norc.toml")
        if path.exists():
            values.update(_read_toml(path))
        elif config_path:
            raise ConfigurationError(f"NORC_CONFIG names a missing file: {config_path}")
        for key in (
            "database_url",
            "log_dir",
            "log_store",
            "heartbeat_interval",
            "heartbeat_timeout",
            "web_url",
        ):
            raw = env.get(f"NORC_{key.upper()}")
            if raw:
                values[key] = raw
        if env.get("NORC_DISABLE_PLUGINS"):
            values["disable_plugins"] = env["NORC_DISABLE_PLUGINS"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("disable_plugins"), str):
            values["disable_plugins"] = tuple(
                p.strip() for p in values["disable_plugins"].split(",") if p.strip()
            )
        for key in ("heartbeat_interval", "heartbeat_timeout"):
            if key in values:
                try:
                    values[key] = float(values[key])
                except (TypeError, ValueError):
                    raise ConfigurationError(
                        f"{key} must be a number, got {values[key]!r}"
                    ) from None
        unknown = set(values) - {a.name for a in attrs.fields(cls)}
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    section = data.get("norc", data)
    if not isinstance(section, dict):
        raise ConfigurationError(f"config file {path}: [norc] must be a table")
    return dict(section)
