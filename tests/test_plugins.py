"""Plugins: discovery through real entry points, blocking, validation, lifecycle hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import norc
from norc.errors import DuplicateRegistration, PluginError, PluginLoadError, UnknownQueueType
from norc.plugins.dbqueue import DBQueue
from norc.registry import PluginRegistry
from norc.testing import wait_until
from tests.tasks import Outcome


def _install_fake_distribution(root: Path, name: str, module_source: str) -> None:
    """Put a real distribution (dist-info with a norc entry point) on a sys.path entry."""
    module = f"{name}_mod"
    (root / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[norc]\n{name} = {module}\n")


def test_builtins_and_installed_plugins_come_from_entry_points(sqlite_app: norc.Norc) -> None:
    """dbqueue and local_logs (core) and command (norc-command) load through entry points."""
    found = {p.name: p.distribution for p in sqlite_app.plugins.infos}
    assert found["dbqueue"] == "norc"
    assert found["local_logs"] == "norc"
    assert found["command"] == "norc-command"
    assert sqlite_app.registry.queue_type("dbqueue") is DBQueue
    assert sqlite_app.registry.task_type_owner("CommandTask") == "command"


def test_disabled_plugins_are_not_loaded(
    sqlite_url: str, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NORC_DISABLE_PLUGINS blocks plugins by name, built-ins included."""
    monkeypatch.setenv("NORC_DISABLE_PLUGINS", "command, dbqueue")
    app = norc.Norc(sqlite_url, log_dir=log_dir)
    assert app.registry.task_type("CommandTask") is None
    assert app.plugins.blocked == ["command", "dbqueue"]
    with pytest.raises(UnknownQueueType, match="'dbqueue'"):
        app.queue("default")


