"""Queue groups: executors consume several queues in priority order."""

from __future__ import annotations

import pytest

import norc
from norc.errors import DuplicateName, QueueGroupPush, UnknownQueue
from norc.testing import wait_until
from tests.tasks import Outcome


def test_group_is_consumed_in_priority_order(app: norc.Norc) -> None:
    """With one slot, everything waiting on the first queue runs before the second's."""
    app.create_queue("urgent")
    app.create_queue("bulk")
    app.create_queue_group("both", ["urgent", "bulk"])
    app.save_task(Outcome(name="ok"))
    bulk = app.enqueue_many("ok", 3, queue="bulk")
    urgent = app.enqueue_many("ok", 3, queue="urgent")
    with app.executor(queue="both", concurrency=1):
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(bulk + urgent)))
    records = {r.id: r for r in app.db.instances_by_id(bulk + urgent)}
    last_urgent = max(records[i].started_at for i in urgent)  # type: ignore[type-var]
    first_bulk = min(records[i].started_at for i in bulk)  # type: ignore[type-var]
    assert last_urgent <= first_bulk
    assert {records[i].queue for i in urgent} == {"urgent"}


def test_a_queue_may_be_in_several_groups(sqlite_app: norc.Norc) -> None:
    """The same queue serves two groups, in the order each group gives."""
    app = sqlite_app
    app.create_queue("a")
    app.create_queue("b")
    app.create_queue_group("ab", ["a", "b"])
    app.create_queue_group("ba", ["b", "a"])
    assert app.queue_members("ab") == ["a", "b"] and app.queue_members("ba") == ["b", "a"]
    assert app.queue_members("a") == ["a"]


def test_pushing_to_a_group_is_an_error(sqlite_app: norc.Norc) -> None:
    """Enqueueing onto a group names its queues instead."""
    app = sqlite_app
    app.create_queue("a")
    app.create_queue_group("g", ["a"])
    app.save_task(Outcome(name="ok"))
    with pytest.raises(QueueGroupPush, match="'g' is a queue group.*\\(a\\)"):
        app.enqueue("ok", queue="g")


def test_group_names_and_members_are_checked(sqlite_app: norc.Norc) -> None:
    """A group of a missing queue, or a name taken by a queue, is refused."""
    app = sqlite_app
    with pytest.raises(UnknownQueue):
        app.create_queue_group("g", ["missing"])
    with pytest.raises(DuplicateName):
        app.create_queue_group("default", ["default"])
    app.create_queue_group("g", ["default"])
    with pytest.raises(DuplicateName):
        app.create_queue("g")
