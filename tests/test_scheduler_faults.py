"""Schedulers after downtime and under faults: catch-up never wedges, and one schedule's
fault never stops another (each case on every backend)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import norc
from norc.abc import QueueItem
from norc.plugins.dbqueue import DBQueue
from norc.registry import PluginRegistry
from norc.reports import daemons, schedules_
from norc.status import InstanceStatus
from norc.store.connections import Transaction
from norc.store.schema import schedules, tasks
from norc.testing import wait_until
from tests.tasks import Outcome


def _statuses(app: norc.Norc, schedule_id: int) -> Counter[InstanceStatus]:
    return Counter(r.status for r in app.instances(limit=None) if r.schedule_id == schedule_id)


def _set_next_fire(app: norc.Norc, schedule_id: int, when: datetime) -> None:
    """As if no scheduler ran since ``when``: the schedule's next fire lies there (and an
    interval schedule started then, so its later fires follow from it)."""
    values: dict[str, object] = {"next_fire_at": when}
    if app.schedule(schedule_id).kind == "simple":
        values["start_at"] = when
    with app.db.transaction() as tx:
        tx.conn.execute(sa.update(schedules).where(schedules.c.id == schedule_id).values(values))


def _ago(seconds: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds)


def test_a_restart_after_downtime_records_missed_fires_and_keeps_firing(app: norc.Norc) -> None:
    """The reported wedge: missed fires (SKIPPED) and on-time fires (QUEUED) of one schedule
    planned together are inserted together, and the schedule goes on firing afterwards."""
    app.save_task(Outcome(name="tick"))
    cron = app.add_schedule("tick", cron="*/2 * * * * *")
    every = app.add_schedule("tick", every=1)
    _set_next_fire(app, cron.id, _ago(20))
    _set_next_fire(app, every.id, _ago(20))
    with app.scheduler() as sch:
        wait_until(lambda: _statuses(app, cron.id)[InstanceStatus.QUEUED] >= 5, 30)
        wait_until(lambda: _statuses(app, every.id)[InstanceStatus.QUEUED] >= 8, 30)
        assert sch.shown_status is norc.status.DaemonStatus.RUNNING
    for schedule in (cron, every):
        counts = _statuses(app, schedule.id)
        assert counts[InstanceStatus.SKIPPED] >= 5  # the fires more than 5 s late
        skipped = [
            r
            for r in app.instances(limit=None)
            if r.schedule_id == schedule.id and r.status is InstanceStatus.SKIPPED
        ]
        assert all(r.error and r.error.startswith("missed: due at") for r in skipped)
        assert all(r.ended_at is not None and r.enqueued_at is None for r in skipped)


def test_make_up_enqueues_every_missed_fire(app: norc.Norc) -> None:
    """With make_up, the same downtime enqueues each missed fire and records none SKIPPED."""
    app.save_task(Outcome(name="tick"))
    s = app.add_schedule("tick", every=1, make_up=True)
    _set_next_fire(app, s.id, _ago(20))
    with app.scheduler():
        wait_until(lambda: _statuses(app, s.id)[InstanceStatus.QUEUED] >= 21, 30)
    counts = _statuses(app, s.id)
    assert counts[InstanceStatus.SKIPPED] == 0
    fires = sorted(r.fire_time for r in app.instances(limit=None) if r.schedule_id == s.id)
    assert len(fires) == len(set(fires))  # each fire once


@pytest.mark.parametrize("make_up", [False, True])
def test_repetitions_running_out_inside_a_catch_up(app: norc.Norc, make_up: bool) -> None:
    """Repetitions count enqueued fires only: a catch-up stops at the last one, and the
    schedule finishes there, whether missed fires are made up or recorded SKIPPED."""
    app.save_task(Outcome(name="few"))
    s = app.add_schedule("few", every=1, repetitions=3, make_up=make_up)
    _set_next_fire(app, s.id, _ago(20))
    with app.scheduler():
        wait_until(lambda: app.schedule(s.id).next_fire_at is None, 30)
    counts = _statuses(app, s.id)
    assert counts[InstanceStatus.QUEUED] == 3
    assert app.schedule(s.id).remaining == 0
    if make_up:
        assert counts[InstanceStatus.SKIPPED] == 0
    else:  # the fires more than the 5 s grace late (about 15), none counted as repetitions
        assert counts[InstanceStatus.SKIPPED] >= 10


def test_a_paused_schedule_stays_silent_through_a_catch_up(app: norc.Norc) -> None:
    """A schedule paused during the downtime fires nothing; its neighbour catches up."""
    app.save_task(Outcome(name="tick"))
    paused = app.add_schedule("tick", every=1)
    live = app.add_schedule("tick", every=1)
    app.pause_schedule(paused.id)
    _set_next_fire(app, paused.id, _ago(20))
    _set_next_fire(app, live.id, _ago(20))
    with app.scheduler():
        wait_until(lambda: _statuses(app, live.id)[InstanceStatus.QUEUED] >= 6, 30)
    assert _statuses(app, paused.id) == Counter()


def test_a_schedule_whose_task_is_gone_is_set_aside_and_others_fire(app: norc.Norc) -> None:
    """A schedule whose task row was deleted is set aside with that reason, visible in the
    schedules report and the scheduler's status; the other schedules keep firing."""
    app.save_task(Outcome(name="doomed"))
    app.save_task(Outcome(name="fine"))
    doomed = app.add_schedule("doomed", every=1)
    fine = app.add_schedule("fine", every=1)
    _set_next_fire(app, doomed.id, _ago(3))
    _set_next_fire(app, fine.id, _ago(3))
    _delete_behind_the_foreign_key(app, "doomed")
    with app.scheduler() as sch:
        wait_until(lambda: doomed.id in sch.set_aside, 30)
        wait_until(lambda: _statuses(app, fine.id)[InstanceStatus.QUEUED] >= 5, 30)
        assert "no longer exists" in sch.set_aside[doomed.id]
        wait_until(lambda: _shown(app, sch.id)["status"] == "ERROR", 30)
        assert f"schedule {doomed.id} set aside" in _shown(app, sch.id)["error"]
    assert _statuses(app, doomed.id) == Counter()


