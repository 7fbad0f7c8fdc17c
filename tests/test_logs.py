"""Log paths: seed layout, filesystem-safe names, nothing escapes the log directory."""

from __future__ import annotations

from pathlib import Path

import pytest

import norc
from norc.errors import LogNotFound, NorcError
from norc.logs import instance_log_key, resolve_key, safe_component
from norc.testing import wait_until
from tests.tasks import Echo


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "..", ".", "/abs/path", "a/../../b", "name with spaces ☃", "...."]
)
def test_hostile_names_stay_inside_the_log_directory(name: str, tmp_path: Path) -> None:
    """Whatever a task is called, its log path is a file under the log directory."""
    key = instance_log_key("Echo", name, 7)
    path = resolve_key(tmp_path, key)
    assert path.is_relative_to(tmp_path.resolve())
    assert len(key.split("/")) == 4  # tasks/<Type>/<name>/<name>-<id>, no extra levels
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