def test_plugin_failing_to_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    """A plugin whose module raises on import fails Norc's start with its name and distribution."""
    _install_fake_distribution(tmp_path, "norc_broken", "raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match="'norc_broken'.*norc_broken.*no config"):
        norc.Norc(sqlite_url)


def test_misspelled_hook_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    """check_pending(): a hook name that no spec defines is an error, not silently ignored."""
    _install_fake_distribution(
        tmp_path,
        "norc_typo",
        """
        import norc

        @norc.hookimpl
        def norc_register_typos(registry):
            pass
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="norc_register_typos"):
        norc.Norc(sqlite_url)


def test_entry_point_plugin_registers_a_task_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    """A third-party distribution's task type is available by name, owned by its plugin."""
    _install_fake_distribution(
        tmp_path,
        "norc_extra",
        """
        import attrs, norc

        @attrs.define(kw_only=True)
        class Extra(norc.Task):
            def run(self, ctx):
                return True

        @norc.hookimpl
        def norc_register_types(registry):
            registry.add_task_type(Extra)
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = norc.Norc(sqlite_url)
    assert app.registry.task_type_owner("Extra") == "norc_extra"
    assert any(p.distribution == "norc_extra" for p in app.plugins.infos)


def test_duplicate_names_are_rejected_naming_both_plugins(sqlite_url: str) -> None:
    """Two plugins registering one queue type name is a DuplicateRegistration naming both."""

    class Other(DBQueue):
        type_name = "dbqueue"

    class Plugin:
        @norc.hookimpl
        def norc_register_types(self, registry: PluginRegistry) -> None:
            registry.add_queue_type(Other)

    with pytest.raises(DuplicateRegistration, match="'dbqueue'.*dbqueue.*Plugin"):
        norc.Norc(sqlite_url, plugins=[Plugin()])


def test_application_task_type_clashing_with_a_plugin_is_rejected(sqlite_app: norc.Norc) -> None:
    """An app class named like a plugin's type cannot silently replace it."""
    import attrs

    @attrs.define(kw_only=True)
    class CommandTask(norc.Task):
        def run(self, ctx: norc.RunContext) -> None:
            pass

    with pytest.raises(DuplicateRegistration, match="'CommandTask'"):
        sqlite_app.save_task(CommandTask(name="fake"))


class Recorder:
    """An in-process plugin that records lifecycle events, and one hook that always raises."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []

    @norc.hookimpl
    def norc_instance_queued(self, instance: norc.InstanceRecord) -> None:
        self.events.append(("queued", instance.id, instance.status.value))

    @norc.hookimpl
    def norc_instance_started(self, instance: norc.InstanceRecord) -> None:
        self.events.append(("started", instance.id, instance.status.value))

    @norc.hookimpl
    def norc_instance_finished(self, instance: norc.InstanceRecord) -> None:
        self.events.append(("finished", instance.id, instance.status.value))


class Exploder:
    """A plugin whose finished hook raises."""

    @norc.hookimpl
    def norc_instance_finished(self, instance: norc.InstanceRecord) -> None:
        raise RuntimeError("plugin bug")


def test_lifecycle_hooks_see_each_instance_and_a_raising_hook_changes_nothing(
    sqlite_url: str, log_dir: Path
) -> None:
    """queued/started/finished hooks fire in order; a plugin that raises is only logged."""
    recorder = Recorder()
    app = norc.Norc(sqlite_url, log_dir=log_dir, plugins=[recorder, Exploder()])
    app.save_task(Outcome(name="ok"))
    instance_id = app.enqueue("ok")
    with app.executor():
        wait_until(lambda: len(recorder.events) == 3)
    assert recorder.events == [
        ("queued", instance_id, "QUEUED"),
        ("started", instance_id, "RUNNING"),
        ("finished", instance_id, "SUCCESS"),
    ]
    assert app.instance(instance_id).status is norc.InstanceStatus.SUCCESS
    app.close()


def _norc(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run the `norc` command with ``tmp_path`` (fake distributions) on its path."""
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        **(env or {}),
    }
    return subprocess.run(
        [str(Path(sys.executable).with_name("norc")), "--db", f"sqlite:///{tmp_path}/n.db", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_norc_plugins_lists_a_broken_plugin_instead_of_failing(tmp_path: Path) -> None:
    """`norc plugins` is the tool to diagnose a broken plugin: it lists what loaded and
    names the one that failed, with why, while other commands refuse to start."""
    _install_fake_distribution(tmp_path, "norc_broken", "raise RuntimeError('no config')\n")
    listing = _norc(tmp_path, "plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["dbqueue"]["status"] == "loaded"
    assert rows["norc_broken"]["status"] == "failed"
    assert "RuntimeError: no config" in rows["norc_broken"]["error"]
    other = _norc(tmp_path, "status")
    assert other.returncode == 2
    assert "norc_broken" in other.stderr and len(other.stderr.strip().splitlines()) == 1


def test_norc_plugins_lists_a_duplicate_registration_as_failed(tmp_path: Path) -> None:
    """A plugin registering a type name another already owns is listed as failed."""
    _install_fake_distribution(
        tmp_path,
        "norc_dupe",
        """
        import norc
        from norc.plugins.dbqueue import DBQueue

        class Again(DBQueue):
            type_name = "dbqueue"

        @norc.hookimpl
        def norc_register_types(registry):
            registry.add_queue_type(Again)
        """,
    )
    listing = _norc(tmp_path, "plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    # Whichever of the two registers second is the one refused; the error names both.
    failed = [rows[name] for name in ("dbqueue", "norc_dupe") if rows[name]["status"] == "failed"]
    assert len(failed) == 1
    assert "'dbqueue'" in failed[0]["error"] and "norc_dupe" in failed[0]["error"]


def test_an_unknown_name_in_norc_disable_plugins_is_a_warning_naming_it(tmp_path: Path) -> None:
    """A typo in NORC_DISABLE_PLUGINS blocks nothing; it is said, once, on stderr."""
    result = _norc(tmp_path, "plugins", env={"NORC_DISABLE_PLUGINS": "nosuchplugin,job"})
    assert result.returncode == 0
    assert "norc: warning: NORC_DISABLE_PLUGINS names 'nosuchplugin'" in result.stderr
    assert "'job'" not in result.stderr.split("warning:")[1].split("(installed")[0]
    with pytest.warns(UserWarning, match="'nosuchplugin'"):
        norc.Norc(f"sqlite:///{tmp_path}/m.db", disable_plugins=["nosuchplugin"])


class Wrapper:
    """A new-style pluggy hook wrapper around norc_instance_finished."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    @norc.hookimpl(wrapper=True)
    def norc_instance_finished(self, instance: norc.InstanceRecord) -> Any:
        self.seen.append(instance.id)
        return (yield)


def test_hooks_are_called_through_pluggy_so_wrappers_and_tracing_see_them(
    sqlite_url: str, log_dir: Path
) -> None:
    """A hook wrapper and pluggy's tracing see lifecycle calls; a raising plugin beside
    them is still only logged, and the instance's outcome stands."""
    wrapper, recorder = Wrapper(), Recorder()
    app = norc.Norc(sqlite_url, log_dir=log_dir, plugins=[recorder, Exploder(), wrapper])
    traced: list[str] = []
    app.plugins._pm.trace.root.setwriter(traced.append)
    undo = app.plugins._pm.enable_tracing()
    try:
        app.save_task(Outcome(name="ok"))
        instance_id = app.enqueue("ok")
        with app.executor():
            wait_until(lambda: ("finished", instance_id, "SUCCESS") in recorder.events)
        assert wrapper.seen == [instance_id]
        assert any("norc_instance_finished" in line for line in traced)
        assert app.instance(instance_id).status is norc.InstanceStatus.SUCCESS
    finally:
        undo()
        app.close()