def _delete_behind_the_foreign_key(app: norc.Norc, task_name: str) -> None:
    """Delete a task row its schedule still names (a partial restore, a hand-made repair):
    the foreign key would refuse it, so it is switched off for this one session."""
    if app.db.dialect == "sqlite":  # a plain connection enforces no foreign key
        conn = sqlite3.connect(str(app.db.engine.url.database))
        with conn:
            conn.execute("DELETE FROM norc_tasks WHERE name = ?", (task_name,))
        conn.close()
        return
    off, on = {
        "postgresql": (
            "SET session_replication_role = replica",
            "SET session_replication_role = DEFAULT",
        ),
        "mysql": ("SET FOREIGN_KEY_CHECKS = 0", "SET FOREIGN_KEY_CHECKS = 1"),
    }[app.db.dialect]
    with app.db.engine.connect() as server:
        server.exec_driver_sql(off)
        server.execute(sa.delete(tasks).where(tasks.c.name == task_name))
        server.exec_driver_sql(on)
        server.commit()


class RefusingQueue(DBQueue):
    """A queue type whose push always raises: a plugin with a bug."""

    type_name = "refusing"

    def push(self, items: Sequence[QueueItem], tx: Transaction) -> None:
        raise RuntimeError("this queue refuses every push")


class RefusingPlugin:
    @norc.hookimpl
    def norc_register_types(self, registry: PluginRegistry) -> None:
        registry.add_queue_type(RefusingQueue)


def _shown(app: norc.Norc, scheduler_id: int | None) -> dict[str, object]:
    """What `norc status` shows for this scheduler."""
    return next(d for d in daemons(app, "scheduler") if d["id"] == scheduler_id)


def test_a_plugin_raising_sets_one_schedule_aside_until_resumed(
    db_url: str, log_dir: object
) -> None:
    """A queue plugin that raises is not a database outage: the schedules due with it fire,
    its own schedule is set aside with the plugin's error (report state 'error', scheduler
    ERROR with the reason), and resuming it after the fix clears the error."""
    app = norc.Norc(db_url, log_dir=log_dir, plugins=[RefusingPlugin()])  # type: ignore[arg-type]
    try:
        app.create_queue("bad", type="refusing")
        app.save_task(Outcome(name="tick"))
        bad = app.add_schedule("tick", every=1, queue="bad")
        good = [app.add_schedule("tick", every=1) for _ in range(3)]
        start = _ago(2)
        for s in (bad, *good):  # all due at the same moment: one transaction
            _set_next_fire(app, s.id, start)
        with app.scheduler() as sch:
            wait_until(lambda: bad.id in sch.set_aside, 30)
            for s in good:
                wait_until(lambda s=s: _statuses(app, s.id)[InstanceStatus.QUEUED] >= 3, 30)
            assert "this queue refuses every push" in sch.set_aside[bad.id]
            row = next(r for r in schedules_(app) if r["id"] == bad.id)
            assert row["state"] == "error" and "refuses every push" in str(row["error"])
            wait_until(lambda: _shown(app, sch.id)["status"] == "ERROR", 30)
            assert "refuses every push" in str(_shown(app, sch.id)["error"])
            # The operator fixes the queue (here: points the schedule at a working one).
            app.update_schedule(bad.id, queue="default")
            wait_until(lambda: _statuses(app, bad.id)[InstanceStatus.QUEUED] >= 1, 30)
            wait_until(lambda: _shown(app, sch.id)["status"] == "RUNNING", 30)
            assert _shown(app, sch.id)["error"] is None
            assert app.schedule(bad.id).error is None
    finally:
        app.close()
