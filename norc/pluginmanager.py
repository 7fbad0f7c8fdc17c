"""Builds the plugin manager of one :class:`norc.Norc` handle; nothing is loaded at import.

Plugins come from the ``norc`` entry-point group (the core's own built-ins included,
as in pytest's ``default_plugins``) and from objects the application passes in.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import pluggy
import structlog

from norc import hookspecs
from norc.errors import PluginError, PluginLoadError
from norc.registry import Registry

ENTRY_POINT_GROUP = "norc"

#: Hooks that tell plugins what happened: an implementation that raises is logged with
#: its plugin's name and never changes the outcome, nor keeps the others from running.
NOTIFICATION_HOOKS = ("norc_instance_queued", "norc_instance_started", "norc_instance_finished")

log = structlog.get_logger("norc.plugins")


@attrs.frozen
class PluginInfo:
    """One loaded plugin, as ``norc plugins`` lists it."""

    name: str
    distribution: str
    version: str
    module: str


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded or registered, and why (``norc plugins``)."""

    name: str
    distribution: str
    reason: str


class PluginManager:
    """A typed wrapper around pluggy's manager: loading, blocking, safe hook calls.

    With ``strict`` (every handle's default) a plugin that fails to load or register
    raises, naming it; without (``norc plugins``, the diagnosis tool) it is recorded in
    :attr:`failures` and the others load.
    """

    def __init__(self, *, strict: bool = True) -> None:
        self._pm = pluggy.PluginManager("norc")
        self._pm.add_hookspecs(hookspecs)
        self.strict = strict
        self.infos: list[PluginInfo] = []
        self.blocked: list[str] = []
        self.failures: list[PluginFailure] = []
        #: Names in ``disabled`` that matched no plugin (a typo blocks nothing).
        self.unknown_disabled: list[str] = []

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
        except (ValueError, pluggy.PluginValidationError) as exc:
            error = PluginError(f"plugin {info.name!r} cannot be registered: {exc}")
            if self.strict:
                raise error from None
            self.failures.append(PluginFailure(info.name, info.distribution, str(exc)))
            return
        self.infos.append(info)
        self._guard_notifications(info.name)

    def _guard_notifications(self, plugin_name: str) -> None:
        """Wrap the plugin's notification hooks so that pluggy's own call (wrappers and
        tracing included) goes on past one that raises: it is logged, by plugin name."""
        for hook_name in NOTIFICATION_HOOKS:
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == plugin_name and not (impl.hookwrapper or impl.wrapper):
                    impl.function = _guarded(impl.function, plugin_name, hook_name)

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
                reason = f"{type(exc).__name__}: {exc}"
                if self.strict:
                    raise PluginLoadError(ep.name, dist_name, reason) from exc
                self.failures.append(PluginFailure(ep.name, dist_name, reason))
                continue
            self.register(
                plugin,
                PluginInfo(ep.name, dist_name, dist.version if dist else "?", ep.value),
            )

    def check_pending(self) -> None:
        """Fail loudly when a plugin implements a hook that does not exist (a typo)."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.strict:
                raise PluginError(f"plugin {exc.plugin!r}: {exc}") from None
            name = self._pm.get_name(exc.plugin) or repr(exc.plugin)
            self.failures.append(PluginFailure(name, self._distribution(name), str(exc)))
            self._pm.unregister(exc.plugin)
            self.infos = [i for i in self.infos if i.name != name]
            self.check_pending()

    def _distribution(self, name: str) -> str:
        return next((i.distribution for i in self.infos if i.name == name), "unknown distribution")

    def fill_registry(self, registry: Registry) -> None:
        """Let every plugin register its types, each recorded under its own name.

        Called per implementation rather than through the hook relay: each plugin is
        handed a view of the registry that records it as the owner of what it adds.
        """
        impls = [
            *self._pm.hook.norc_register_types.get_hookimpls(),
            *self._pm.hook.norc_register_channels.get_hookimpls(),
        ]
        for impl in impls:
            try:
                impl.function(registry.for_plugin(impl.plugin_name))
            except PluginError as exc:
                if self.strict:
                    raise
                distribution = self._distribution(impl.plugin_name)
                self.failures.append(PluginFailure(impl.plugin_name, distribution, str(exc)))

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a notification hook through pluggy (so hook wrappers and tracing see it);
        an implementation that raises is logged with its plugin's name, and the others
        still run."""
        getattr(self._pm.hook, hook_name)(**kwargs)

    def has_hook_impls(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name`` (lets hot paths skip record building)."""
        return bool(getattr(self._pm.hook, hook_name).get_hookimpls())


def _guarded(function: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def call(*args: Any) -> Any:  # pluggy passes the hook's arguments by position
        try:
            return function(*args)
        except Exception:
            log.exception("plugin hook failed", plugin=plugin, hook=hook)
            return None

    return call


def build_plugin_manager(
    *, disabled: Sequence[str] = (), extra: Sequence[object] = (), strict: bool = True
) -> PluginManager:
    """Load the entry-point plugins, then ``extra`` in-process ones, then validate.

    A name in ``disabled`` that matches no plugin is warned about (``UserWarning``,
    naming it): it blocks nothing, and a typo there should not pass unseen.
    """
    pm = PluginManager(strict=strict)
    pm.load_entry_points(disabled)
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for i, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        names.add(name)
        pm.register(plugin, PluginInfo(name, "application", "-", name))
    pm.unknown_disabled = [name for name in disabled if name not in names]
    for name in pm.unknown_disabled:
        warnings.warn(
            f"NORC_DISABLE_PLUGINS names {name!r}, which is no installed plugin"
            f" (installed: {', '.join(sorted(names))})",
            UserWarning,
            stacklevel=3,
        )
    pm.check_pending()
    return pm
