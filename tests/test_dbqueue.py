"""The built-in DBQueue: the queue contract on every database, and exactly-once across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import norc
from norc.abc import Claimant
from norc.errors import UnknownTask
from norc.store.connections import normalise_url
from norc.store.schema import instances, queue_items, utcnow
from norc.testing import NoopTask, QueueContract, wait_until


def count_claims(queue: norc.Queue, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets one item per claim statement (transaction) the queue object runs."""
    claims: list[int] = []
    claim_now = queue._claim_now  # type: ignore[attr-defined]

    def counted(*args: Any) -> list[int]:
        claims.append(1)
        return list(claim_now(*args))

    monkeypatch.setattr(queue, "_claim_now", counted)
    return claims


class TestDBQueue(QueueContract):
    """DBQueue honours the Queue contract."""

    @pytest.fixture
    def make_queue(self, app: norc.Norc) -> Callable[[str], norc.Queue]:
        def make(name: str) -> norc.Queue:
            app.create_queue(name, type="dbqueue")
            return app.queue(name)

        return make


#: A waiting claim's timeout in the tests of wake-ups: an hour, so that only the
#: mechanism under test can make it return while the test waits for it.
WAKE_TIMEOUT = 3600.0


def woken_claim(queue: norc.Queue, who: Claimant, limit: int) -> list[int]:
    """Claim with :data:`WAKE_TIMEOUT` in a thread and await its answer: a claim that
    returns was woken (or found work); one left to its timeout never returns here and the
    wait fails. No bound on how fast a busy machine must be is asserted."""
    answer: list[list[int]] = []
    thread = threading.Thread(
        target=lambda: answer.append(queue.claim(who, limit, WAKE_TIMEOUT)),
        daemon=True,
    )
    thread.start()
    wait_until(lambda: bool(answer), 120)
    return answer[0]


def test_claims_after_one_that_emptied_the_queue_take_new_instances_at_once(
    app: norc.Norc,
) -> None:
    """After a claim that found fewer instances than it asked for, the next claims take
    what is pushed before or while they wait within milliseconds, not a polling slice."""
    from norc.abc import Claimant

    app.save_task(NoopTask(name="n"))
    queue, who = app.queue("default"), Claimant(executor_id=7, host="h", pid=1)
    assert queue.claim(who, 5, 0.05) == []  # on PostgreSQL, this opens the LISTEN connection
    first = app.enqueue("n")
    assert queue.claim(who, 5, 1.0) == [first]  # fewer than asked: the queue is empty now
    pushed_between = app.enqueue_many("n", 2)
    assert sorted(woken_claim(queue, who, 5)) == pushed_between
    pushed_during: list[int] = []
    timer = threading.Timer(0.05, lambda: pushed_during.append(app.enqueue("n")))
    timer.start()
    claimed = woken_claim(queue, who, 5)
    timer.join()
    assert claimed == pushed_during


