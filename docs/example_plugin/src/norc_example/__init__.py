"""norc-example: the worked example of docs/plugins.md.

Installed, it provides the task type ``Greet``, the queue type ``spool`` and the log
store ``directory``, all through the one hook every plugin implements.
"""

from __future__ import annotations

from norc.pluginmarkers import hookimpl
from norc.registry import PluginRegistry
from norc_example.logstore import DirectoryLogStore
from norc_example.spool import SpoolQueue
from norc_example.tasks import Greet

__all__ = ["DirectoryLogStore", "Greet", "SpoolQueue", "norc_register_types"]


@hookimpl
def norc_register_types(registry: PluginRegistry) -> None:
    """Provide the ``Greet`` task type, the ``spool`` queue and the ``directory`` store."""
    registry.add_task_type(Greet)
    registry.add_queue_type(SpoolQueue)
    registry.add_log_store(DirectoryLogStore)
