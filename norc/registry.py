"""The typed registry plugins fill: task types, queue types, log stores and alert channels
by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

import attrs

from norc.errors import (
    DuplicateRegistration,
    PluginError,
    UnknownChannel,
    UnknownLogStore,
    UnknownQueueType,
)

if TYPE_CHECKING:
    from norc.abc import LogStore, Queue, Task
    from norc.alerts.channels import Channel

T = TypeVar("T")

#: The plugin name recorded for classes the application registers itself.
APPLICATION = "application"


@attrs.define
class _Kind(Generic[T]):
    """Classes of one kind, by name, remembering which plugin gave each."""

    label: str
    classes: dict[str, type[T]] = attrs.Factory(dict)
    owners: dict[str, str] = attrs.Factory(dict)

    def add(self, name: str, cls: type[T], plugin: str) -> None:
        if not name:
            raise PluginError(f"{self.label} {cls!r} from plugin {plugin!r} has no name")
        if name in self.classes:
            if self.classes[name] is cls:
                return  # the same class registered again (e.g. saved twice) is harmless
            raise DuplicateRegistration(self.label, name, self.owners[name], plugin)
        self.classes[name] = cls
        self.owners[name] = plugin


class Registry:
    """Everything the loaded plugins (and the application) made available, by name."""

    def __init__(self) -> None:
        self.task_types: _Kind[Task] = _Kind("task type")
        self.queue_types: _Kind[Queue] = _Kind("queue type")
        self.log_stores: _Kind[LogStore] = _Kind("log store")
        self.channels: _Kind[Channel] = _Kind("alert channel")

    def for_plugin(self, plugin: str) -> PluginRegistry:
        """A view that records ``plugin`` as the owner of whatever it adds."""
        return PluginRegistry(self, plugin)

    def task_type(self, name: str) -> type[Task] | None:
        """The task class registered as ``name``, or None."""
        return self.task_types.classes.get(name)

    def task_type_owner(self, name: str) -> str | None:
        """The plugin that registered task type ``name``, or None."""
        return self.task_types.owners.get(name)

    def queue_type(self, name: str) -> type[Queue]:
        """The queue class registered as ``name``; raises :class:`UnknownQueueType`."""
        try:
            return self.queue_types.classes[name]
        except KeyError:
            raise UnknownQueueType(name, list(self.queue_types.classes)) from None

    def log_store(self, name: str) -> type[LogStore]:
        """The log store class registered as ``name``; raises :class:`UnknownLogStore`."""
        try:
            return self.log_stores.classes[name]
        except KeyError:
            raise UnknownLogStore(name, list(self.log_stores.classes)) from None

    def channel_type(self, name: str) -> type[Channel]:
        """The alert channel class registered as ``name``; raises :class:`UnknownChannel`."""
        try:
            return self.channels.classes[name]
        except KeyError:
            raise UnknownChannel(name, list(self.channels.classes)) from None


class PluginRegistry:
    """What a plugin's ``norc_register_types`` hook receives."""

    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self.plugin = plugin

    def add_task_type(self, cls: type[Task]) -> None:
        """Make ``cls`` runnable under ``cls.type_name``."""
        self._registry.task_types.add(cls.type_name, cls, self.plugin)

    def add_queue_type(self, cls: type[Queue]) -> None:
        """Make queues of type ``cls.type_name`` creatable."""
        self._registry.queue_types.add(cls.type_name, cls, self.plugin)

    def add_log_store(self, cls: type[LogStore]) -> None:
        """Make ``cls.store_name`` usable as the ``log_store`` setting."""
        self._registry.log_stores.add(cls.store_name, cls, self.plugin)

    def add_channel_type(self, cls: type[Channel]) -> None:
        """Make ``cls.channel_name`` usable as an alert rule's channel."""
        self._registry.channels.add(cls.channel_name, cls, self.plugin)
