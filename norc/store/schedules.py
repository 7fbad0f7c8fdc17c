"""The SQL of schedules: editing, leases between schedulers, and firing."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from norc.errors import UnknownName
from norc.records import ScheduleRecord
from norc.store.schema import daemons, instances, schedules, tasks, utcnow

if TYPE_CHECKING:
    from norc.store.connections import Connections, Transaction


#: Ids per statement when many are named at once (SQLite allows 32,766 parameters).
CHUNK = 5000


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK)]


class UnknownSchedule(UnknownName):
    """No schedule of this id exists."""

    def __init__(self, ref: object) -> None:
        super().__init__(f"unknown schedule {ref!r}")


def _label(kind: str, spec: str) -> str:
    if kind != "cron":
        return "every"
    from norc.schedules.cron import parse_cron

    try:
        return parse_cron(spec).label
    except ValueError:
        return spec


def _record(r: Any) -> ScheduleRecord:
    return ScheduleRecord(
        id=r["id"],
        task_id=r["task_id"],
        task_name=r["t_name"],
        queue=r["queue"],
        priority=r["priority"],
        kind=r["kind"],
        spec=r["spec"],
        label=_label(r["kind"], r["spec"]),
        timezone=r["timezone"],
        start_at=r["start_at"],
        period=r["period"],
        repetitions=r["repetitions"],
        remaining=r["remaining"],
        make_up=bool(r["make_up"]),
        next_fire_at=r["next_fire_at"],
        claimed_by=r["claimed_by"],
        lease_until=r["lease_until"],
        paused=bool(r["paused"]),
        deleted=bool(r["deleted"]),
        revision=r["revision"],
        created_at=r["created_at"],
        error=r["error"],
    )


class ScheduleStore:
    """Schedules in one database (``Database.schedules``)."""

    def __init__(self, db: Connections) -> None:
        self.db = db

    def _query(self) -> sa.Select[Any]:
        return sa.select(schedules, tasks.c.name.label("t_name")).join(
            tasks, tasks.c.id == schedules.c.task_id
        )

    def insert(self, **values: Any) -> int:
        """Create a schedule; returns its id."""
        now = utcnow()
        with self.db.transaction() as tx:
            result = tx.conn.execute(
                sa.insert(schedules).values(created_at=now, updated_at=now, revision=1, **values)
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def get(self, schedule_id: int) -> ScheduleRecord:
        """One schedule (deleted ones too); raises :class:`UnknownSchedule`."""
        with self.db.reading() as conn:
            row = (
                conn.execute(self._query().where(schedules.c.id == schedule_id)).mappings().first()
            )
        if row is None:
            raise UnknownSchedule(schedule_id)
        return _record(row)

    def find(
        self, *, task: str | None = None, include_deleted: bool = False
    ) -> list[ScheduleRecord]:
        """Schedules, by id."""
        query = self._query().order_by(schedules.c.id)
        if task is not None:
            query = query.where(tasks.c.name == task)
        if not include_deleted:
            query = query.where(schedules.c.deleted.is_(False))
        with self.db.reading() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]

    def update(self, schedule_id: int, **values: Any) -> None:
        """Edit a schedule: bumps its revision so schedulers pick the change up."""
        with self.db.transaction() as tx:
            result = tx.conn.execute(
                sa.update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(revision=schedules.c.revision + 1, updated_at=utcnow(), **values)
            )
            if result.rowcount == 0:
                raise UnknownSchedule(schedule_id)

    def set_aside(self, schedule_id: int, daemon_id: int, error: str) -> None:
        """Record why a scheduler stopped firing a schedule it holds (a fault that is not
        an outage). The revision is bumped like an edit's, so every scheduler re-reads
        it; it fires again once edited or resumed, which clears ``error``."""
        with self.db.transaction() as tx:
            tx.conn.execute(
                sa.update(schedules)
                .where(schedules.c.id == schedule_id, schedules.c.claimed_by == daemon_id)
                .values(revision=schedules.c.revision + 1, updated_at=utcnow(), error=error)
            )

    # -- leases ----------------------------------------------------------------------
    #
    # A schedule is leased by the scheduler named in ``claimed_by`` for as long as that
    # scheduler's daemon row is alive: not ended, heartbeat within the heartbeat timeout.
    # Renewing a lease is the heartbeat itself, so no lease round writes held rows.
    # ``lease_until`` is no longer written (it stays in the table for older readers).

    def live_schedulers(self, timeout: float) -> set[int]:
        """Ids of the schedulers alive now: not ended, heartbeat within ``timeout`` s."""
        cutoff = utcnow() - timedelta(seconds=timeout)
        with self.db.reading() as conn:
            return {
                int(i)
                for i in conn.execute(
                    sa.select(daemons.c.id).where(
                        daemons.c.kind == "scheduler",
                        daemons.c.ended_at.is_(None),
                        daemons.c.heartbeat >= cutoff,
                    )
                ).scalars()
            }

    def holders(self) -> dict[int | None, tuple[int, int]]:
        """Per holder (None: nobody), how many schedules it holds and how many are active.

        Active means not deleted and with fires ahead: the work schedulers share. One
        read of the table per lease round (it also counts the active schedules).
        """
        active = sa.case(
            (
                sa.and_(schedules.c.deleted.is_(False), schedules.c.next_fire_at.is_not(None)),
                1,
            ),
            else_=0,
        )
        query = sa.select(schedules.c.claimed_by, sa.func.count(), sa.func.sum(active)).group_by(
            schedules.c.claimed_by
        )
        with self.db.reading() as conn:
            return {
                (None if holder is None else int(holder)): (int(total), int(busy or 0))
                for holder, total, busy in conn.execute(query).all()
            }

    def held_ids(self, daemon_id: int) -> set[int]:
        """Ids of every schedule ``claimed_by`` this scheduler (deleted and ended ones too)."""
        with self.db.reading() as conn:
            return {
                int(i)
                for i in conn.execute(
                    sa.select(schedules.c.id).where(schedules.c.claimed_by == daemon_id)
                ).scalars()
            }

    def still_held(self, tx: Transaction, daemon_id: int, ids: Collection[int]) -> set[int]:
        """Which of ``ids`` are still ``claimed_by`` this scheduler."""
        if not ids:
            return set()
        return {
            int(i)
            for i in tx.conn.execute(
                sa.select(schedules.c.id).where(
                    schedules.c.id.in_(list(ids)), schedules.c.claimed_by == daemon_id
                )
            ).scalars()
        }

    def acquire(
        self, daemon_id: int, limit: int, timeout: float, holders: Collection[int] = ()
    ) -> list[int]:
        """Lease up to ``limit`` active schedules, soonest first: unowned ones, and those of
        the schedulers in ``holders`` that are not alive (ended, or no heartbeat within
        ``timeout`` s; their liveness is checked here, in the same transaction).

        Naming the candidate holders (the lease round knows them from :meth:`holders`)
        keeps the query on the ``claimed_by`` index instead of testing every row's holder.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=timeout)
        with self.db.transaction() as tx:
            dead: list[int] = []
            if holders:
                # A holder whose daemon row is gone (pruned) is as dead as an ended one.
                alive = {
                    int(i)
                    for i in tx.conn.execute(
                        sa.select(daemons.c.id).where(
                            daemons.c.id.in_(list(holders)),
                            daemons.c.ended_at.is_(None),
                            daemons.c.heartbeat >= cutoff,
                        )
                    ).scalars()
                }
                dead = [h for h in holders if h not in alive and h != daemon_id]
            takeable: sa.ColumnElement[bool] = schedules.c.claimed_by.is_(None)
            if dead:
                takeable = sa.or_(takeable, schedules.c.claimed_by.in_(dead))
            query = (
                sa.select(schedules.c.id)
                .where(
                    takeable,
                    schedules.c.deleted.is_(False),
                    schedules.c.next_fire_at.is_not(None),
                )
                .order_by(schedules.c.next_fire_at)
                .limit(limit)
            )
            if self.db.dialect != "sqlite":
                query = query.with_for_update(skip_locked=True)
            ids = [int(i) for i in tx.conn.execute(query).scalars()]
            if ids:
                # lease_until is cleared: a value left by an older Norc means nothing now.
                tx.conn.execute(
                    sa.update(schedules)
                    .where(schedules.c.id.in_(ids))
                    .values(claimed_by=daemon_id, lease_until=None)
                )
        return ids

    def release(self, daemon_id: int, ids: Collection[int] | None = None) -> None:
        """Give leases back (all of them, or ``ids``), so other schedulers take them at once."""
        where = [schedules.c.claimed_by == daemon_id]
        if ids is not None:
            where.append(schedules.c.id.in_(list(ids)))
        with self.db.transaction() as tx:
            tx.conn.execute(
                sa.update(schedules).where(*where).values(claimed_by=None, lease_until=None)
            )

    def release_latest(self, daemon_id: int, count: int) -> list[int]:
        """Give back the ``count`` active schedules this scheduler holds that fire last."""
        with self.db.transaction() as tx:
            ids = [
                int(i)
                for i in tx.conn.execute(
                    sa.select(schedules.c.id)
                    .where(
                        schedules.c.claimed_by == daemon_id,
                        schedules.c.deleted.is_(False),
                        schedules.c.next_fire_at.is_not(None),
                    )
                    .order_by(schedules.c.next_fire_at.desc())
                    .limit(count)
                ).scalars()
            ]
            for chunk in _chunks(ids):
                tx.conn.execute(
                    sa.update(schedules)
                    .where(schedules.c.id.in_(chunk), schedules.c.claimed_by == daemon_id)
                    .values(claimed_by=None, lease_until=None)
                )
        return ids

    def edited_since(self, daemon_id: int, since: datetime) -> list[tuple[int, int]]:
        """(id, revision) of the schedules this scheduler holds that were edited since ``since``.

        Rows at revision 1 were never edited: whoever holds one read it whole when it
        leased it. Leaving them out keeps this poll small right after schedules were
        created in bulk (they are all recent, but none has changed).
        """
        with self.db.reading() as conn:
            return [
                (int(i), int(r))
                for i, r in conn.execute(
                    sa.select(schedules.c.id, schedules.c.revision).where(
                        schedules.c.claimed_by == daemon_id,
                        schedules.c.updated_at >= since,
                        schedules.c.revision > 1,
                    )
                ).all()
            ]

    def unowned_since(self, since: datetime, limit: int) -> int:
        """How many active schedules nobody holds were created or edited since ``since``
        (counting up to ``limit``)."""
        with self.db.reading() as conn:
            return len(
                conn.execute(
                    sa.select(schedules.c.id)
                    .where(
                        schedules.c.claimed_by.is_(None),
                        schedules.c.updated_at >= since,
                        schedules.c.deleted.is_(False),
                        schedules.c.next_fire_at.is_not(None),
                    )
                    .limit(limit)
                ).all()
            )

    def rows(self, ids: Collection[int]) -> list[dict[str, Any]]:
        """What a scheduler times these schedules by (read in chunks: SQLite limits bound
        parameters). Only the columns it needs: loading 100k schedules is mostly this."""
        c = schedules.c
        columns = (
            *(c.id, c.revision, c.claimed_by, c.deleted, c.paused, c.next_fire_at, c.error),
            *(c.kind, c.spec, c.timezone, c.start_at, c.period),
        )
        out: list[dict[str, Any]] = []
        with self.db.reading() as conn:
            for chunk in _chunks(list(ids)):
                query = sa.select(*columns).where(c.id.in_(chunk))
                out.extend(dict(r) for r in conn.execute(query).mappings())
        return out

    # -- firing ----------------------------------------------------------------------

    def lock_for_fire(
        self, tx: Transaction, daemon_id: int, ids: Sequence[int]
    ) -> list[dict[str, Any]]:
        """Lock the rows of due schedules still leased by this scheduler."""
        query = (
            sa.select(
                schedules,
                tasks.c.type.label("task_type"),
                tasks.c.overlap.label("task_overlap"),
            )
            # Outer: a schedule whose task row is gone comes back with no task type,
            # so the scheduler can set it aside with that reason instead of losing it.
            .join(tasks, tasks.c.id == schedules.c.task_id, isouter=True)
            .where(
                schedules.c.id.in_(list(ids)),
                schedules.c.claimed_by == daemon_id,
                schedules.c.deleted.is_(False),
                schedules.c.paused.is_(False),
                schedules.c.error.is_(None),
            )
        )
        if self.db.dialect != "sqlite":  # SQLite's BEGIN IMMEDIATE already excludes writers
            query = query.with_for_update(of=schedules)
        return [dict(r) for r in tx.conn.execute(query).mappings()]

    def fired(self, schedule_id: int, fire_time: datetime) -> bool:
        """Whether an instance of this schedule's fire exists already (one scheduler's
        duplicate insert refused because another fired it)."""
        query = sa.select(instances.c.id).where(
            instances.c.schedule_id == schedule_id, instances.c.fire_time == fire_time
        )
        with self.db.reading() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def advance(self, tx: Transaction, changes: Sequence[dict[str, Any]]) -> None:
        """Store each fired schedule's next fire time and remaining count (one executemany)."""
        if not changes:
            return
        tx.conn.execute(
            sa.update(schedules)
            .where(schedules.c.id == sa.bindparam("b_id"))
            .values(next_fire_at=sa.bindparam("b_next"), remaining=sa.bindparam("b_remaining")),
            [
                {"b_id": c["id"], "b_next": c["next_fire_at"], "b_remaining": c["remaining"]}
                for c in changes
            ],
        )
