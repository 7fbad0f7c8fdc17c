"""One database's queries: tasks, instances, queues and daemons.

Everything that reads or writes Norc's tables goes through :class:`Database` (built on
:class:`~norc.store.connections.Connections`, which knows how to connect), so the SQL
for a concept lives in one place; schedules' SQL is in :mod:`norc.store.schedules`. It
uses SQLAlchemy Core (no ORM): the hot paths (claiming, finishing) are a handful of
statements per batch.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from norc.errors import (
    DaemonSettled,
    DuplicateName,
    UnknownInstance,
    UnknownQueue,
    UnknownTask,
)
from norc.records import DEFAULT_RETRY_ON, DaemonRecord, InstanceRecord, TaskRecord
from norc.status import FINAL_INSTANCE_STATUSES, InstanceStatus
from norc.store.connections import Connections
from norc.store.connections import Transaction as Transaction  # where plugins import it
from norc.store.schedules import ScheduleStore
from norc.store.schema import (
    daemons,
    instances,
    naive_utc,
    queue_groups,
    queues,
    tasks,
    utcnow,
)
from norc.store.wakeups import Wakeups

if TYPE_CHECKING:
    from norc.records import Claimant


class Database(Connections):
    """A handle on one Norc database: the SQL of tasks, instances, queues and daemons
    (and, in :attr:`schedules`, of schedules); thread-safe, owns its connection pools."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        #: task id -> (its raw updated_at, its record), for :meth:`claimed_work`.
        self._claimed_tasks: dict[int, tuple[Any, TaskRecord]] = {}
        #: SQLite with JSON built in (3.38+): a batch of outcomes is written in one
        #: statement, and statements built by :func:`by_ids` take their ids as one
        #: JSON text.
        self.sqlite_json = self.dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 38)
        #: Per thread: what a claim transaction read for the next claimed_work.
        self._prefetched = threading.local()
        #: In-process wake-ups of idle executors when this process enqueues.
        self.wakeups = Wakeups()
        #: The SQL of schedules (kept in its own module; same connection pools).
        self.schedules = ScheduleStore(self)

    # -- tasks -----------------------------------------------------------------------

    def insert_task(
        self,
        *,
        name: str,
        type: str,
        type_path: str,
        plugin: str,
        params: dict[str, Any],
        settings: dict[str, Any],
        replace: bool = False,
    ) -> int:
        """Save a task under its unique name; with ``replace``, overwrite one of that name."""
        now = utcnow()
        values = dict(
            name=name,
            type=type,
            type_path=type_path,
            plugin=plugin,
            params=params,
            updated_at=now,
            **settings,
        )
        with self.transaction() as tx:
            existing = tx.conn.execute(
                sa.select(tasks.c.id).where(tasks.c.name == name)
            ).scalar_one_or_none()
            if existing is not None:
                if not replace:
                    raise DuplicateName("task", name)
                tx.conn.execute(sa.update(tasks).where(tasks.c.id == existing).values(**values))
                return int(existing)
            try:
                result = tx.conn.execute(sa.insert(tasks).values(created_at=now, **values))
            except IntegrityError:
                raise DuplicateName("task", name) from None
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def task(self, ref: int | str, conn: Connection | None = None) -> TaskRecord:
        """The task with this id or name (read on ``conn`` if given, say inside a write
        transaction); raises :class:`UnknownTask`."""
        where = tasks.c.id == ref if isinstance(ref, int) else tasks.c.name == ref
        if conn is not None:
            row = conn.execute(sa.select(tasks).where(where)).mappings().first()
        else:
            with self.reading() as reader:
                row = reader.execute(sa.select(tasks).where(where)).mappings().first()
        if row is None:
            raise UnknownTask(ref)
        return _task_record(row)

    def list_tasks(self) -> list[TaskRecord]:
        """Every saved task, by name."""
        with self.reading() as conn:
            rows = conn.execute(sa.select(tasks).order_by(tasks.c.name)).mappings().all()
        return [_task_record(r) for r in rows]

    # -- queues ----------------------------------------------------------------------

    def insert_queue(self, name: str, type: str, settings: dict[str, Any]) -> None:
        """Create a queue row; raises :class:`DuplicateName` if the name is taken."""
        try:
            with self.transaction() as tx:
                if tx.conn.execute(
                    sa.select(queue_groups.c.id).where(queue_groups.c.name == name)
                ).first():
                    raise DuplicateName("queue group", name)
                tx.conn.execute(
                    sa.insert(queues).values(
                        name=name, type=type, settings=settings, created_at=utcnow()
                    )
                )
        except IntegrityError:
            raise DuplicateName("queue", name) from None

    def insert_queue_group(self, name: str, members: Sequence[str]) -> None:
        """Create a queue group; names are unique across queues and groups."""
        with self.transaction() as tx:
            taken = tx.conn.execute(sa.select(queues.c.id).where(queues.c.name == name)).first()
            if taken is not None:
                raise DuplicateName("queue", name)
            try:
                tx.conn.execute(
                    sa.insert(queue_groups).values(
                        name=name, queues=list(members), created_at=utcnow()
                    )
                )
            except IntegrityError:
                raise DuplicateName("queue group", name) from None

    def queue_group(self, name: str) -> list[str] | None:
        """The member queues of group ``name`` in priority order, or None if no such group."""
        with self.reading() as conn:
            members = conn.execute(
                sa.select(queue_groups.c.queues).where(queue_groups.c.name == name)
            ).scalar_one_or_none()
        return list(members) if members is not None else None

    def list_queue_groups(self) -> list[tuple[str, list[str]]]:
        """(name, members) of every queue group."""
        with self.reading() as conn:
            rows = conn.execute(
                sa.select(queue_groups.c.name, queue_groups.c.queues).order_by(queue_groups.c.name)
            ).all()
        return [(str(r.name), list(r.queues)) for r in rows]

    def queue_row(self, name: str) -> tuple[str, dict[str, Any]]:
        """The (type, settings) of a queue; raises :class:`UnknownQueue`."""
        with self.reading() as conn:
            row = conn.execute(
                sa.select(queues.c.type, queues.c.settings).where(queues.c.name == name)
            ).first()
        if row is None:
            raise UnknownQueue(name)
        return str(row.type), dict(row.settings)

    def list_queues(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, type, settings) of every queue."""
        with self.reading() as conn:
            rows = conn.execute(
                sa.select(queues.c.name, queues.c.type, queues.c.settings).order_by(queues.c.name)
            ).all()
        return [(r.name, r.type, dict(r.settings)) for r in rows]

    # -- instances -------------------------------------------------------------------

    def insert_instance_rows(self, tx: Transaction, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert instance rows (full column dicts) in one statement; returns ids in order."""
        if not rows:
            return []
        if len(rows) == 1:
            # A statement built once and executed with parameters: building one per call
            # (``insert().values(**row)``) cost more Python than the round trip.
            result = tx.conn.execute(_INSERT_INSTANCE, rows[0])
            return [int(result.inserted_primary_key[0])]  # type: ignore[index]
        stmt = sa.insert(instances).returning(instances.c.id, sort_by_parameter_order=True)
        # One executemany needs one set of columns: rows of different shapes (a catch-up
        # records SKIPPED fires with ``ended_at``/``error`` beside QUEUED ones with
        # ``enqueued_at``) go in one statement per shape, ids given back in row order.
        shapes: dict[frozenset[str], list[int]] = {}
        for index, row in enumerate(rows):
            shapes.setdefault(frozenset(row), []).append(index)
        ids = [0] * len(rows)
        for indexes in shapes.values():
            got = tx.conn.execute(stmt, [rows[i] for i in indexes]).scalars()
            for index, instance_id in zip(indexes, got, strict=True):
                ids[index] = int(instance_id)
        return ids

    def mark_running(
        self,
        tx: Transaction,
        ids: Sequence[int],
        claimant: Claimant,
        *,
        check_limits: bool = True,
    ) -> list[int]:
        """Move QUEUED instances to RUNNING for ``claimant``; returns the ids it won.

        The conditional ``WHERE status = 'QUEUED'`` is what makes running exactly-once
        even on queues that deliver a message twice. ``check_limits=False`` is for a
        caller that already knows none of these tasks has a concurrency limit (the
        DBQueue reads that in its claim query), saving a round trip on the hot path.
        """
        if not ids:
            return []
        if check_limits:
            ids = self._within_limits(tx, ids)
            if not ids:
                return []
        statement, bound = self.for_ids(_MARK_RUNNING, ids)
        result = tx.conn.execute(
            statement,
            {
                "ids": bound,
                "by": claimant.executor_id,
                "host": claimant.host,
                "pid": claimant.pid,
            },
        )
        if result.rowcount == len(ids):
            return list(ids)
        won = tx.conn.execute(
            sa.select(instances.c.id).where(
                instances.c.id.in_(ids),
                instances.c.executor_id == claimant.executor_id,
                instances.c.status == InstanceStatus.RUNNING.value,
                instances.c.started_at.is_(None),
            )
        ).scalars()
        return sorted(int(i) for i in won)

    def _within_limits(self, tx: Transaction, ids: Sequence[int]) -> list[int]:
        """Drop instances whose task is at its concurrency limit (overlap ``queue`` = 1).

        The task row is locked while its RUNNING instances are counted, so executors on
        any number of hosts together never exceed the limit. Dropped instances stay
        QUEUED; the queue offers them again a little later.
        """
        limited = tx.conn.execute(
            sa.select(
                instances.c.id, instances.c.task_id, tasks.c.concurrency_limit, tasks.c.overlap
            )
            .join(tasks, tasks.c.id == instances.c.task_id)
            .where(
                instances.c.id.in_(list(ids)),
                sa.or_(tasks.c.concurrency_limit.is_not(None), tasks.c.overlap == "queue"),
            )
        ).all()
        if not limited:
            return list(ids)
        keep = set(ids) - {int(r.id) for r in limited}
        by_task: dict[int, list[Any]] = {}
        for r in limited:
            by_task.setdefault(int(r.task_id), []).append(r)
        for task_id in sorted(by_task):  # a fixed lock order: no deadlocks between claimers
            rows = sorted(by_task[task_id], key=lambda r: int(r.id))
            lock = sa.select(tasks.c.id).where(tasks.c.id == task_id)
            if self.dialect != "sqlite":
                lock = lock.with_for_update()
            tx.conn.execute(lock)
            running = int(
                tx.conn.execute(
                    sa.select(sa.func.count()).where(
                        instances.c.task_id == task_id,
                        instances.c.status == InstanceStatus.RUNNING.value,
                    )
                ).scalar_one()
            )
            limit = rows[0].concurrency_limit or 1_000_000_000
            if rows[0].overlap == "queue":
                limit = 1
            keep.update(int(r.id) for r in rows[: max(0, limit - running)])
        return [i for i in ids if i in keep]

    def overdue_jobs(self, job_type: str) -> list[tuple[int, float]]:
        """RUNNING instances of expanding tasks (Jobs) past their task's timeout."""
        now = utcnow()
        with self.reading() as conn:
            rows = conn.execute(
                sa.select(instances.c.id, instances.c.started_at, tasks.c.timeout)
                .join(tasks, tasks.c.id == instances.c.task_id)
                .where(
                    tasks.c.type == job_type,
                    tasks.c.timeout.is_not(None),
                    instances.c.status == InstanceStatus.RUNNING.value,
                )
            ).all()
        return [
            (int(r.id), float(r.timeout))
            for r in rows
            if r.started_at is not None and (now - r.started_at).total_seconds() > r.timeout
        ]

    def still_running(self, ids: Collection[int]) -> list[int]:
        """Which of these instances are still RUNNING."""
        with self.reading() as conn:
            return [
                int(i)
                for i in conn.execute(
                    sa.select(instances.c.id).where(
                        instances.c.id.in_(list(ids)),
                        instances.c.status == InstanceStatus.RUNNING.value,
                    )
                ).scalars()
            ]

    def still_queued(self, tx: Transaction, ids: Collection[int]) -> set[int]:
        """Which of these instances are still QUEUED (not claimed, not ended)."""
        if not ids:
            return set()
        return {
            int(i)
            for i in tx.conn.execute(
                sa.select(instances.c.id).where(
                    instances.c.id.in_(list(ids)), unindexed_status_is(InstanceStatus.QUEUED)
                )
            ).scalars()
        }

    def finish_instance(self, tx: Transaction, result: dict[str, Any]) -> bool:
        """Record the end of one RUNNING instance; False if it was no longer RUNNING there."""
        return bool(
            tx.conn.execute(
                sa.update(instances)
                .where(
                    instances.c.id == result["id"],
                    instances.c.executor_id == result["executor_id"],
                    instances.c.status == InstanceStatus.RUNNING.value,
                )
                .values(
                    status=result["status"],
                    started_at=result["started_at"],
                    ended_at=result["ended_at"],
                    exit_code=result["exit_code"],
                    revision=result["revision"],
                    error=result["error"],
                    log_key=result["log_key"],
                    pid=result["pid"],
                )
            ).rowcount
        )

    def mark_started(self, tx: Transaction, ids: Sequence[int], executor_id: int) -> set[int]:
        """Record, durably, that this executor starts these claimed instances now.

        Written (and committed) before the bodies begin: a claimed instance whose start
        is not recorded never began, so a survivor settling a dead executor gives it
        back to its queue untouched instead of interrupting it (see ``end_dead_daemon``).
        Returns the ids marked; the others were ended from outside meanwhile (a stop, a
        Job's end) or are no longer this executor's (it was settled dead).
        """
        if not ids:
            return set()
        statement, bound = self.for_ids(_MARK_STARTED, ids)
        marked = tx.conn.execute(
            statement, {"ids": bound, "now": utcnow(), "by": executor_id}
        ).rowcount
        if marked == len(ids):
            return set(ids)
        return {
            int(i)
            for i in tx.conn.execute(
                sa.select(instances.c.id).where(
                    instances.c.id.in_(list(ids)),
                    instances.c.executor_id == executor_id,
                    instances.c.status == InstanceStatus.RUNNING.value,
                    instances.c.started_at.is_not(None),
                )
            ).scalars()
        }

    def mark_started_alone(self, ids: Sequence[int], executor_id: int) -> set[int]:
        """:meth:`mark_started` as a transaction of its own: on PostgreSQL one statement
        in autocommit on the driver's connection (one round trip instead of three: the
        executor's starts wait for it)."""
        if not ids:
            return set()
        if self.dialect != "postgresql":
            with self.transaction() as tx:
                return self.mark_started(tx, ids, executor_id)
        with self.driver_autocommit() as conn:
            rows = conn.execute(
                _MARK_STARTED_PG, {"ids": list(ids), "now": naive_utc(utcnow()), "by": executor_id}
            ).fetchall()
        marked = {int(r[0]) for r in rows}
        if len(marked) < len(ids):  # some were marked before (given back, then kept)
            with self.transaction() as tx:
                marked |= self.mark_started(tx, [i for i in ids if i not in marked], executor_id)
        return marked

    def unmark_started(self, ids: Sequence[int], executor_id: int) -> None:
        """Undo :meth:`mark_started` for claimed instances this executor did not begin
        after all (they wait for a slot again)."""
        if ids:
            with self.transaction() as tx:
                tx.conn.execute(
                    sa.update(instances)
                    .where(
                        instances.c.id.in_(list(ids)),
                        instances.c.executor_id == executor_id,
                        instances.c.status == InstanceStatus.RUNNING.value,
                    )
                    .values(started_at=None)
                )

    def give_back(
        self,
        tx: Transaction,
        ids: Sequence[int],
        executor_id: int,
        *,
        unstarted_only: bool = False,
    ) -> list[int]:
        """Make RUNNING instances this executor claimed but never started QUEUED again
        (``unstarted_only``: only those whose start was not recorded, as a survivor must:
        the executor may be recording one at this moment).

        Returns the ids moved back; the others ended meanwhile (stopped from outside),
        or, with ``unstarted_only``, started. The update itself is conditional, so a
        change committed by another transaction since it was read is never overwritten.
        """
        if not ids:
            return []
        where = [
            instances.c.id.in_(list(ids)),
            instances.c.executor_id == executor_id,
            instances.c.status == InstanceStatus.RUNNING.value,
        ]
        if unstarted_only:
            where.append(instances.c.started_at.is_(None))
        back = [int(i) for i in tx.conn.execute(sa.select(instances.c.id).where(*where)).scalars()]
        if not back:
            return []
        where[0] = instances.c.id.in_(back)
        moved = tx.conn.execute(
            sa.update(instances)
            .where(*where)
            .values(
                status=InstanceStatus.QUEUED.value,
                started_at=None,
                executor_id=None,
                host=None,
                pid=None,
            )
        ).rowcount
        if moved != len(back):  # some changed since the read: those this update moved
            back = [
                int(i)
                for i in tx.conn.execute(
                    sa.select(instances.c.id).where(
                        instances.c.id.in_(back),
                        instances.c.status == InstanceStatus.QUEUED.value,
                        instances.c.executor_id.is_(None),
                    )
                ).scalars()
            ]
        return sorted(back)

    def ended(self, tx: Transaction, ids: Collection[int]) -> set[int]:
        """Which of these instances have ended (a final status)."""
        if not ids:
            return set()
        return {
            int(i)
            for i in tx.conn.execute(
                sa.select(instances.c.id).where(
                    instances.c.id.in_(list(ids)),
                    instances.c.status.in_([st.value for st in FINAL_INSTANCE_STATUSES]),
                )
            ).scalars()
        }

    def for_ids(self, statements: tuple[S, S], ids: Collection[int]) -> tuple[S, Any]:
        """The statement of a :func:`by_ids` pair for this database, and its ``ids``
        parameter bound to match (one JSON text where :attr:`sqlite_json`, else a list)."""
        if self.sqlite_json:
            return statements[1], json.dumps(list(ids))
        return statements[0], list(ids)

    def claimed_work(self, ids: Collection[int]) -> list[tuple[InstanceRecord, TaskRecord]]:
        """The instances an executor just claimed, each with its task, in id order.

        What the claim transaction already read (:meth:`prefetch_claimed`, on this
        thread) is used as it is; anything else is read now.
        """
        if not ids:
            return []
        prefetched: dict[int, tuple[InstanceRecord, TaskRecord]] = getattr(
            self._prefetched, "work", {}
        )
        self._prefetched.work = {}  # whatever was not asked for now is stale
        missing = [i for i in ids if i not in prefetched]
        if missing:
            with self.reading() as conn:
                prefetched.update(self._claimed_work(conn, missing))
        return [prefetched[i] for i in sorted(ids) if i in prefetched]

    def prefetch_claimed(self, tx: Transaction, ids: Collection[int]) -> None:
        """Read the claimed instances inside the claim's own transaction, for the next
        :meth:`claimed_work` on this thread: saves a checkout and a round trip per claim."""
        if ids:
            work = getattr(self._prefetched, "work", {})
            work.update(self._claimed_work(tx.conn, ids))
            self._prefetched.work = work

    def prefetch_started(self, conn: Connection, rows: Sequence[Any]) -> None:
        """Like :meth:`prefetch_claimed`, from rows the claim statement itself returned:
        each instance's :func:`raw_columns` in table order, then its task's
        ``updated_at``, raw too."""
        if rows:
            work = getattr(self._prefetched, "work", {})
            work.update(self._work_from_rows(conn, rows))
            self._prefetched.work = work

    def _claimed_work(
        self, conn: Connection, ids: Collection[int]
    ) -> dict[int, tuple[InstanceRecord, TaskRecord]]:
        read, bound = self.for_ids(_CLAIMED_WORK, ids)
        return self._work_from_rows(conn, conn.execute(read, {"ids": bound}).all())

    def _work_from_rows(
        self, conn: Connection, rows: Sequence[Sequence[Any]]
    ) -> dict[int, tuple[InstanceRecord, TaskRecord]]:
        # Tasks are few and rarely edited: read each again only when its updated_at
        # moved, instead of decoding its params and settings once per instance. The
        # cache is keyed by the raw updated_at, as these rows carry it.
        cache = self._claimed_tasks
        stale = {
            r[_TASK_ID]
            for r in rows
            if (hit := cache.get(r[_TASK_ID])) is None or hit[0] != r[_T_UPDATED_AT]
        }
        if stale:
            raw_updated = {r[_TASK_ID]: r[_T_UPDATED_AT] for r in rows if r[_TASK_ID] in stale}
            for t in conn.execute(sa.select(tasks).where(tasks.c.id.in_(stale))).mappings():
                cache[t["id"]] = (raw_updated[t["id"]], _task_record(t))
        work = {}
        for r in rows:
            task = cache[r[_TASK_ID]][1]
            work[int(r[0])] = (_instance_record(r, task.name, task.type), task)
        return work

    def finish_instances(self, tx: Transaction, results: Sequence[dict[str, Any]]) -> None:
        """Record the end of RUNNING instances, one executemany for the whole batch.

        Each dict has ``id``, ``executor_id``, ``status``, ``started_at`` (the real
        start, which replaces the claim's), ``ended_at``, ``exit_code``,
        ``revision``, ``error``, ``log_key``, ``pid``. An instance that is no longer
        RUNNING for that executor (settled meanwhile as interrupted) is left alone.
        """
        if not results:
            return
        if len(results) > 1 and self.dialect == "postgresql":
            tx.conn.execute(_FINISH_PG, _finish_arrays(results))
            return
        if len(results) > 1 and self.sqlite_json:
            tx.conn.execute(_FINISH_SQLITE, {"batch": _finish_json(results)})
            return
        tx.conn.execute(
            _FINISH,
            [
                {
                    "b_id": r["id"],
                    "b_executor": r["executor_id"],
                    "b_status": r["status"],
                    "b_started": r["started_at"],
                    "b_ended": r["ended_at"],
                    "b_exit": r["exit_code"],
                    "b_revision": r["revision"],
                    "b_error": r["error"],
                    "b_log": r["log_key"],
                    "b_pid": r["pid"],
                }
                for r in results
            ],
        )

    def set_log_location(self, instance_id: int, location: str) -> None:
        """Record where the log store put an instance's log."""
        with self.transaction() as tx:
            tx.conn.execute(
                sa.update(instances)
                .where(instances.c.id == instance_id)
                .values(log_location=location)
            )

    def instance(self, instance_id: int) -> InstanceRecord:
        """One instance; raises :class:`UnknownInstance`."""
        found = self.instances_by_id([instance_id])
        if not found:
            raise UnknownInstance(instance_id)
        return found[0]

    def instances_by_id(self, ids: Collection[int]) -> list[InstanceRecord]:
        """These instances, in id order (missing ids are left out)."""
        query = _instance_query().where(instances.c.id.in_(list(ids))).order_by(instances.c.id)
        with self.reading() as conn:
            rows = conn.execute(query).all()
        return [_instance_record(r, r.t_name, r.t_type) for r in rows]

    def find_instances(
        self,
        *,
        statuses: Collection[InstanceStatus] | None = None,
        since: datetime | None = None,
        task: str | None = None,
        queue: str | None = None,
        executor_id: int | None = None,
        job_instance_id: int | None = None,
        limit: int | None = 100,
    ) -> list[InstanceRecord]:
        """Instances matching every given filter, newest first."""
        query = _instance_query()
        if job_instance_id is not None:
            query = query.where(instances.c.job_instance_id == job_instance_id)
        if statuses is not None:
            query = query.where(instances.c.status.in_([s.value for s in statuses]))
        if since is not None:
            query = query.where(instances.c.created_at >= since)
        if task is not None:
            query = query.where(tasks.c.name == task)
        if queue is not None:
            query = query.where(instances.c.queue == queue)
        if executor_id is not None:
            query = query.where(instances.c.executor_id == executor_id)
        query = query.order_by(instances.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.reading() as conn:
            rows = conn.execute(query).all()
        return [_instance_record(r, r.t_name, r.t_type) for r in rows]

    def count_by_status(self, ids: Collection[int] | None = None) -> dict[str, int]:
        """How many instances have each status (optionally among ``ids``)."""
        query = sa.select(instances.c.status, sa.func.count()).group_by(instances.c.status)
        if ids is not None:
            query = query.where(instances.c.id.in_(list(ids)))
        with self.reading() as conn:
            return {str(s): int(n) for s, n in conn.execute(query).all()}

    def prune_batch(self, cutoff: datetime, batch: int) -> list[tuple[int, str | None]]:
        """Delete up to ``batch`` final instances that ended before ``cutoff``.

        One short transaction per batch, touching only old rows, so executors claiming
        from the queue are never held up. Returns (id, log key) of what was deleted.
        """
        from norc.status import FINAL_INSTANCE_STATUSES

        with self.transaction() as tx:
            rows = tx.conn.execute(
                sa.select(instances.c.id, instances.c.log_key)
                .where(
                    instances.c.ended_at < cutoff,
                    instances.c.status.in_([s.value for s in FINAL_INSTANCE_STATUSES]),
                )
                .order_by(instances.c.id)
                .limit(batch)
            ).all()
            if rows:
                tx.conn.execute(
                    sa.delete(instances).where(instances.c.id.in_([r.id for r in rows]))
                )
        return [(int(r.id), r.log_key) for r in rows]

    def prune_daemons(self, cutoff: datetime) -> list[tuple[int, str]]:
        """Delete daemon rows that ended before ``cutoff``; returns (id, kind)."""
        with self.transaction() as tx:
            rows = tx.conn.execute(
                sa.select(daemons.c.id, daemons.c.kind).where(daemons.c.ended_at < cutoff)
            ).all()
            if rows:
                tx.conn.execute(sa.delete(daemons).where(daemons.c.id.in_([r.id for r in rows])))
        return [(int(r.id), str(r.kind)) for r in rows]

    # -- daemons ---------------------------------------------------------------------

    def insert_daemon(
        self,
        *,
        kind: str,
        host: str,
        pid: int,
        queue: str | None,
        concurrency: int | None,
        status: str,
    ) -> int:
        """Register a starting executor or scheduler; returns its id."""
        now = utcnow()
        with self.transaction() as tx:
            result = tx.conn.execute(
                sa.insert(daemons).values(
                    kind=kind,
                    host=host,
                    pid=pid,
                    queue=queue,
                    concurrency=concurrency,
                    status=status,
                    heartbeat=now,
                    started_at=now,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def beat(
        self, daemon_id: int, status: str | None = None, *, error: str | EllipsisType | None = ...
    ) -> str | None:
        """Refresh a daemon's heartbeat (and status, and the ``error`` saying why it is
        ERROR: None clears it, left out keeps it); return its pending request, if any."""
        values: dict[str, Any] = {"heartbeat": utcnow()}
        if status is not None:
            values["status"] = status
        if error is not ...:
            values["error"] = error
        with self.transaction() as tx:
            # Never on an ended row: a daemon settled as dead while it was cut off must not
            # bring its row back to life (its work was settled and may run elsewhere).
            beaten = tx.conn.execute(
                sa.update(daemons)
                .where(daemons.c.id == daemon_id, daemons.c.ended_at.is_(None))
                .values(**values)
            ).rowcount
            row = tx.conn.execute(
                sa.select(daemons.c.request, daemons.c.status, daemons.c.error).where(
                    daemons.c.id == daemon_id
                )
            ).first()
        if not beaten and row is not None:
            raise DaemonSettled(daemon_id, str(row.status), row.error)
        return str(row.request) if row is not None and row.request else None

    def end_daemon(self, daemon_id: int, status: str) -> bool:
        """Record a daemon's own end, unless another daemon settled its row meanwhile (that
        verdict stays). True if this call ended it."""
        with self.transaction() as tx:
            return bool(
                tx.conn.execute(
                    sa.update(daemons)
                    .where(daemons.c.id == daemon_id, daemons.c.ended_at.is_(None))
                    .values(status=status, ended_at=utcnow(), request=None)
                ).rowcount
            )

    def pending_request(self, daemon_id: int) -> str | None:
        """The request waiting for a daemon, if any (a cheap indexed read)."""
        with self.reading() as conn:
            request = conn.execute(
                sa.select(daemons.c.request).where(daemons.c.id == daemon_id)
            ).scalar_one_or_none()
        return str(request) if request else None

    def set_daemon(self, daemon_id: int, **values: Any) -> None:
        """Update columns of a daemon row (status, request, ended_at, error)."""
        with self.transaction() as tx:
            tx.conn.execute(sa.update(daemons).where(daemons.c.id == daemon_id).values(**values))

    def set_request(self, daemon_ids: Collection[int], request: str) -> list[int]:
        """Leave ``request`` for these daemons (those not ended); returns the ids it reached."""
        if not daemon_ids:
            return []
        with self.transaction() as tx:
            where = (daemons.c.id.in_(list(daemon_ids)), daemons.c.ended_at.is_(None))
            ids = [int(i) for i in tx.conn.execute(sa.select(daemons.c.id).where(*where)).scalars()]
            tx.conn.execute(sa.update(daemons).where(*where).values(request=request))
        return ids

    def dead_daemons(self, threshold: float) -> list[DaemonRecord]:
        """Daemons not ended whose heartbeat is older than ``threshold`` seconds."""
        cutoff = utcnow() - timedelta(seconds=threshold)
        query = sa.select(daemons).where(daemons.c.ended_at.is_(None), daemons.c.heartbeat < cutoff)
        with self.reading() as conn:
            return [DaemonRecord(**dict(r)) for r in conn.execute(query).mappings()]

    def end_dead_daemon(
        self,
        tx: Transaction,
        daemon_id: int,
        *,
        threshold: float | None,
        status: str,
        reason: str,
    ) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """End a daemon that stopped beating and interrupt the instances it had started.

        The update is conditional (still not ended, still stale when ``threshold`` is
        given), so of several survivors racing, exactly one settles it. Returns the
        (instance id, queue) pairs it interrupted, and those it had claimed but not
        started (see :meth:`mark_started`), left RUNNING for the caller to give back to
        their queues (or to interrupt, where a queue cannot take work back); both empty
        when another got there first.
        """
        now = utcnow()
        where = [daemons.c.id == daemon_id, daemons.c.ended_at.is_(None)]
        if threshold is not None:
            where.append(daemons.c.heartbeat < now - timedelta(seconds=threshold))
        won = tx.conn.execute(
            sa.update(daemons)
            .where(*where)
            .values(status=status, ended_at=now, error=reason, request=None)
        ).rowcount
        if not won:
            return [], []
        running: list[tuple[int, str]] = []
        unstarted: list[tuple[int, str]] = []
        for i, q, started in tx.conn.execute(
            sa.select(instances.c.id, instances.c.queue, instances.c.started_at).where(
                instances.c.executor_id == daemon_id,
                instances.c.status == InstanceStatus.RUNNING.value,
            )
        ).all():
            (unstarted if started is None else running).append((int(i), str(q)))
        # Its body may have ended just before the death, its outcome not yet written (the
        # executor's end-to-durable window, docs/reliability.md): say so, not "failed".
        self.interrupt(
            tx,
            [i for i, _ in running],
            f"{reason}; it was running this instance (if the body ended in its last"
            " moments, that outcome was not recorded)",
            now,
        )
        return running, unstarted

    def interrupt(
        self, tx: Transaction, ids: Sequence[int], reason: str, now: datetime | None = None
    ) -> None:
        """End these RUNNING instances INTERRUPTED with ``reason``."""
        if ids:
            tx.conn.execute(
                sa.update(instances)
                .where(
                    instances.c.id.in_(list(ids)),
                    instances.c.status == InstanceStatus.RUNNING.value,
                )
                .values(
                    status=InstanceStatus.INTERRUPTED.value, ended_at=now or utcnow(), error=reason
                )
            )

    def mark_handled(self, instance_ids: Collection[int]) -> int:
        """Mark failed instances HANDLED (somebody dealt with them); returns how many."""
        from norc.status import STATUS_GROUPS

        with self.transaction() as tx:
            return int(
                tx.conn.execute(
                    sa.update(instances)
                    .where(
                        instances.c.id.in_(list(instance_ids)),
                        instances.c.status.in_([s.value for s in STATUS_GROUPS["failed"]]),
                    )
                    .values(status=InstanceStatus.HANDLED.value)
                ).rowcount
            )

    def counts_by_executor(self, executor_ids: Collection[int]) -> dict[int, dict[str, int]]:
        """Per executor: how many of its instances have each status."""
        out: dict[int, dict[str, int]] = {int(i): {} for i in executor_ids}
        if not out:
            return out
        with self.reading() as conn:
            for executor_id, status, n in conn.execute(
                sa.select(instances.c.executor_id, instances.c.status, sa.func.count())
                .where(instances.c.executor_id.in_(list(out)))
                .group_by(instances.c.executor_id, instances.c.status)
            ).all():
                out[int(executor_id)][str(status)] = int(n)
        return out

    def daemons(self, kind: str | None = None, daemon_id: int | None = None) -> list[DaemonRecord]:
        """Daemon rows, newest first."""
        query = sa.select(daemons).order_by(daemons.c.id.desc())
        if kind is not None:
            query = query.where(daemons.c.kind == kind)
        if daemon_id is not None:
            query = query.where(daemons.c.id == daemon_id)
        with self.reading() as conn:
            rows = conn.execute(query).mappings().all()
        return [DaemonRecord(**dict(r)) for r in rows]


def _instance_query() -> sa.Select[Any]:
    """Instances with their task's name and type, as raw rows for _instance_record."""
    return sa.select(
        *raw_columns([*instances.c, tasks.c.name.label("t_name"), tasks.c.type.label("t_type")])
    ).join(tasks, tasks.c.id == instances.c.task_id)


def raw_columns(columns: Iterable[sa.ColumnElement[Any]]) -> list[sa.ColumnElement[Any]]:
    """The columns as the driver returns them, without SQLAlchemy's type processing.

    Every InstanceRecord is built from such rows by :func:`_instance_record` (the
    claimed-row read does it once per claimed instance: processed mapping rows cost
    ~12 µs a row on SQLite, raw tuples turned into records about half that).
    """
    return [sa.type_coerce(c, sa.types.NullType()).label(c.key) for c in columns]


#: Positions in a raw instance row: the instance's columns in table order, then what
#: the query adds (the claimed-row read: its task's updated_at).
_TASK_ID = 1
_T_UPDATED_AT = len(instances.c)
# A column added to the table must be added to _instance_record too.
_RAW_ORDER = "id task_id queue priority status attempt schedule_id fire_time created_at"
_RAW_ORDER += " enqueued_at started_at ended_at executor_id host pid exit_code revision"
_RAW_ORDER += " log_key log_location error first_attempt_id job_instance_id job_node"
assert " ".join(c.name for c in instances.c) == _RAW_ORDER, "instances columns changed"


def _aware(value: Any) -> datetime | None:
    """A raw stored time as an aware UTC datetime (SQLite hands back text)."""
    if value is None:
        return None
    if value.__class__ is str:
        # Stored naive in UTC; parsed with its offset spelled out: 0.14 µs against 0.87
        # for parse-then-replace, three times per claimed instance.
        return datetime.fromisoformat(value + "+00:00")
    return cast(datetime, value).replace(tzinfo=UTC)


def _instance_record(r: Sequence[Any], task_name: str, task_type: str) -> InstanceRecord:
    return InstanceRecord(
        id=r[0],
        task_id=r[1],
        task_name=task_name,
        task_type=task_type,
        queue=r[2],
        priority=r[3],
        status=InstanceStatus(r[4]),
        attempt=r[5],
        schedule_id=r[6],
        fire_time=_aware(r[7]),
        created_at=_aware(r[8]),
        enqueued_at=_aware(r[9]),
        started_at=_aware(r[10]),
        ended_at=_aware(r[11]),
        executor_id=r[12],
        host=r[13],
        pid=r[14],
        exit_code=r[15],
        revision=r[16],
        log_key=r[17],
        log_location=r[18],
        error=r[19],
        first_attempt_id=r[20],
        job_instance_id=r[21],
        job_node=r[22],
    )


def _task_record(r: Any, prefix: str = "") -> TaskRecord:
    def get(key: str) -> Any:
        return r[prefix + key]

    return TaskRecord(
        id=get("id"),
        name=get("name"),
        type=get("type"),
        type_path=get("type_path"),
        plugin=get("plugin"),
        params=dict(get("params")),
        description=get("description"),
        timeout=get("timeout"),
        finally_timeout=get("finally_timeout"),
        max_retries=get("max_retries"),
        retry_delay=get("retry_delay"),
        retry_backoff=get("retry_backoff"),
        retry_max_delay=get("retry_max_delay"),
        retry_jitter=get("retry_jitter"),
        retry_on=tuple(get("retry_on") or DEFAULT_RETRY_ON),
        overlap=get("overlap"),
        concurrency_limit=get("concurrency_limit"),
        created_at=get("created_at"),
    )


def unindexed_status_is(status: InstanceStatus) -> sa.ColumnElement[bool]:
    """``status = …`` for a statement that already names its instances by id, written so
    that no index on status can serve it. Otherwise SQLite (measured: every claim of a
    10k backlog) and PostgreSQL with stale statistics plan it on the status index, and
    a QUEUED test walks every waiting instance, the whole backlog, each time."""
    return (instances.c.status == status.value).is_(sa.true())


def ids_in(column: sa.ColumnElement[Any], *, json_text: bool) -> sa.ColumnElement[bool]:
    """``column IN (:ids)``, for a statement built by :func:`by_ids`.

    With ``json_text`` (SQLite with JSON built in) the ids are one JSON array read by
    ``json_each``: one statement text whatever their number, so SQLite prepares it once
    and SQLAlchemy does not render a parameter per id (2 µs an id in a profile of the
    claim, which names its instances three times). Elsewhere, an expanding IN list.
    """
    if json_text:
        each = sa.func.json_each(sa.bindparam("ids", type_=sa.String)).table_valued("value")
        return column.in_(sa.select(each.c.value))
    return column.in_(sa.bindparam("ids", expanding=True))


def running_values() -> dict[str, Any]:
    """What a claim sets on an instance it moves QUEUED → RUNNING (``mark_running`` and
    PostgreSQL's one-statement claim), bound as ``by`` (the executor's id), ``host`` and
    ``pid``; ``started_at`` stays NULL until :meth:`Database.mark_started`."""
    return {
        "status": InstanceStatus.RUNNING.value,
        # Claimed, not started: the executor writes the start (mark_started) just before
        # the body begins, so a survivor can give back what a dead executor never began.
        "started_at": sa.null(),
        "executor_id": sa.bindparam("by"),
        "host": sa.bindparam("host"),
        "pid": sa.bindparam("pid"),
    }


S = TypeVar("S")


def by_ids(build: Callable[[bool], S]) -> tuple[S, S]:
    """A statement naming rows by id with :func:`ids_in`, built both ways (``json_text``
    False, then True); :meth:`Database.for_ids` picks the one for its database."""
    return build(False), build(True)


# The hot path's statements, built once: constructing SQLAlchemy statements per call
# cost more than executing them for small claims (expanding IN lists bind any length).
_INSERT_INSTANCE = sa.insert(instances)
_MARK_RUNNING = by_ids(
    lambda json_text: (
        sa.update(instances)
        .where(
            ids_in(instances.c.id, json_text=json_text), unindexed_status_is(InstanceStatus.QUEUED)
        )
        .values(running_values())
    )
)
_MARK_STARTED = by_ids(
    lambda json_text: (
        sa.update(instances)
        .where(
            ids_in(instances.c.id, json_text=json_text),
            instances.c.executor_id == sa.bindparam("by"),
            instances.c.status == InstanceStatus.RUNNING.value,
            instances.c.started_at.is_(None),
        )
        .values(started_at=sa.bindparam("now"))
    )
)
_MARK_STARTED_PG = f"""
    UPDATE {instances.name} SET started_at = %(now)s
    WHERE id = ANY(%(ids)s) AND executor_id = %(by)s AND status = 'RUNNING'
        AND started_at IS NULL
    RETURNING id
"""
_CLAIMED_WORK = by_ids(
    lambda json_text: (
        sa.select(*raw_columns([*instances.c, tasks.c.updated_at.label("t_updated_at")]))
        .join(tasks, tasks.c.id == instances.c.task_id)
        .where(ids_in(instances.c.id, json_text=json_text))
        .order_by(instances.c.id)
    )
)
_FINISH = (
    sa.update(instances)
    .where(
        instances.c.id == sa.bindparam("b_id"),
        instances.c.executor_id == sa.bindparam("b_executor"),
        instances.c.status == InstanceStatus.RUNNING.value,
    )
    .values(
        status=sa.bindparam("b_status"),
        started_at=sa.bindparam("b_started"),
        ended_at=sa.bindparam("b_ended"),
        exit_code=sa.bindparam("b_exit"),
        revision=sa.bindparam("b_revision"),
        error=sa.bindparam("b_error"),
        log_key=sa.bindparam("b_log"),
        pid=sa.bindparam("b_pid"),
    )
)

# PostgreSQL: the whole batch in one statement joined to arrays (one plan, one round
# trip, a fixed SQL text), instead of an executemany that runs the UPDATE once per row.
_FINISH_PG = sa.text(
    f"""
    UPDATE {instances.name} AS i
    SET status = u.status, started_at = u.started_at, ended_at = u.ended_at,
        exit_code = u.exit_code, revision = u.revision, error = u.error,
        log_key = u.log_key, pid = u.pid
    FROM unnest(
        CAST(:ids AS BIGINT[]), CAST(:executors AS BIGINT[]), CAST(:statuses AS VARCHAR[]),
        CAST(:started AS TIMESTAMP[]), CAST(:ended AS TIMESTAMP[]),
        CAST(:exit_codes AS INTEGER[]), CAST(:revisions AS VARCHAR[]),
        CAST(:errors AS TEXT[]), CAST(:log_keys AS VARCHAR[]), CAST(:pids AS INTEGER[])
    ) AS u(id, executor_id, status, started_at, ended_at, exit_code, revision, error,
           log_key, pid)
    WHERE i.id = u.id AND i.executor_id = u.executor_id AND i.status = 'RUNNING'
    """
)


# SQLite (3.38+, JSON built in): the batch as one JSON array of rows joined by
# json_each, one statement whose only parameter is a string, instead of an executemany
# whose every row goes through SQLAlchemy's parameter and datetime processing (most of
# the recorder's CPU). The unary + keeps the planner on the primary key: with the
# status index it would visit every RUNNING instance for each row of the batch.
_FINISH_SQLITE = sa.text(
    f"""
    UPDATE {instances.name}
    SET status = json_extract(u.value, '$[2]'), started_at = json_extract(u.value, '$[3]'),
        ended_at = json_extract(u.value, '$[4]'), exit_code = json_extract(u.value, '$[5]'),
        revision = json_extract(u.value, '$[6]'), error = json_extract(u.value, '$[7]'),
        log_key = json_extract(u.value, '$[8]'), pid = json_extract(u.value, '$[9]')
    FROM json_each(:batch) AS u
    WHERE {instances.name}.id = json_extract(u.value, '$[0]')
      AND {instances.name}.executor_id = json_extract(u.value, '$[1]')
      AND +{instances.name}.status = 'RUNNING'
    """
)


def _sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLAlchemy stores it on SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC)."""
    if value is not None and value.tzinfo is UTC:  # the executor's times: cut "+00:00"
        return value.isoformat(" ", "microseconds")[:-6]  # (replace() costs 1 µs a call)
    naive = naive_utc(value)
    return None if naive is None else naive.isoformat(" ", "microseconds")


def _finish_json(results: Sequence[dict[str, Any]]) -> str:
    return json.dumps(
        [
            [
                r["id"],
                r["executor_id"],
                r["status"],
                _sqlite_time(r["started_at"]),
                _sqlite_time(r["ended_at"]),
                r["exit_code"],
                r["revision"],
                r["error"],
                r["log_key"],
                r["pid"],
            ]
            for r in results
        ]
    )


def _finish_arrays(results: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        "ids": [r["id"] for r in results],
        "executors": [r["executor_id"] for r in results],
        "statuses": [r["status"] for r in results],
        "started": [naive_utc(r["started_at"]) for r in results],
        "ended": [naive_utc(r["ended_at"]) for r in results],
        "exit_codes": [r["exit_code"] for r in results],
        "revisions": [r["revision"] for r in results],
        "errors": [r["error"] for r in results],
        "log_keys": [r["log_key"] for r in results],
        "pids": [r["pid"] for r in results],
    }
