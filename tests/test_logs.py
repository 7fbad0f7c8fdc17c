"""Log paths: one log per run, keyed by installation and id, filesystem-safe names,
nothing escapes the log directory."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import norc
from norc.errors import LogNotFound, NorcError
from norc.logs import (
    instance_log_key,
    open_log,
    open_new_log,
    resolve_key,
    safe_component,
)
from norc.plugins.local_logs import LocalLogStore
from norc.status import InstanceStatus
from norc.testing import LogStoreContract, wait_until
from tests.tasks import Echo


class TestLocalLogStoreContract(LogStoreContract):
    """The shared LogStore contract, on the built-in ``local`` store."""

    shared = False  # logs stay on the host that wrote them

    @pytest.fixture
    def make_store(self) -> Callable[[Path], LocalLogStore]:
        """A local store on the log directory it is given."""
        return lambda log_dir: LocalLogStore(settings={}, log_dir=log_dir)


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "..", ".", "/abs/path", "a/../../b", "name with spaces ☃", "...."]
)
def test_hostile_names_stay_inside_the_log_directory(name: str, tmp_path: Path) -> None:
    """Whatever a task is called, its log path is a file under the log directory."""
    key = instance_log_key(str(uuid.uuid4()), "Echo", name, 7)
    path = resolve_key(tmp_path, key)
    assert path.is_relative_to(tmp_path.resolve())
    assert len(key.split("/")) == 5  # <installation>/tasks/<Type>/<name>/<name>-<id>
    assert "/" not in safe_component(name) and not safe_component(name).startswith(".")


@pytest.mark.parametrize("key", ["../outside", "tasks/../../outside", "/etc/passwd", ""])
def test_keys_leaving_the_log_directory_are_refused(key: str, tmp_path: Path) -> None:
    """resolve_key refuses any key that points outside (or at) the log directory."""
    with pytest.raises(NorcError, match="outside the log directory"):
        resolve_key(tmp_path, key)


def test_instance_with_a_hostile_name_logs_inside(sqlite_app: norc.Norc) -> None:
    """A task named like a path traversal runs and logs inside the log directory."""
    app = sqlite_app
    app.save_task(Echo(name="../../etc/passwd", message="contained"))
    instance_id = app.enqueue("../../etc/passwd")
    with app.executor():
        wait_until(lambda: app.instance(instance_id).status.is_final)
    record = app.instance(instance_id)
    assert app.log_path(record).is_relative_to(app.settings.log_dir.resolve())
    assert "contained" in app.logs(instance_id)


def test_missing_log_says_so_plainly(sqlite_app: norc.Norc) -> None:
    """A log that is neither local nor in the log store raises LogNotFound naming both places."""
    app = sqlite_app
    app.save_task(Echo(name="e"))
    instance_id = app.enqueue("e")
    with pytest.raises(LogNotFound, match="not at .* and not in the 'local' log store"):
        app.logs(instance_id)


def _run(app: norc.Norc, task: str, *, isolation: str = "process") -> int:
    instance_id = app.enqueue(task)
    with app.executor(isolation=isolation):  # type: ignore[arg-type]
        wait_until(lambda: app.instance(instance_id).status.is_final, 30)
    assert app.instance(instance_id).status is InstanceStatus.SUCCESS
    return instance_id


def test_the_layout_starts_with_the_installation_id(sqlite_app: norc.Norc) -> None:
    """Instance and daemon keys start with the database's installation id (a uuid)."""
    app = sqlite_app
    installation = app.log_keys.installation
    assert str(uuid.UUID(installation)) == installation
    app.save_task(Echo(name="e"))
    instance_id = _run(app, "e")
    assert app.instance(instance_id).log_key == f"{installation}/tasks/Echo/e/e-{instance_id}"
    assert app.log_keys.daemon("executor", 3) == f"{installation}/executors/executor-3"
    assert app.daemon_log_path("scheduler", 4) == (
        app.settings.log_dir.resolve() / installation / "schedulers" / "scheduler-4"
    )


def test_two_databases_sharing_a_log_dir_keep_their_own_logs(
    db_url: str, tmp_path: Path, log_dir: Path
) -> None:
    """Two databases (this backend's and a SQLite one) share one log directory: each
    runs instance 1 and executor 1, and each reads only its own logs."""
    one = norc.Norc(db_url, log_dir=log_dir)
    two = norc.Norc(f"sqlite:///{tmp_path / 'other.db'}", log_dir=log_dir)
    try:
        assert one.log_keys.installation != two.log_keys.installation
        for app, word in ((one, "alpha"), (two, "bravo")):
            app.save_task(Echo(name="e", message=word))
            assert _run(app, "e") == 1
        assert "alpha" in one.logs(1) and "bravo" not in one.logs(1)
        assert "bravo" in two.logs(1) and "alpha" not in two.logs(1)
        assert one.logs(1).count('event="instance started"') == 1
        assert one.log_path(one.instance(1)) != two.log_path(two.instance(1))
        [ex1] = one.daemons("executor")
        [ex2] = two.daemons("executor")
        assert ex1.id == ex2.id == 1
        assert one.daemon_logs(1).count('event="executor started"') == 1
        assert two.daemon_logs(1).count('event="executor started"') == 1
    finally:
        one.close()
        two.close()


