"""Schedulers: firing on time, repetitions, make_up, edits while running, many schedulers."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa

import norc
from norc.errors import InvalidSpec, UnknownQueue
from norc.status import InstanceStatus
from norc.store.schema import schedules
from norc.testing import wait_until
from tests.tasks import Outcome


def _fires(app: norc.Norc, schedule_id: int) -> list[norc.InstanceRecord]:
    return sorted(
        (r for r in app.instances(limit=None) if r.schedule_id == schedule_id),
        key=lambda r: r.fire_time or datetime.min.replace(tzinfo=UTC),
    )


def test_every_second_cron_fires_once_per_second(app: norc.Norc) -> None:
    """A 6-field every-second spec makes one QUEUED instance per second, fire time recorded."""
    app.save_task(Outcome(name="tick"))
    s = app.add_schedule("tick", cron="* * * * * *")
    with app.scheduler():
        wait_until(lambda: len(_fires(app, s.id)) >= 3, 10)
    fires = _fires(app, s.id)
    times = [r.fire_time for r in fires]
    assert all(t is not None and t.microsecond == 0 for t in times)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))  # type: ignore[operator]
    assert all(r.status is InstanceStatus.QUEUED and r.enqueued_at for r in fires)
    assert all(r.enqueued_at >= r.fire_time for r in fires)  # type: ignore[operator]


def test_repetitions_count_enqueued_fires(app: norc.Norc) -> None:
    """every=0.2 with repetitions=3 enqueues exactly three instances, then the schedule ends."""
    app.save_task(Outcome(name="thrice"))
    s = app.add_schedule("thrice", every=0.2, repetitions=3)
    with app.scheduler():
        wait_until(lambda: app.schedule(s.id).next_fire_at is None, 10)
        time.sleep(0.5)
    assert len(_fires(app, s.id)) == 3
    assert app.schedule(s.id).remaining == 0


def _minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


def _simulate_outage(app: norc.Norc, schedule_id: int, minutes: int) -> None:
    """Move a schedule's next fire into the past, as if no scheduler ran for a while."""
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(schedules)
            .where(schedules.c.id == schedule_id)
            .values(next_fire_at=_minute() - timedelta(minutes=minutes))
        )


@pytest.mark.parametrize("make_up", [True, False])
def test_make_up_after_a_ten_minute_outage(app: norc.Norc, make_up: bool) -> None:
    """make_up enqueues every missed fire in order; without it each is recorded SKIPPED."""
    # The expected count holds within one minute: a test started late in a minute would
    # see the next minute's fire too, so start it early in one.
    now = datetime.now(UTC)
    second = now.second + now.microsecond / 1e6
    if second > 40:
        time.sleep(61 - second)
    app.save_task(Outcome(name="minutely"))
    s = app.add_schedule(
        "minutely", every=60, start=_minute() - timedelta(hours=1), make_up=make_up
    )
    _simulate_outage(app, s.id, 10)
    with app.scheduler():
        wait_until(lambda: len(_fires(app, s.id)) >= 10, 10)
        time.sleep(0.3)
    fires = _fires(app, s.id)
    assert len(fires) == 11  # ten minutes of missed fires, and this minute's
    gaps = {b.fire_time - a.fire_time for a, b in itertools.pairwise(fires)}  # type: ignore[operator]
    assert gaps == {timedelta(minutes=1)}
    next_fire = app.schedule(s.id).next_fire_at
    assert next_fire is not None and next_fire > datetime.now(UTC)
    if make_up:
        assert {r.status for r in fires} == {InstanceStatus.QUEUED}
    else:
        assert {r.status for r in fires[:10]} == {InstanceStatus.SKIPPED}
        assert "make_up is off" in (fires[0].error or "")
        # This minute's fire is enqueued only if it is within the misfire grace (5 s).
        queued = [r for r in fires if r.status is InstanceStatus.QUEUED]
        assert app.queue("default").count() == len(queued) <= 1