def test_notifications_that_came_during_a_claim_wake_one_claim_not_one_each(
    app: norc.Norc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the claim connection also LISTENs: the NOTIFYs of 50 enqueues that it
    read while claiming wake the next wait once, and the claim then waits out its
    timeout instead of claiming again for every one of them."""
    from norc.abc import Claimant

    if app.db.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    app.save_task(NoopTask(name="n"))
    queue, who = app.open_queue("default"), Claimant(executor_id=7, host="h", pid=1)
    assert queue.claim(who, 100, 0.0) == []  # opens the claim connection, LISTENing
    ids = [app.enqueue("n") for _ in range(50)]  # 50 NOTIFYs, read by the next claim
    assert sorted(queue.claim(who, 100, 0.0)) == ids
    claims = count_claims(queue, monkeypatch)
    started = time.monotonic()
    assert queue.claim(who, 100, 0.5) == []
    assert time.monotonic() - started >= 0.5
    assert len(claims) <= 3  # woken once (all 50 at once), then the wait ran out
    queue.close()


def test_a_claim_connection_the_server_closed_while_idle_is_replaced(
    app: norc.Norc, db_url: str
) -> None:
    """On PostgreSQL a queue object keeps its claim connection open; killed by the server
    while the claimant waited (a restart, an idle timeout), it is opened again and the
    next instance is claimed without an error."""
    from norc.abc import Claimant

    if app.db.dialect != "postgresql":
        pytest.skip("only PostgreSQL claims on a connection of its own")
    app.save_task(NoopTask(name="n"))
    killer = sa.create_engine(normalise_url(db_url))

    def claiming() -> set[int]:
        """Backends of this database whose last statement was a claim."""
        with killer.begin() as conn:
            return set(
                conn.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND query LIKE 'WITH picked AS%'"
                    )
                ).scalars()
            )

    others = claiming()  # queue objects of earlier tests, perhaps not yet collected
    queue, who = app.open_queue("default"), Claimant(executor_id=7, host="h", pid=1)
    assert queue.claim(who, 5, 0.0) == []  # opens it; its last statement is the claim
    [pid] = claiming() - others
    with killer.begin() as conn:
        killed = conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).all()
    killer.dispose()
    assert killed == [(True,)]
    first = app.enqueue("n")
    assert queue.claim(who, 5, 2.0) == [first]
    second = app.enqueue("n")
    assert queue.claim(who, 5, 2.0) == [second]
    queue.close()


def test_an_idle_sqlite_claim_watches_for_commits_without_taking_the_write_lock(
    sqlite_app: norc.Norc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that waits on an empty SQLite queue claims (BEGIN IMMEDIATE) when it starts
    and when its timeout ends, and in between only looks for other connections' commits,
    which takes no lock."""
    from norc.abc import Claimant

    queue, who = sqlite_app.open_queue("default"), Claimant(executor_id=7, host="h", pid=1)
    claims = count_claims(queue, monkeypatch)
    started = time.monotonic()
    assert queue.claim(who, 5, 0.5) == []
    assert time.monotonic() - started >= 0.5
    assert len(claims) <= 2  # polling from 2 ms up to 50 ms made 15 claims here
    queue.close()


def test_a_sqlite_claim_wakes_when_another_handle_enqueues(
    sqlite_app: norc.Norc, sqlite_url: str, log_dir: Path
) -> None:
    """Another handle on the same SQLite file (as another process would be) has no way to
    signal this one: its commit is seen and the waiting claim takes its instance at once,
    not when the claim's timeout ends."""
    from norc.abc import Claimant

    sqlite_app.save_task(NoopTask(name="n"))
    queue, who = sqlite_app.open_queue("default"), Claimant(executor_id=7, host="h", pid=1)
    other = norc.Norc(sqlite_url, log_dir=log_dir)
    pushed: list[int] = []
    timer = threading.Timer(0.2, lambda: pushed.append(other.enqueue("n")))
    timer.start()
    claimed = woken_claim(queue, who, 5)  # woken by the commit, not the timeout
    timer.join()
    assert claimed == pushed
    other.close()
    queue.close()


def test_a_waiting_claim_takes_an_item_when_its_delay_ends(app: norc.Norc) -> None:
    """An item that waits for its time (a retry's backoff) is claimed when that time comes,
    by a claim already waiting, although nothing is committed at that moment."""
    from datetime import timedelta

    from norc.abc import Claimant

    app.save_task(NoopTask(name="n"))
    queue, who = app.open_queue("default"), Claimant(executor_id=7, host="h", pid=1)
    delayed = app.enqueue("n")
    with app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(queue_items)
            .where(queue_items.c.instance_id == delayed)
            .values(available_at=utcnow() + timedelta(seconds=0.4))
        )
    started = time.monotonic()
    assert woken_claim(queue, who, 5) == [delayed]  # woken by the delay's end
    assert time.monotonic() - started >= 0.3  # not before it
    queue.close()


def test_enqueue_creates_queued_first_attempts_with_their_items_in_order(app: norc.Norc) -> None:
    """enqueue_many returns ascending ids of QUEUED first attempts, stamped and prioritised,
    each with a queue item of its priority, claimable in that order."""
    from norc.abc import Claimant

    app.save_task(NoopTask(name="n"))
    before = utcnow()
    ids = app.enqueue_many("n", 3, priority=5)
    by_id = app.enqueue(app.task("n").id)  # a task named by id takes the same path
    assert ids == sorted(ids) and by_id > ids[-1]
    for record in app.db.instances_by_id([*ids, by_id]):
        assert record.status is norc.InstanceStatus.QUEUED and record.attempt == 1
        assert record.enqueued_at is not None and record.enqueued_at >= before
        assert record.created_at == record.enqueued_at and record.task_name == "n"
    with app.db.reading() as conn:
        items = conn.execute(sa.select(queue_items.c.instance_id, queue_items.c.priority)).all()
    assert sorted(items) == [(i, 5) for i in ids] + [(by_id, 0)]
    claimed = app.queue("default").claim(Claimant(executor_id=7, host="h", pid=1), 4, 1.0)
    assert claimed == [*ids, by_id]