def test_a_new_database_in_place_of_a_deleted_one_starts_its_own_logs(
    tmp_path: Path, log_dir: Path
) -> None:
    """`rm norc.db` and run again: instance 1's log is the new run's only."""
    url = f"sqlite:///{tmp_path / 'norc.db'}"
    for word in ("before", "after"):
        app = norc.Norc(url, log_dir=log_dir)
        app.save_task(Echo(name="e", message=word))
        assert _run(app, "e") == 1
        text = app.logs(1)
        app.close()
        (tmp_path / "norc.db").unlink()
    assert "after" in text and "before" not in text
    assert text.count('event="instance started"') == 1


def test_ids_are_never_reused_after_a_prune(app: norc.Norc) -> None:
    """Pruning the newest instances and daemons never hands their ids out again (SQLite
    uses AUTOINCREMENT), so no run writes under a key an older one had."""
    app.save_task(Echo(name="e"))
    first = _run(app, "e", isolation="thread")
    [executor] = app.daemons("executor")
    counts = app.prune(timedelta(0))
    assert counts["instances"] == 1 and counts["daemons"] == 1
    second = _run(app, "e", isolation="thread")
    assert second > first
    assert max(e.id for e in app.daemons("executor")) > executor.id
    assert app.logs(second).count('event="instance started"') == 1


def test_a_run_never_appends_to_a_log_already_there(sqlite_app: norc.Norc) -> None:
    """A file at a new run's key (a copied database shares the installation id) is moved
    aside, not appended to; the run's log is its own."""
    app = sqlite_app
    app.save_task(Echo(name="e", message="mine"))
    foreign = resolve_key(app.settings.log_dir, app.log_keys.instance("Echo", "e", 1))
    foreign.parent.mkdir(parents=True)
    foreign.write_text("someone else's run\n")
    assert _run(app, "e") == 1
    text = app.logs(1)
    assert "mine" in text and "someone else" not in text
    assert "moved aside" in text
    [moved] = foreign.parent.glob("e-1.displaced-*")
    assert moved.read_text() == "someone else's run\n"


def test_a_copied_database_keeps_the_logs_apart(tmp_path: Path, log_dir: Path) -> None:
    """A copy of a database file shares its installation id; its run of the same id still
    never writes into the original's log, which is moved aside whole."""
    url = f"sqlite:///{tmp_path / 'norc.db'}"
    app = norc.Norc(url, log_dir=log_dir)
    app.save_task(Echo(name="e", message="original"))
    app.close()
    shutil.copy(tmp_path / "norc.db", tmp_path / "copy.db")
    app = norc.Norc(url, log_dir=log_dir)
    assert _run(app, "e", isolation="thread") == 1
    original = app.logs(1)
    app.close()
    copy = norc.Norc(f"sqlite:///{tmp_path / 'copy.db'}", log_dir=log_dir)
    copy.save_task(Echo(name="e", message="copy"), replace=True)
    assert _run(copy, "e", isolation="thread") == 1
    text = copy.logs(1)
    path = copy.log_path(copy.instance(1))
    copy.close()
    assert "copy" in text and "original" not in text
    [aside] = path.parent.glob("e-1.displaced-*")
    assert aside.read_text() == original


def test_open_new_log_uses_an_empty_file_and_moves_a_full_one_aside(tmp_path: Path) -> None:
    """The first open of a run's log: new, or empty (nothing to mix), else a fresh file."""
    path = tmp_path / "a" / "b" / "log"
    with open_new_log(str(path)) as f:  # folders made as needed
        f.write(b"one\n")
    with open_log(str(path)) as f:  # a run's later writes append
        f.write(b"two\n")
    assert path.read_bytes() == b"one\ntwo\n"
    with open_new_log(str(path)) as f:
        f.write(b"three\n")
    assert path.read_bytes().endswith(b"three\n") and b"one" not in path.read_bytes()
    [aside] = path.parent.glob("log.displaced-*")
    assert aside.read_bytes() == b"one\ntwo\n"
    empty = tmp_path / "empty"
    empty.touch()
    with open_new_log(str(empty)) as f:
        f.write(b"x")
    assert empty.read_bytes() == b"x"
    assert list(tmp_path.glob("empty.*")) == []
