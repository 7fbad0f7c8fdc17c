"""Builds the plugin manager of one :class:`norc.Norc` handle; nothing is loaded at import.

Plugins come from the ``norc`` entry-point group (the core's own built-ins included,
as in pytest's ``default_plugins``) and from objects the application passes in.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import pluggy
import structlog

from norc import hookspecs
from norc.errors import PluginError, PluginLoadError
from norc.registry import Registry

ENTRY_POINT_GROUP = "norc"

log = structlog.get_logger("norc.plugins")


@attrs.frozen
class PluginInfo:
    """One loaded plugin, as ``norc plugins`` lists it."""

    name: str
    distribution: str
    version: str
    module: str


class PluginManager:
    """A typed wrapper around pluggy's manager: loading, blocking, safe hook calls."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("norc")
        self._pm.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        self.blocked: list[str] = []

    @property
    def hook(self) -> Any:
        """pluggy's hook relay, for hooks whose results are needed."""
        return self._pm.hook

    def register(self, plugin: object, info: PluginInfo) -> None:
        """Register one plugin object under ``info.name``."""
        if self._pm.is_blocked(info.name):
            return
        try:
            self._pm.register(plugin, name=info.name)
        except ValueError as exc:
            raise PluginError(f"plugin {info.name!r} cannot be registered: {exc}") from None
        self.infos.append(info)

    def load_entry_points(self, disabled: Iterable[str]) -> None:
        """Import and register every ``norc`` entry point not named in ``disabled``."""
        for name in disabled:
            self._pm.set_blocked(name)
            self.blocked.append(name)
        seen: set[str] = set()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = ep.dist
            dist_name = dist.name if dist else "unknown distribution"
            if self._pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(ep.name, dist_name, f"{type(exc).__name__}: {exc}") from exc
            self.register(
                plugin,
                PluginInfo(ep.name, dist_name, dist.version if dist else "?", ep.value),
            )

    def check_pending(self) -> None:
        """Fail loudly when a plugin implements a hook that does not exist (a typo)."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {exc.plugin!r}: {exc}") from None

    def fill_registry(self, registry: Registry) -> None:
        """Let every plugin register its types, each recorded under its own name."""
        for impl in self._pm.hook.norc_register_types.get_hookimpls():
            impl.function(registry.for_plugin(impl.plugin_name))

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a plugin that raises is logged, by name."""
        caller = getattr(self._pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception:
                log.exception("plugin hook failed", plugin=impl.plugin_name, hook=hook_name)

    def has_hook_impls(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name`` (lets hot paths skip record building)."""
        return bool(getattr(self._pm.hook, hook_name).get_hookimpls())


def build_plugin_manager(
    *, disabled: Sequence[str] = (), extra: Sequence[object] = ()
) -> PluginManager:
    """Load the entry-point plugins, then ``extra`` in-process ones, then validate."""
    pm = PluginManager()
    pm.load_entry_points(disabled)
    for i, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        pm.register(plugin, PluginInfo(name, "application", "-", name))
    pm.check_pending()
    return pm