def test_pause_edit_delete_take_effect_within_a_second(app: norc.Norc) -> None:
    """Pausing, editing and deleting a schedule reach a running scheduler within a second."""
    app.save_task(Outcome(name="busy"))
    s = app.add_schedule("busy", every=0.2)
    with app.scheduler():
        wait_until(lambda: len(_fires(app, s.id)) >= 2, 10)
        app.pause_schedule(s.id)
        time.sleep(1.0)
        paused_count = len(_fires(app, s.id))
        time.sleep(1.0)
        assert len(_fires(app, s.id)) == paused_count
        app.resume_schedule(s.id)
        wait_until(lambda: len(_fires(app, s.id)) >= paused_count + 2, 3)
        app.update_schedule(s.id, every=3600)
        time.sleep(1.0)
        edited_count = len(_fires(app, s.id))
        time.sleep(0.8)
        assert len(_fires(app, s.id)) == edited_count
        app.update_schedule(s.id, every=0.2, start=0)
        wait_until(lambda: len(_fires(app, s.id)) >= edited_count + 2, 3)
        app.delete_schedule(s.id)
        time.sleep(1.0)
        deleted_count = len(_fires(app, s.id))
        time.sleep(0.8)
        assert len(_fires(app, s.id)) == deleted_count
    assert app.schedules() == [] and len(app.schedules(include_deleted=True)) == 1


def test_new_schedule_is_picked_up_without_restart(app: norc.Norc) -> None:
    """A schedule added while a scheduler runs starts firing within about a second."""
    app.save_task(Outcome(name="late"))
    with app.scheduler():
        time.sleep(0.3)
        s = app.add_schedule("late", every=0.1, start=0)
        wait_until(lambda: len(_fires(app, s.id)) >= 1, 2)


def test_two_schedulers_split_the_schedules(app: norc.Norc) -> None:
    """Two schedulers share 40 schedules between them and fire each exactly once per period."""
    app.save_task(Outcome(name="shared"))
    ids = [app.add_schedule("shared", every=0.5).id for _ in range(40)]
    a = app.scheduler().start()
    b = norc.Norc(settings=app.settings).scheduler().start()
    try:
        wait_until(lambda: a.held and b.held and len(a.held | b.held) == 40, 15)
        assert not a.held & b.held
        time.sleep(2)
    finally:
        a.stop()
        b.stop()
    for schedule_id in ids:
        times = [r.fire_time for r in _fires(app, schedule_id)]
        assert len(times) == len(set(times)) >= 3


def test_stopping_releases_leases_for_others(app: norc.Norc) -> None:
    """A scheduler that stops gives its schedules back at once."""
    app.save_task(Outcome(name="t"))
    s = app.add_schedule("t", cron="@daily")
    with app.scheduler() as sch:
        wait_until(lambda: s.id in sch.held, 10)
    assert app.schedule(s.id).claimed_by is None


def _fast(app: norc.Norc, timeout: float = 3.0) -> norc.Norc:
    """A second handle on ``app``'s database whose daemons beat (and lease) every 0.2 s."""
    return norc.Norc(
        settings=attrs.evolve(app.settings, heartbeat_interval=0.2, heartbeat_timeout=timeout)
    )


@contextlib.contextmanager
def _other_scheduler(app: norc.Norc) -> Iterator[tuple[int, threading.Event]]:
    """A scheduler's daemon row, kept beating by a thread (as a live scheduler elsewhere)
    until the event it yields is set."""
    other = app.db.insert_daemon(
        kind="scheduler", host="elsewhere", pid=1, queue=None, concurrency=None, status="RUNNING"
    )
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.1):
            app.db.beat(other)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        yield other, stop
    finally:
        stop.set()
        beater.join()


def _claim(app: norc.Norc, ids: list[int], holder: int) -> None:
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(schedules).where(schedules.c.id.in_(ids)).values(claimed_by=holder)
        )


