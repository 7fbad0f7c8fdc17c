"""Every hook a Norc plugin can implement, each with its contract.

A plugin is a module (or object) with functions marked ``@norc.hookimpl`` whose names
are hook names below; it is found through the ``norc`` entry-point group of its
distribution, or passed in-process to ``norc.Norc(plugins=[...])``. Norc's own
built-ins (``norc.plugins.*``) are registered the same way, so any of them can be
blocked with ``NORC_DISABLE_PLUGINS``.

Lifecycle hooks (``norc_instance_*``) run in the process that changed the instance,
after the change is committed. A hook that raises is logged with the plugin's name and
never changes the instance's outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from norc.records import InstanceRecord
    from norc.registry import PluginRegistry

hookspec = pluggy.HookspecMarker("norc")


@hookspec
def norc_register_types(registry: PluginRegistry) -> None:
    """Register the task types, queue types and log stores this plugin provides.

    Call ``registry.add_task_type(cls)``, ``registry.add_queue_type(cls)`` and
    ``registry.add_log_store(cls)``. A name another plugin already registered raises
    :class:`norc.errors.DuplicateRegistration`, naming both plugins. Called once per
    :class:`norc.Norc` handle.
    """


@hookspec
def norc_register_channels(registry: PluginRegistry) -> None:
    """Register the alert channel types this plugin provides (PagerDuty, chat apps...).

    Call ``registry.add_channel_type(cls)`` with :class:`norc.alerts.channels.Channel`
    subclasses; rules name them by ``cls.channel_name``. Norc's own ``email`` and
    ``webhook`` come this way (``norc.plugins.channels``). Duplicates are rejected as
    in :func:`norc_register_types`. Called once per :class:`norc.Norc` handle.
    """


@hookspec
def norc_instance_queued(instance: InstanceRecord) -> None:
    """An instance was committed as QUEUED (enqueued by the API, a scheduler or a Job)."""


@hookspec
def norc_instance_started(instance: InstanceRecord) -> None:
    """An executor claimed an instance and is about to run it (status RUNNING)."""


@hookspec
def norc_instance_finished(instance: InstanceRecord) -> None:
    """An instance reached a final status; ``instance.log_key`` names its complete log."""
