"""The worked example of docs/plugins.md: Norc's contract suites on its queue and its
log store, its task type run by an executor, and its entry point found by Norc."""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable
from pathlib import Path

import norc_example
import pytest
from norc_example import DirectoryLogStore, Greet, SpoolQueue

import norc
from norc.errors import ConfigurationError
from norc.status import InstanceStatus
from norc.testing import LogStoreContract, QueueContract, wait_until

HERE = Path(__file__).parent


class TestSpoolQueue(QueueContract):
    """The Queue contract, on the spool queue."""

    plugins = (norc_example,)

    @pytest.fixture
    def make_queue(self, app: norc.Norc, tmp_path: Path) -> Callable[[str], norc.Queue]:
        """Each contract queue is a folder of one spool directory."""

        def make(name: str) -> norc.Queue:
            app.create_queue(name, type="spool", path=str(tmp_path / "spool"))
            return app.queue(name)

        return make


class TestDirectoryLogStore(LogStoreContract):
    """The LogStore contract, on the directory store (one directory, shared by "hosts")."""

    plugins = (norc_example,)

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[Path], DirectoryLogStore]:
        """A directory store on ``tmp_path/shared``, for the log directory it is given."""
        shared = str(tmp_path / "shared")
        return lambda log_dir: DirectoryLogStore(settings={"path": shared}, log_dir=log_dir)


def test_greet_runs_through_the_spool_queue(app: norc.Norc, tmp_path: Path) -> None:
    """A Greet instance pushed to a spool queue is run by an executor and says hello."""
    app.create_queue("spooled", type="spool", path=str(tmp_path / "spool"))
    app.save_task(Greet(name="hi", who="world"))
    instance_id = app.enqueue("hi", queue="spooled")
    with app.executor(queue="spooled", isolation="thread"):
        wait_until(lambda: app.instance(instance_id).status.is_final)
    assert app.instance(instance_id).status is InstanceStatus.SUCCESS
    assert "hello, world!" in app.logs(instance_id)


def test_a_concurrency_limit_holds_spooled_work_back_without_losing_it(
    app: norc.Norc, tmp_path: Path
) -> None:
    """Instances held back by their task's limit (still QUEUED after mark_running) go back
    to the spool and all run, never two at once."""
    app.create_queue("spooled", type="spool", path=str(tmp_path / "spool"), poll=0.01)
    app.save_task(Greet(name="one-at-a-time", who="you", concurrency_limit=1))
    ids = list(app.enqueue_many("one-at-a-time", 4, queue="spooled"))
    with app.executor(queue="spooled", concurrency=3, isolation="thread"):
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)))
    records = sorted(app.db.instances_by_id(ids), key=lambda r: r.id)
    assert [r.status for r in records] == [InstanceStatus.SUCCESS] * 4
    spans = sorted((r.started_at, r.ended_at) for r in records)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # one at a time


def test_greeting_nobody_fails_with_its_reason(app: norc.Norc) -> None:
    """run() returning False is FAILURE, and the task's one-line reason is recorded."""
    app.save_task(Greet(name="nobody", who=" "))
    instance_id = app.enqueue("nobody")
    with app.executor(isolation="thread"):
        wait_until(lambda: app.instance(instance_id).status.is_final)
    record = app.instance(instance_id)
    assert (record.status, record.error) == (InstanceStatus.FAILURE, "nobody to greet")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "the spool queue needs the setting 'path'"),
        ({"path": "relative"}, "spool queue setting 'path' must be an absolute directory path"),
        ({"path": "/s", "poll": 0}, "spool queue setting 'poll' must be a number"),
        ({"path": "/s", "colour": 1}, "unknown spool queue setting(s) 'colour'"),
    ],
)
def test_bad_spool_settings_name_the_setting(
    app: norc.Norc, settings: dict[str, object], message: str
) -> None:
    """create_queue refuses bad settings in one line naming the setting."""
    with pytest.raises(ConfigurationError) as info:
        app.create_queue("bad", type="spool", **settings)
    assert message in str(info.value)
    assert SpoolQueue.validate_settings({"path": "/s"}) == {"path": "/s"}


def test_the_entry_point_in_pyproject_makes_norc_find_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed with the entry point its pyproject.toml declares, the plugin is found by
    Norc without ``plugins=``: its three types, owned by the plugin ``example``."""
    project = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["norc"]
    assert entry_points == {"example": "norc_example"}
    # What `pip install` writes, for a distribution whose module is importable already.
    info = tmp_path / "norc_example-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[norc]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path))
    with norc.Norc(f"sqlite:///{tmp_path / 'norc.db'}", log_dir=tmp_path / "logs") as app:
        found = {p.name: p.distribution for p in app.plugins.infos}
        assert found["example"] == "norc-example"
        assert app.registry.task_type_owner("Greet") == "example"
        assert app.registry.queue_type("spool") is SpoolQueue
        assert app.registry.log_store("directory") is DirectoryLogStore