@pytest.mark.parametrize("how", ["stale", "ended"])
def test_a_lease_lasts_as_long_as_its_holder_is_alive(app: norc.Norc, how: str) -> None:
    """A live scheduler's schedules are never taken; once it is stale or ended, they are."""
    app.save_task(Outcome(name="t"))
    ids = [app.add_schedule("t", cron="@daily").id for _ in range(5)]
    fast = _fast(app, timeout=3.0)
    try:
        with _other_scheduler(app) as (other, stop_beating):
            _claim(app, ids, other)
            with fast.scheduler() as sch:
                time.sleep(1.5)  # several lease rounds and change polls
                assert sch.held == frozenset()
                assert {s.claimed_by for s in app.schedules()} == {other}
                stop_beating.set()
                time.sleep(0.2)  # its last beat has landed
                if how == "ended":
                    app.db.set_daemon(other, status="ENDED", ended_at=datetime.now(UTC))
                else:  # as after kill -9: it stops beating, the row stays RUNNING
                    app.db.set_daemon(other, heartbeat=datetime.now(UTC) - timedelta(seconds=4))
                # Both are taken over at the next lease round, within well under the timeout.
                wait_until(lambda: sch.held == frozenset(ids), 2)
                assert {s.claimed_by for s in app.schedules()} == {sch.id}
    finally:
        fast.close()


def test_lease_rounds_write_no_schedule_rows(app: norc.Norc) -> None:
    """Keeping leases costs no writes: lease rounds only read (the heartbeat renews them)."""
    app.save_task(Outcome(name="t"))
    for _ in range(30):
        app.add_schedule("t", cron="@daily")
    fast = _fast(app)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    sa.event.listen(fast.db.engine, "before_cursor_execute", record)
    try:
        with fast.scheduler() as sch:
            wait_until(lambda: len(sch.held) == 30, 10)
            time.sleep(0.3)
            statements.clear()
            time.sleep(1.5)  # about seven lease rounds
            seen = list(statements)
    finally:
        fast.close()
    rounds = [s for s in seen if "GROUP BY norc_schedules.claimed_by" in s]
    assert len(rounds) >= 4
    writes = [
        s
        for s in seen
        if "norc_schedules" in s and s.split()[0].upper() in ("UPDATE", "INSERT", "DELETE")
    ]
    assert writes == []
    assert all(s.lease_until is None for s in app.schedules())


def test_a_fire_finding_its_schedule_taken_forgets_it(app: norc.Norc) -> None:
    """A schedule another scheduler took over is dropped at its next fire, never fired again."""
    app.save_task(Outcome(name="t"))
    s = app.add_schedule("t", every=0.2, start=0)
    with app.scheduler() as sch:  # lease rounds every 3 s: the fire is what notices
        wait_until(lambda: len(_fires(app, s.id)) >= 2, 10)
        with _other_scheduler(app) as (other, _):
            _claim(app, [s.id], other)
            wait_until(lambda: s.id not in sch.held, 1.5)
            count = len(_fires(app, s.id))
            time.sleep(1.0)
            assert len(_fires(app, s.id)) == count
            assert app.schedule(s.id).claimed_by == other


def test_a_scheduler_with_a_stale_heartbeat_loses_its_schedules(app: norc.Norc) -> None:
    """When a scheduler's heartbeat stops (its loop still running), another takes over and
    every fire still happens exactly once."""
    app.save_task(Outcome(name="t"))
    s = app.add_schedule("t", every=0.2, start=0)
    fast = _fast(app, timeout=1.0)
    a = fast.scheduler().start()
    b = None
    try:
        wait_until(lambda: len(_fires(app, s.id)) >= 2, 10)
        assert a._heartbeat is not None and a.id is not None
        a._heartbeat.stop()  # as if its heartbeat thread hung
        app.db.set_daemon(a.id, heartbeat=datetime.now(UTC) - timedelta(seconds=5))
        b = norc.Norc(settings=fast.settings).scheduler().start()
        wait_until(lambda: s.id in b.held and s.id not in a.held, 5)
        count = len(_fires(app, s.id))
        wait_until(lambda: len(_fires(app, s.id)) >= count + 3, 5)
    finally:
        a.stop()
        if b is not None:
            b.stop()
        fast.close()
    times = [r.fire_time for r in _fires(app, s.id)]
    assert len(times) == len(set(times))


