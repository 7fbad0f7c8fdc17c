"""The built-in ``dbqueue``: a queue in Norc's own database.

Claiming takes the first unclaimed rows in priority-then-FIFO order with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL, MariaDB >= 10.6), or inside ``BEGIN IMMEDIATE``
on SQLite (one writer at a time, WAL lets readers on), marks them claimed and moves
their instances QUEUED → RUNNING, all in one transaction (on PostgreSQL, usually one
autocommitted statement: see ``DBQueue._claim_in_one``). Rows are deleted only in the
transaction that records the instance's end, so a crashed executor loses nothing.

Idle executors wake promptly: PostgreSQL ``LISTEN``/``NOTIFY`` across processes (on the
connection each queue object keeps for its claims, which run on psycopg directly), an
in-process signal when the enqueuer shares the process; SQLite across processes: a
look every millisecond at ``PRAGMA data_version``, which changes when another connection
commits (a read of a few microseconds that takes no lock), and a claim only then;
MariaDB across processes: a poll that backs off from 2 ms to 50 ms while idle.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from norc.abc import INDEPENDENT_OVERLAP, Claimant, Queue, QueueItem
from norc.pluginmarkers import hookimpl
from norc.registry import PluginRegistry
from norc.status import InstanceStatus
from norc.store.seam import (
    SQLQueueStore,
    Transaction,
    by_ids,
    driver_sql,
    ids_in,
    instances,
    naive_utc,
    queue_items,
    raw_columns,
    running_values,
    tasks,
    unindexed_status_is,
    utcnow,
)

CHANNEL = "norc_queue"
MIN_POLL = 0.002
MAX_POLL = 0.05
#: SQLite: how often an idle claim looks for another connection's commit, for
#: QUIET_AFTER seconds after such a commit last brought work; then less and less often,
#: up to MAX_POLL. An empty claim takes SQLite's write lock; this look takes no lock.
WATCH_TICK = 0.001
QUIET_AFTER = 0.25
#: How long an instance held back by its task's concurrency limit waits to be offered again.
DEFERRAL = timedelta(seconds=0.5)

log = structlog.get_logger("norc.dbqueue")

_PUSH = sa.insert(queue_items)
# Timestamps are bound as naive UTC (schema.naive_utc), as UTCDateTime stores them.
_PUSH_PG = sa.text(
    f"""
    WITH pushed AS (
        INSERT INTO {queue_items.name} (queue, priority, instance_id, enqueued_at, available_at)
        SELECT :queue, u.priority, u.instance_id, :now, u.available_at
        FROM unnest(
            CAST(:priorities AS INTEGER[]), CAST(:ids AS BIGINT[]),
            CAST(:available AS TIMESTAMP[])
        ) AS u(priority, instance_id, available_at)
        RETURNING 1
    )
    SELECT pg_notify(:channel, :queue)
    """
)


def _create_and_push_pg(task_key: str) -> str:
    """PostgreSQL: the whole enqueue of runs of one task as one statement, in psycopg's
    parameter style (it runs on the driver's connection: ``Database.driver_autocommit``).

    ``t`` reads the task by ``task_key`` (``id`` or ``name``); ``created`` inserts the
    instances, only if its overlap policy lets a run be created without looking at the
    others (``abc.INDEPENDENT_OVERLAP``, what ``lifecycle.overlap_verdict`` passes at once);
    ``pushed`` inserts their items. The result is one row per task found (none for an
    unknown one): its policy and the ids pushed, in order; the NOTIFY is sent (at
    commit) only if something was pushed. Timestamps are bound as naive UTC.
    """
    return f"""
        WITH t AS (
            SELECT id, overlap FROM {tasks.name} WHERE {task_key} = %(task)s
        ),
        created AS (
            INSERT INTO {instances.name}
                (task_id, queue, priority, status, attempt, created_at, enqueued_at)
            SELECT t.id, %(queue)s, %(priority)s, %(status)s, 1, %(now)s, %(now)s
            FROM t CROSS JOIN generate_series(1, CAST(%(count)s AS INTEGER))
            WHERE t.overlap = ANY(CAST(%(independent)s AS VARCHAR[]))
            RETURNING id
        ),
        pushed AS (
            INSERT INTO {queue_items.name} (queue, priority, instance_id, enqueued_at)
            SELECT %(queue)s, %(priority)s, created.id, %(now)s FROM created
            RETURNING instance_id
        )
        SELECT t.overlap,
            ARRAY(SELECT instance_id FROM pushed ORDER BY instance_id) AS ids,
            (SELECT pg_notify(%(channel)s, %(queue)s) FROM pushed LIMIT 1) AS notified
        FROM t
        """


_CREATE_AND_PUSH_PG = {key: _create_and_push_pg(key) for key in ("id", "name")}
_MARK_CLAIMED = by_ids(
    lambda json_text: (
        sa.update(queue_items)
        .where(ids_in(queue_items.c.id, json_text=json_text))
        .values(claimed_by=sa.bindparam("by"), claimed_at=sa.bindparam("at"))
    )
)
_UNCLAIM = (
    sa.update(queue_items)
    .where(queue_items.c.instance_id.in_(sa.bindparam("ids", expanding=True)))
    .values(claimed_by=None, claimed_at=None)
)
_RELEASE = by_ids(
    lambda json_text: sa.delete(queue_items).where(
        ids_in(queue_items.c.instance_id, json_text=json_text)
    )
)
# PostgreSQL: one statement text whatever the batch size (an IN list's text changes
# with its length, so psycopg would never prepare it), the ids bound as one array.
_RELEASE_PG = sa.delete(queue_items).where(
    queue_items.c.instance_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger)))
)


class DBQueue(Queue):
    """A queue whose items are rows of ``norc_queue_items``."""

    type_name = "dbqueue"
    #: Its items live in Norc's own database: it uses the SQL tier of the queue seam.
    db: SQLQueueStore

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: PostgreSQL: the connection this object claims on and LISTENs on, kept open:
        #: a claim needs no checkout from a pool and no check-in after it (~0.1 ms of
        #: enqueue->start at 100 enqueues/s), and one connection per claimant, not two.
        self._claimer: Connection | None = None
        #: One claim at a time on ``_claimer`` (a queue object serves one claimant; this
        #: only keeps a second caller, or a close from another thread, from interleaving).
        self._claim_lock = threading.Lock()
        self._interrupted = False
        #: PostgreSQL: the last claim found fewer items than it asked for.
        self._drained = False
        #: SQLite (a file): waits watch for other connections' commits on a connection
        #: kept to read ``PRAGMA data_version``; and when such a commit last brought
        #: work (see _wait_for_commit).
        database = self.db.url.database
        self._watchable = self.db.dialect == "sqlite" and database not in (None, "", ":memory:")
        self._watcher: Any = None
        self._commit_brought_work_at = 0.0
        # The claim query, built once. It reads each task's limits too, so the claim
        # needs no extra round trip unless one of them has a concurrency limit.
        claimable = (
            queue_items.c.queue == sa.bindparam("claim_queue"),
            queue_items.c.claimed_by.is_(None),
            sa.or_(
                queue_items.c.available_at.is_(None),
                queue_items.c.available_at <= sa.bindparam("now"),
            ),
        )
        # queue and claimed_by are fixed by the WHERE clause; naming them lets
        # PostgreSQL walk the claim index in order instead of sorting the backlog.
        in_order = (
            queue_items.c.queue,
            queue_items.c.claimed_by,
            queue_items.c.priority.desc(),
            queue_items.c.id,
        )
        with_limits = (
            sa.select(
                queue_items.c.id,
                queue_items.c.instance_id,
                tasks.c.concurrency_limit,
                tasks.c.overlap,
            )
            .join(instances, instances.c.id == queue_items.c.instance_id)
            .join(tasks, tasks.c.id == instances.c.task_id)
            .where(*claimable)
            .order_by(*in_order)
        )
        select = with_limits.limit(sa.bindparam("limit", type_=sa.Integer, literal_execute=True))
        if self.db.dialect in ("postgresql", "mysql", "mariadb"):
            select = select.with_for_update(skip_locked=True, of=queue_items)
        self._select = select
        #: MariaDB/MySQL: the claim reads the queue table alone, in index order, and the
        #: task limits in a second statement. With the joins (or with queue and
        #: claimed_by in the ORDER BY) InnoDB's plan scans and sorts the whole backlog:
        #: 365 ms a claim with 100k waiting, against ~0.5 ms this way.
        self._limits: sa.Select[Any] | None = None
        if self.db.dialect in ("mysql", "mariadb"):
            self._select = (
                sa.select(queue_items.c.id, queue_items.c.instance_id)
                .where(*claimable)
                .order_by(queue_items.c.priority.desc(), queue_items.c.id)
                .limit(sa.bindparam("limit", type_=sa.Integer, literal_execute=True))
                .with_for_update(skip_locked=True)
            )
            self._limits = (
                sa.select(instances.c.id, tasks.c.concurrency_limit, tasks.c.overlap)
                .join(tasks, tasks.c.id == instances.c.task_id)
                .where(instances.c.id.in_(sa.bindparam("ids", expanding=True)))
            )
        #: PostgreSQL: the whole claim in one statement (see _claim_in_one), compiled
        #: once; it runs on psycopg's connection (0.4 ms less of SQLAlchemy per claim,
        #: measured on the enqueue->start path).
        self._claim_pg = (
            driver_sql(_claim_statement(with_limits), self.db.engine)
            if self.db.dialect == "postgresql"
            else None
        )

    def push(self, items: Sequence[QueueItem], tx: Transaction) -> None:
        """Insert the items in the enqueuing transaction and announce them on commit."""
        if not items:
            return
        now = utcnow()
        if self.db.dialect == "postgresql":
            # One fixed-shape statement for any number of items, NOTIFY included: the
            # NOTIFY is delivered by PostgreSQL at commit, never for a rolled-back enqueue.
            tx.conn.execute(
                _PUSH_PG,
                {
                    "queue": self.name,
                    "now": naive_utc(now),
                    "priorities": [i.priority for i in items],
                    "ids": [i.instance_id for i in items],
                    "available": [naive_utc(i.available_at) for i in items],
                    "channel": CHANNEL,
                },
            )
        else:
            tx.conn.execute(
                _PUSH,
                [
                    {
                        "queue": self.name,
                        "priority": i.priority,
                        "instance_id": i.instance_id,
                        "enqueued_at": now,
                        "available_at": i.available_at,
                    }
                    for i in items
                ],
            )
        name, wakeups = self.name, self.db.wakeups
        tx.after_commit(lambda: wakeups.notify(name))

    def create_and_push(self, task: int | str, count: int, priority: int) -> list[int] | None:
        """PostgreSQL: the enqueue as one autocommitted statement (see
        ``_create_and_push_pg``), one round trip instead of five; other databases, and
        tasks whose overlap policy must look at other runs, take the general path."""
        if self.db.dialect != "postgresql" or count < 1:
            return None
        with self.db.driver_autocommit() as conn:
            row = conn.execute(*self.create_and_push_sql(task, count, priority)).fetchone()
        if row is None or not row[1]:  # an unknown task, or a policy to apply
            return None
        self.db.wakeups.notify(self.name)
        return [int(i) for i in row[1]]

    def create_and_push_sql(
        self, task: int | str, count: int, priority: int
    ) -> tuple[str, dict[str, Any]]:
        """PostgreSQL: the one-statement enqueue's text and parameters, for the driver
        (also what ``bench/queue.py`` runs from bare psycopg as the latency floor)."""
        return _CREATE_AND_PUSH_PG["id" if isinstance(task, int) else "name"], {
            "task": task,
            "queue": self.name,
            "priority": priority,
            "status": InstanceStatus.QUEUED.value,
            "count": count,
            "now": naive_utc(utcnow()),
            "channel": CHANNEL,
            "independent": list(INDEPENDENT_OVERLAP),
        }

    def claim_sql(
        self, claimant: Claimant, limit: int, now: datetime
    ) -> tuple[str, dict[str, Any]]:
        """PostgreSQL: the one-statement claim's text and parameters, for the driver
        (see ``_claim_in_one``; ``bench/queue.py`` runs it from bare psycopg too)."""
        assert self._claim_pg is not None
        sql, fixed = self._claim_pg
        return sql, {
            **fixed,
            "claim_queue": self.name,
            "now": naive_utc(now),
            "limit": limit,
            "by": claimant.executor_id,
            "host": claimant.host,
            "pid": claimant.pid,
        }

    def claim(self, claimant: Claimant, limit: int, timeout: float) -> list[int]:
        """Claim up to ``limit`` instances, waiting up to ``timeout`` for some to arrive."""
        with self._claim_lock:
            return self._claim(claimant, limit, timeout)

    def _claim(self, claimant: Claimant, limit: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        poll = MIN_POLL
        if self._drained and timeout > 0 and self._claimer is not None:
            # The last claim emptied the queue: claiming again at once would cost a round
            # trip, and hold the GIL (the claim's Python before the I/O) just when the
            # worker loop wants it to start what that claim took (0.2 ms of enqueue->start
            # in a timeline). Wait for a NOTIFY first: the claim connection was LISTENing
            # before that claim, so whatever was pushed since has notified it.
            self._drained = False
            self._wait_notify(min(timeout, 0.25))
        woke_by_commit = False
        while True:
            if self._interrupted:  # wake(): the executor has new flags to look at
                self._interrupted = False
                return []
            generation = self.db.wakeups.generation(self.name)
            ids = self._claim_now(claimant, limit)
            if ids and woke_by_commit:
                self._commit_brought_work_at = time.monotonic()
            self._drained = self._claimer is not None and len(ids) < limit
            remaining = deadline - time.monotonic()
            if ids or remaining <= 0:
                return ids
            if self.db.dialect == "postgresql":
                self._wait_notify(min(remaining, 0.25))
            elif self._watchable:
                woke = self._wait_for_commit(generation, remaining)
                if woke is None:
                    return []  # no commit anywhere and nothing due: nothing to claim
                woke_by_commit = woke == "commit"
            else:
                self.db.wakeups.wait(self.name, generation, min(remaining, poll))
                poll = min(poll * 2, MAX_POLL)

    def _claim_now(self, claimant: Claimant, limit: int) -> list[int]:
        now = utcnow()
        if self._claim_pg is not None:
            return self._claim_in_one(claimant, limit, now)
        with self.db.transaction() as tx:
            return self._claim_general(tx, claimant, limit, now)

    def _claim_general(
        self, tx: Transaction, claimant: Claimant, limit: int, now: datetime
    ) -> list[int]:
        """Pick, mark, start: a few statements in the caller's transaction."""
        rows = tx.conn.execute(
            self._select, {"claim_queue": self.name, "now": now, "limit": limit}
        ).all()
        if not rows:
            return []
        mark, bound = self.db.for_ids(_MARK_CLAIMED, [r.id for r in rows])
        tx.conn.execute(mark, {"ids": bound, "by": claimant.executor_id, "at": now})
        wanted = [int(r.instance_id) for r in rows]
        limits = (
            rows if self._limits is None else tx.conn.execute(self._limits, {"ids": wanted}).all()
        )
        limited = any(r.concurrency_limit is not None or r.overlap == "queue" for r in limits)
        won = self._start(tx, wanted, claimant, now, check_limits=limited)
        self.db.prefetch_claimed(tx, won)
        return won

    def _claim_in_one(self, claimant: Claimant, limit: int, now: datetime) -> list[int]:
        """PostgreSQL: pick, start, mark and read the claimed instances in one statement.

        The statement is its own transaction (autocommit): no BEGIN, no separate COMMIT,
        and four statements fewer than the general path; together the largest part of
        the enqueue→start latency. It claims only the items whose instance it started,
        so it can commit on its own. Items it could not start at once (their task has a
        concurrency limit, or the instance stopped being QUEUED) are left unclaimed and
        unlocked; if there were any, the general path runs next, in a transaction.
        """
        conn = self._claim_connection()
        try:
            with self.db.driver_errors(conn.connection):
                rows = _driver(conn).execute(*self.claim_sql(claimant, limit, now)).fetchall()
                started = [r for r in rows if r[0] is not None]  # r[0]: the instance id
                self.db.prefetch_started(conn, started)
        except Exception:
            self._close_claimer()  # perhaps lost: the next claim opens a new one
            raise
        won = [int(r[0]) for r in started]
        picked = int(rows[0][-1]) if rows else 0  # the last column: picked_count
        if len(won) < picked:
            with self.db.transaction() as tx:
                won += self._claim_general(tx, claimant, picked - len(won), now)
        return won

    def _start(
        self,
        tx: Transaction,
        wanted: list[int],
        claimant: Claimant,
        now: datetime,
        *,
        check_limits: bool,
    ) -> list[int]:
        """Move claimed instances to RUNNING; the items of those it cannot are dealt with."""
        won = self.db.mark_running(tx, wanted, claimant, check_limits=check_limits)
        if len(won) != len(wanted):
            lost = set(wanted) - set(won)
            deferred = self.db.still_queued(tx, lost)
            if deferred:
                # Held back by a concurrency limit: offer them again shortly.
                tx.conn.execute(
                    sa.update(queue_items)
                    .where(queue_items.c.instance_id.in_(sorted(deferred)))
                    .values(claimed_by=None, claimed_at=None, available_at=now + DEFERRAL)
                )
            # The rest stopped being QUEUED meanwhile (stopped, settled): their
            # items are stale, drop them rather than leave them claimed.
            self.release(sorted(lost - deferred), tx)
        return won

    def _claim_connection(self) -> Connection:
        """PostgreSQL: the claim connection, opened (and LISTENing) on first use."""
        if self._claimer is None:
            conn = self.db.autocommit_connection()
            try:
                with self.db.connection_errors():
                    conn.exec_driver_sql(f"LISTEN {CHANNEL}")
            except Exception:
                conn.close()
                raise
            self._claimer = conn
        return self._claimer

    def _wait_notify(self, timeout: float) -> None:
        """Block until a NOTIFY (for any queue: a claim that finds nothing is cheap) or
        the timeout."""
        try:
            listener = _driver(self._claim_connection())
            # To the end, not just the first: notifications that came in during claim
            # statements wait in the driver's backlog and are all yielded now. One claim
            # covers them; left there, each would make a claim of its own find nothing.
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                pass
        except Exception as exc:  # noqa: BLE001 - a broken connection degrades to polling
            log.warning("claim connection failed; opening another", queue=self.name, error=str(exc))
            self._close_claimer()
            time.sleep(min(timeout, MAX_POLL))

    def _wait_for_commit(self, generation: int, timeout: float) -> str | None:
        """SQLite: block until this process pushes to the queue (``wakeups``), another
        connection commits to the database (an enqueue from another process, say), one
        of the queue's items becomes due (a retry's backoff, a deferral), or the
        timeout. Returns ``"commit"`` for another connection's commit, ``"other"`` for
        the rest, None for the timeout alone.

        Each look reads ``PRAGMA data_version`` on a kept connection: microseconds and no
        lock, where a claim that finds nothing takes the write lock, which enqueuers
        and recorders wait for. Any commit wakes the claim, not only an enqueue (a
        claim then may find nothing, as before). While commits of other processes bring
        work, a look every WATCH_TICK starts their instances within about a millisecond
        (the backoff from 2 ms this replaced let 100 enqueues/s wait 4 ms at the
        median). Otherwise, QUIET_AFTER seconds after that last happened, the looks
        back off to one per MAX_POLL: an idle executor wakes about 20 times a second,
        and one fed from its own process (woken by ``wakeups``) does not tick every
        millisecond beside the enqueuer, whose Python it would slow down.
        """
        start = time.monotonic()
        try:
            version = self._data_version()
            # Items waiting for their time commit nothing when it comes.
            due = self._seconds_to_next_due()
        except Exception as exc:  # noqa: BLE001 - without the watch, a plain wait
            log.warning(
                "cannot watch for commits; waiting without", queue=self.name, error=str(exc)
            )
            self._close_watcher()
            self.db.wakeups.wait(self.name, generation, min(timeout, MAX_POLL))
            return "other"
        deadline = start + (timeout if due is None else min(timeout, max(due, MIN_POLL)))
        tick = WATCH_TICK
        while (left := deadline - time.monotonic()) > 0:
            if self.db.wakeups.wait(self.name, generation, min(left, tick)):
                return "other"
            try:
                if self._data_version() != version:
                    return "commit"
            except Exception:  # noqa: BLE001 - logged on the next call's first read
                self._close_watcher()
                return "other"
            if time.monotonic() - self._commit_brought_work_at > QUIET_AFTER:
                tick = min(tick * 2, MAX_POLL)
        return "other" if due is not None and due < timeout else None

    def _seconds_to_next_due(self) -> float | None:
        """Seconds until the first unclaimed item of this queue that is not due yet is;
        None if there is none. A read: it takes no lock."""
        with self.db.reading() as conn:
            first = conn.execute(
                sa.select(sa.func.min(queue_items.c.available_at)).where(
                    queue_items.c.queue == self.name, queue_items.c.claimed_by.is_(None)
                )
            ).scalar()
        return None if first is None else (first - utcnow()).total_seconds()

    def _data_version(self) -> int:
        if self._watcher is None:
            self._watcher = self.db.engine.raw_connection()
        # The driver connection is in autocommit (store.connections): no BEGIN, and so
        # no snapshot that would hide other connections' commits.
        row = self._watcher.driver_connection.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _close_watcher(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                self._watcher.close()
            self._watcher = None

    def release(self, instance_ids: Sequence[int], tx: Transaction) -> None:
        """Delete the items of finished instances."""
        if not instance_ids:
            return
        if self.db.dialect == "postgresql":
            tx.conn.execute(_RELEASE_PG, {"ids": list(instance_ids)})
        else:
            release, bound = self.db.for_ids(_RELEASE, instance_ids)
            tx.conn.execute(release, {"ids": bound})

    can_give_back = True

    def give_back(self, instance_ids: Sequence[int], tx: Transaction) -> None:
        """Unclaim the items of instances an executor claimed ahead and did not start."""
        if not instance_ids:
            return
        tx.conn.execute(_UNCLAIM, {"ids": list(instance_ids)})
        name, wakeups = self.name, self.db.wakeups
        tx.after_commit(lambda: wakeups.notify(name))
        if self.db.dialect == "postgresql":
            tx.conn.execute(sa.select(sa.func.pg_notify(CHANNEL, self.name)))

    def count(self) -> int:
        """Unclaimed items in this queue."""
        with self.db.reading() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        queue_items.c.queue == self.name, queue_items.c.claimed_by.is_(None)
                    )
                ).scalar_one()
            )

    def peek(self, limit: int = 10) -> list[int]:
        """The next instance ids in claim order."""
        with self.db.reading() as conn:
            return [
                int(i)
                for i in conn.execute(
                    sa.select(queue_items.c.instance_id)
                    .where(queue_items.c.queue == self.name, queue_items.c.claimed_by.is_(None))
                    .order_by(queue_items.c.priority.desc(), queue_items.c.id)
                    .limit(limit)
                ).scalars()
            ]

    def wake(self) -> None:
        """Make a waiting claim return (PostgreSQL waits are short slices, so within 0.25 s)."""
        self._interrupted = True
        self.db.wakeups.notify(self.name)

    def close(self) -> None:
        """Close the connections kept for claims (PostgreSQL's claim and LISTEN one,
        SQLite's commit watch)."""
        with self._claim_lock:
            self._close_claimer()
            self._close_watcher()

    def _close_claimer(self) -> None:
        if self._claimer is not None:
            with contextlib.suppress(Exception):
                self._claimer.close()
            self._claimer = None


