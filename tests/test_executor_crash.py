"""What a survivor does with the work of an executor that died: the instances it had
started are interrupted (and retried as their task allows); those it had only claimed
go back to their queue as they were, since their start was never recorded.

The executor records each start (``Database.mark_started``) before the body begins;
a claim alone leaves ``started_at`` unset.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

import norc
from norc.abc import Claimant
from norc.control import settle_dead
from norc.status import InstanceStatus
from norc.store.schema import daemons, utcnow
from norc.testing import NoopTask, wait_until
from tests import test_executor_death
from tests.tasks import Hang
from tests.test_control import Daemons

#: A SQLite handle whose heartbeat settings match the daemons' (one fixture for both files).
fast_app = test_executor_death.fast_app


def _dead_executor(app: norc.Norc) -> Claimant:
    """A registered executor that stopped beating long ago."""
    executor_id = app.db.insert_daemon(
        kind="executor", host="gone", pid=1, queue="default", concurrency=1, status="RUNNING"
    )
    return Claimant(executor_id=executor_id, host="gone", pid=1)


def _mark_started(app: norc.Norc, ids: list[int], executor_id: int) -> set[int]:
    with app.db.transaction() as tx:
        return app.db.mark_started(tx, ids, executor_id)


def _stale(app: norc.Norc, daemon_id: int) -> None:
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(daemons)
            .where(daemons.c.id == daemon_id)
            .values(heartbeat=utcnow() - timedelta(hours=1))
        )


def test_claimed_work_that_never_started_goes_back_untouched(app: norc.Norc) -> None:
    """Of three instances a dead executor claimed, the one whose start it recorded is
    INTERRUPTED; the two others are QUEUED again on their first attempt, with no
    INTERRUPTED row and no retry, and the next executor runs them."""
    app.save_task(NoopTask(name="once", max_retries=0))
    ids = app.enqueue_many("once", 3)
    claimant = _dead_executor(app)
    queue = app.open_queue("default")
    try:
        claimed = queue.claim(claimant, 3, timeout=0)
    finally:
        queue.close()
    assert sorted(claimed) == sorted(ids)
    records = app.db.instances_by_id(ids)
    assert all(r.status is InstanceStatus.RUNNING and r.started_at is None for r in records)
    started = claimed[0]
    assert _mark_started(app, [started], claimant.executor_id) == {started}

    _stale(app, claimant.executor_id)
    assert settle_dead(app) == [started]

    by_id = {r.id: r for r in app.db.instances_by_id(ids)}
    assert by_id[started].status is InstanceStatus.INTERRUPTED
    for instance_id in claimed[1:]:
        record = by_id[instance_id]
        assert record.status is InstanceStatus.QUEUED
        assert (record.attempt, record.started_at, record.executor_id) == (1, None, None)
        assert record.error is None
    assert len(app.instances()) == 3  # no retry of anything
    with app.executor(concurrency=2):
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)), 60)
    for instance_id in claimed[1:]:
        record = app.instance(instance_id)
        assert (record.status, record.attempt) == (InstanceStatus.SUCCESS, 1)


def test_a_start_is_not_recorded_for_work_another_executor_owns(app: norc.Norc) -> None:
    """``mark_started`` records only this executor's claims that have not started: a
    survivor that gave an instance back wins over the executor it took for dead."""
    app.save_task(NoopTask(name="t"))
    [instance_id] = app.enqueue_many("t", 1)
    first, second = _dead_executor(app), _dead_executor(app)
    queue = app.open_queue("default")
    try:
        assert queue.claim(first, 1, timeout=0) == [instance_id]
    finally:
        queue.close()
    assert _mark_started(app, [instance_id], second.executor_id) == set()
    _stale(app, first.executor_id)
    settle_dead(app)  # gives it back: QUEUED
    assert _mark_started(app, [instance_id], first.executor_id) == set()
    assert app.instance(instance_id).status is InstanceStatus.QUEUED


def test_work_a_sigkilled_executor_claimed_ahead_runs_once_elsewhere(
    fast_app: norc.Norc, sqlite_url: str, log_dir: Path, tmp_path: Path
) -> None:
    """A `norc executor` process claims no-ops ahead behind a long run and is SIGKILLed:
    the long run is INTERRUPTED, every no-op it had claimed but not started runs once,
    on its first attempt, in the executor that replaces it (max_retries=0)."""
    app = fast_app
    app.save_task(NoopTask(name="warm", max_retries=0))
    app.save_task(Hang(name="long", marker_dir=str(tmp_path), max_retries=0))
    app.save_task(NoopTask(name="after", max_retries=0))
    app.enqueue_many("warm", 300, priority=9)
    long = app.enqueue("long", priority=5)
    after = app.enqueue_many("after", 50, priority=1)
    daemons = Daemons(sqlite_url, log_dir)
    try:
        victim = daemons.start(
            "executor", "-c", "1", "--claim-ahead", "5", "--max-claim-wait", "600"
        )

        def held_unstarted() -> list[int]:
            return [
                r.id
                for r in app.db.instances_by_id(after)
                if r.status is InstanceStatus.RUNNING and r.started_at is None
            ]

        def marked_not_begun() -> bool:
            # Recorded as starting, not begun: marks asked for while short runs went
            # ahead, taken back 20 ms after the long run starts (the documented window).
            return any(
                r.status is InstanceStatus.RUNNING and r.started_at is not None
                for r in app.db.instances_by_id(after)
            )

        wait_until(
            lambda: (
                (tmp_path / f"pid-{long}").exists() and held_unstarted() and not marked_not_begun()
            ),
            60,
        )
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        held = held_unstarted()
        assert held
        daemons.start("executor", "-c", "2")
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(after)), 120)
    finally:
        daemons.stop_all()
    assert app.instance(long).status is InstanceStatus.INTERRUPTED
    records = app.db.instances_by_id(after)
    assert {(r.status, r.attempt) for r in records} == {(InstanceStatus.SUCCESS, 1)}
    assert not any(r.first_attempt_id for r in records)
    # Each ran once: one start in its log.
    for instance_id in held:
        assert app.logs(instance_id).count('event="instance started"') == 1