def test_invalid_schedules_are_refused(app: norc.Norc) -> None:
    """Bad specs, zones, periods and queues are clear errors before anything is stored."""
    app.save_task(Outcome(name="t"))
    with pytest.raises(InvalidSpec, match="minute 61 out of range 0-59"):
        app.add_schedule("t", cron="61 * * * *")
    with pytest.raises(InvalidSpec, match="Mars/Base"):
        app.add_schedule("t", cron="@daily", tz="Mars/Base")
    with pytest.raises(InvalidSpec, match="every"):
        app.add_schedule("t", every=0)
    with pytest.raises(InvalidSpec, match="either"):
        app.add_schedule("t", cron="@daily", every=5)
    with pytest.raises(UnknownQueue):
        app.add_schedule("t", cron="@daily", queue="nope")
    assert app.schedules() == []


def test_predefined_schedule_shows_its_name(app: norc.Norc) -> None:
    """A DAILY schedule keeps a fixed random time and reports itself as DAILY."""
    app.save_task(Outcome(name="t"))
    s = app.add_schedule("t", cron="daily")
    assert s.label == "DAILY" and s.spec.startswith("DAILY ")
    assert app.schedule(s.id).next_fire_at == s.next_fire_at


SCHEDULER_SCRIPT = """
import sys, norc
norc.Norc(sys.argv[1], log_dir=sys.argv[2]).scheduler(install_signal_handlers=True).run()
"""


@pytest.mark.slow
def test_three_schedulers_one_killed_every_fire_exactly_once(
    app: norc.Norc, db_url: str, tmp_path: Path
) -> None:
    """200 every-second schedules, 3 scheduler processes, one SIGKILLed: no fire lost or doubled."""
    app.save_task(Outcome(name="sec"))
    for _ in range(200):
        app.add_schedule("sec", cron="* * * * * *", make_up=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "NORC_HEARTBEAT_INTERVAL": "0.5",
        "NORC_HEARTBEAT_TIMEOUT": "3",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCHEDULER_SCRIPT, db_url, str(tmp_path / "logs")],
            env=env,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        time.sleep(12)
        procs[0].send_signal(signal.SIGKILL)
        time.sleep(14)
    finally:
        for p in procs[1:]:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.communicate(timeout=60)
    assert procs[1].returncode == procs[2].returncode == 0
    by_schedule: dict[int | None, list[datetime]] = defaultdict(list)
    for r in app.instances(limit=None):
        assert r.status is InstanceStatus.QUEUED
        by_schedule[r.schedule_id].append(r.fire_time)  # type: ignore[arg-type]
    assert len(by_schedule) == 200
    for times in by_schedule.values():
        times.sort()
        assert len(times) == len(set(times))  # none doubled
        span = int((times[-1] - times[0]).total_seconds()) + 1
        assert len(times) == span  # none missing: every second from first to last
        assert span >= 22
    # The survivors took over the dead scheduler's share.
    assert all(s.claimed_by is None for s in app.schedules())


def test_a_scheduler_declared_dead_while_stalled_ends_itself(app: norc.Norc) -> None:
    """A scheduler whose row another daemon settled as dead stops instead of lingering."""
    app.save_task(Outcome(name="t"))
    app.add_schedule("t", every=0.2, start=0)
    fast = _fast(app, timeout=1.0)
    scheduler = fast.scheduler().start()
    try:
        wait_until(lambda: bool(scheduler.held), 5)
        assert scheduler._heartbeat is not None and scheduler.id is not None
        scheduler._heartbeat.stop()  # stalled: no more beats
        settled_at = datetime.now(UTC) - timedelta(seconds=5)
        app.db.set_daemon(scheduler.id, heartbeat=settled_at, ended_at=settled_at, status="KILLED")
        assert scheduler.wait(5)  # it noticed at its next lease round and ended
    finally:
        scheduler.stop()
        fast.close()
    row = app.db.daemons(daemon_id=scheduler.id)[0]
    assert row.status == "KILLED"  # the verdict stays
    assert row.ended_at is not None and abs((row.ended_at - settled_at).total_seconds()) < 0.01
