"""A log store: ``directory`` keeps finished logs in a directory every host mounts."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from norc.abc import LogStore
from norc.logs import check_key
from norc.plugin_settings import PluginSettings, text


@attrs.frozen(kw_only=True)
class DirectorySettings(PluginSettings):
    """The store's one setting: the shared directory (absolute)."""

    kind = "directory log store"

    path: str = attrs.field(validator=text(r"/.*", "an absolute directory path"))


class DirectoryLogStore(LogStore):
    """Copies each finished log to ``path`` (an NFS or SMB mount, say), under its key."""

    store_name = "directory"

    def __init__(self, *, settings: Mapping[str, Any], log_dir: Path) -> None:
        super().__init__(settings=settings, log_dir=log_dir)
        self.root = Path(DirectorySettings.parse(settings).path)

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``path`` (required): the directory; it is created on the first save."""
        return DirectorySettings.parse(settings).given()

    def save(self, key: str, local_path: Path) -> str:
        """Copy the log to ``path/key`` (atomically: readers never see half a log)."""
        target = self.root / check_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # One partial file per writer: two threads may save at once.
        partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        shutil.copyfile(local_path, partial)
        partial.replace(target)
        return str(target)

    def open(self, key: str) -> bytes | None:
        """The stored log's bytes; None if it was never saved."""
        try:
            return (self.root / check_key(key)).read_bytes()
        except FileNotFoundError:
            return None