def test_an_enqueue_is_one_statement_on_postgresql_and_declined_elsewhere(
    app: norc.Norc, tmp_path: Path
) -> None:
    """On PostgreSQL dbqueue creates and pushes the instances in one statement (one round
    trip); on other databases it declines, writing nothing, and the general path runs."""
    app.save_task(NoopTask(name="n"))
    queue = app.queue("default")  # the handle reads a queue's row once, on first use
    statements: list[str] = []
    sa.event.listen(app.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    if app.db.dialect == "postgresql":
        import psycopg

        # It runs on psycopg's connection, past SQLAlchemy's events: count what the
        # client sends instead (the autocommit pool's one connection is traced).
        trace = tmp_path / "trace"
        with trace.open("w") as out:
            with app.db.driver_autocommit() as conn:
                conn.pgconn.trace(out.fileno())
                conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            ids = app.enqueue_many("n", 2)
            with app.db.driver_autocommit() as conn:
                conn.pgconn.untrace()
        sent = [line.split("\t") for line in trace.read_text().splitlines()]
        executed = [m for m in sent if m[0] == "F" and m[2] in ("Execute", "Query")]
        assert len(executed) == 1 and statements == []
    else:
        ids = app.enqueue_many("n", 2)
        assert queue.create_and_push("n", 1, 0) is None
        assert app.db.count_by_status() == {"QUEUED": 2}
    assert len(ids) == 2 and queue.count() == 2


def test_an_overlap_policy_that_looks_at_other_runs_is_applied_on_every_backend(
    app: norc.Norc,
) -> None:
    """overlap='skip' records a second run SKIPPED with no queue item, and an unknown task
    raises UnknownTask writing nothing, whichever way the queue enqueues."""
    app.save_task(NoopTask(name="single", overlap="skip"))
    first = app.enqueue("single")
    second = app.enqueue("single")
    assert app.instance(first).status is norc.InstanceStatus.QUEUED
    assert app.instance(second).status is norc.InstanceStatus.SKIPPED
    assert f"instance {first} is still active" in (app.instance(second).error or "")
    assert app.queue("default").peek() == [first]
    with pytest.raises(UnknownTask):
        app.enqueue("ghost")
    assert app.db.count_by_status() == {"QUEUED": 1, "SKIPPED": 1}


def test_claimed_unfinished_instance_stays_visible(app: norc.Norc) -> None:
    """A claimed instance keeps its queue row, marked with the claimant, until it ends."""
    from norc.abc import Claimant

    app.save_task(NoopTask(name="n"))
    instance_id = app.enqueue("n")
    [claimed] = app.queue("default").claim(Claimant(executor_id=7, host="h", pid=1), 1, 1.0)
    assert claimed == instance_id
    with app.db.reading() as conn:
        row = conn.execute(sa.select(queue_items)).mappings().one()
        status = conn.execute(sa.select(instances.c.status)).scalar_one()
    assert row["instance_id"] == instance_id and row["claimed_by"] == 7
    assert status == "RUNNING"


EXECUTOR_SCRIPT = """
import sys, norc
app = norc.Norc(sys.argv[1], log_dir=sys.argv[2])
app.executor(queue="default", concurrency=int(sys.argv[3]), install_signal_handlers=True).run()
"""


@pytest.mark.slow
def test_four_executor_processes_run_each_instance_exactly_once(
    app: norc.Norc, db_url: str, tmp_path: Path
) -> None:
    """2,000 instances enqueued at once into 4 waiting executor processes: every one runs
    once, none twice, and each executor takes a share."""
    app.save_task(NoopTask(name="noop"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXECUTOR_SCRIPT, db_url, str(tmp_path / "logs"), "4"],
            env=env,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    ids: list[int] = []
    try:
        # All four up first: they start seconds apart on two cores, and the first two
        # can drain 2,000 no-ops before the last one's first claim.
        wait_until(
            lambda: [d.status for d in app.db.daemons(kind="executor")] == ["RUNNING"] * 4, 120
        )
        ids = app.enqueue_many("noop", 2000)
        wait_until(lambda: app.db.count_by_status(ids).get("SUCCESS", 0) == len(ids), 240, 0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()[-2000:]
    records = app.db.instances_by_id(ids)
    assert len(records) == 2000
    assert all(r.status is norc.InstanceStatus.SUCCESS for r in records)
    # Each instance was claimed by exactly one executor, and each executor took a share.
    by_executor: dict[int | None, int] = {}
    for r in records:
        by_executor[r.executor_id] = by_executor.get(r.executor_id, 0) + 1
    assert len(by_executor) == 4 and None not in by_executor
    with app.db.reading() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(queue_items)).scalar() == 0
    # Every executor ended cleanly after SIGINT (STOP).
    assert {d.status for d in app.db.daemons(kind="executor")} == {"ENDED"}


def test_claims_find_instances_by_primary_key_whatever_the_backlog(
    sqlite_app: norc.Norc,
) -> None:
    """No statement of a claim walks the status index or scans a table: with thousands of
    QUEUED instances either would make every claim read the whole backlog."""
    from norc.abc import Claimant

    app = sqlite_app
    app.save_task(NoopTask(name="n"))
    app.enqueue_many("n", 2000)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "norc_instances" in statement and not statement.startswith("EXPLAIN"):
            statements.append((statement, params))

    sa.event.listen(app.db.engine, "before_cursor_execute", capture)
    try:
        assert len(app.queue("default").claim(Claimant(executor_id=7, host="h", pid=1), 8, 1.0))
    finally:
        sa.event.remove(app.db.engine, "before_cursor_execute", capture)
    assert any(s.startswith("UPDATE norc_instances") for s, _ in statements)
    with app.db.reading() as conn:
        for statement, params in statements:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
            assert not any("status" in str(step[-1]) for step in plan), (statement, plan)
            assert not any(str(step[-1]).startswith("SCAN norc_") for step in plan), plan
