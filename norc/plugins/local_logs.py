"""The ``local`` log store: logs stay in the local log directory, where executors write them."""

from __future__ import annotations

from pathlib import Path

from norc.abc import LogStore
from norc.logs import check_key, resolve_key
from norc.pluginmarkers import hookimpl
from norc.registry import PluginRegistry


class LocalLogStore(LogStore):
    """Keeps each log where the executor wrote it; keys that could leave the log directory
    are refused (:func:`norc.logs.check_key`)."""

    store_name = "local"

    def save(self, key: str, local_path: Path) -> str | None:
        """Nothing to copy: the local file is the stored log."""
        check_key(key)
        return str(local_path)

    def open(self, key: str) -> bytes | None:
        """The local file's bytes, or None if there is no such file."""
        path = resolve_key(self.log_dir, check_key(key))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None


@hookimpl
def norc_register_types(registry: PluginRegistry) -> None:
    """Provide the ``local`` log store."""
    registry.add_log_store(LocalLogStore)
