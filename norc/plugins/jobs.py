"""The built-in ``Job`` task type (see :mod:`norc.jobs`), registered like any plugin's."""

from __future__ import annotations

from norc.jobs import Job
from norc.pluginmarkers import hookimpl
from norc.registry import PluginRegistry


@hookimpl
def norc_register_types(registry: PluginRegistry) -> None:
    """Provide the ``Job`` task type."""
    registry.add_task_type(Job)