def _driver(conn: Connection) -> Any:
    """The driver's own connection under ``conn`` (psycopg's)."""
    driver = conn.connection.driver_connection
    assert driver is not None  # None only once invalidated, and then it is closed
    return driver


def _claim_statement(with_limits: sa.Select[Any]) -> sa.Select[Any]:
    """The PostgreSQL claim as one statement of data-modifying CTEs.

    (No bound parameter may share a column's name: an UPDATE would take it as a value.)

    ``picked`` is the claim query's rows with their task's limits (items locked,
    skipping those other executors hold; walked in index order, the joins by primary
    key); ``started`` moves to RUNNING those instances that are still QUEUED and whose
    task has no concurrency limit, returning their rows; ``marked`` claims the items of
    those only. The result has a row per started instance (its columns and its task's
    ``t_updated_at``, raw: see ``Database.prefetch_started``), in claim order, each
    with ``picked_count``, the number of items picked; if none started, one row with
    only ``picked_count``.
    """
    picked = (
        with_limits.limit(sa.bindparam("limit", type_=sa.Integer))  # one text, prepared once
        .with_for_update(skip_locked=True, of=queue_items)
        .cte("picked")
    )
    startable = sa.func.array_agg(picked.c.instance_id).filter(
        picked.c.concurrency_limit.is_(None), picked.c.overlap != "queue"
    )
    started = (
        sa.update(instances)
        .where(
            # By primary key from an array computed once, and joined to nothing: with
            # the CTE's row count unknown (and statistics that have not yet seen a new
            # backlog) PostgreSQL otherwise walks every QUEUED instance, or every
            # instance of the task, for each picked row. For the same reason the status
            # test is one the status index cannot serve.
            instances.c.id
            == sa.any_(
                sa.cast(sa.select(startable).scalar_subquery(), postgresql.ARRAY(sa.BigInteger))
            ),
            unindexed_status_is(InstanceStatus.QUEUED),
        )
        .values(running_values())
        .returning(*instances.c)
        .cte("started")
    )
    marked = (
        sa.update(queue_items)
        .where(queue_items.c.instance_id == started.c.id)
        .values(claimed_by=sa.bindparam("by"), claimed_at=sa.bindparam("now"))
        .returning(queue_items.c.id)
        .cte("marked")
    )
    counted = sa.select(sa.func.count().label("picked_count")).select_from(picked).subquery()
    return (
        sa.select(
            *raw_columns([*started.c, tasks.c.updated_at.label("t_updated_at")]),
            counted.c.picked_count,
        )
        .select_from(
            counted.outerjoin(started, sa.true()).outerjoin(tasks, tasks.c.id == started.c.task_id)
        )
        .add_cte(marked)
        .order_by(started.c.priority.desc(), started.c.id)  # the claim order
    )


@hookimpl
def norc_register_types(registry: PluginRegistry) -> None:
    """Provide the ``dbqueue`` queue type."""
    registry.add_queue_type(DBQueue)
