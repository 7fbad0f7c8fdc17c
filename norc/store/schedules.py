"""The SQL of schedules: editing, leases between schedulers, and firing."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from norc.errors import UnknownName
from norc.records import ScheduleRecord
from norc.store.schema import schedules, tasks, utcnow

if TYPE_CHECKING:
    from norc.store.database import Database, Transaction


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
    )


class ScheduleStore:
    """Schedules in one database (``Database.schedules``)."""

    def __init__(self, db: Database) -> None:
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

    # -- leases ----------------------------------------------------------------------

    def renew(self, daemon_id: int, until: datetime) -> set[int]:
        """Extend every lease this scheduler holds; returns the ids it still holds."""
        with self.db.transaction() as tx:
            tx.conn.execute(
                sa.update(schedules)
                .where(schedules.c.claimed_by == daemon_id)
                .values(lease_until=until)
            )
            held = tx.conn.execute(
                sa.select(schedules.c.id).where(
                    schedules.c.claimed_by == daemon_id, schedules.c.deleted.is_(False)
                )
            ).scalars()
            return {int(i) for i in held}

    def active_count(self) -> int:
        """How many schedules still have fires ahead (the work schedulers share)."""
        with self.db.reading() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        schedules.c.deleted.is_(False), schedules.c.next_fire_at.is_not(None)
                    )
                ).scalar_one()
            )

    def acquire(self, daemon_id: int, limit: int, until: datetime) -> list[int]:
        """Lease up to ``limit`` unowned or expired schedules, soonest first."""
        now = utcnow()
        query = (
            sa.select(schedules.c.id)
            .where(
                schedules.c.deleted.is_(False),
                schedules.c.next_fire_at.is_not(None),
                sa.or_(schedules.c.claimed_by.is_(None), schedules.c.lease_until < now),
            )
            .order_by(schedules.c.next_fire_at)
            .limit(limit)
        )
        if self.db.dialect != "sqlite":
            query = query.with_for_update(skip_locked=True)
        with self.db.transaction() as tx:
            ids = [int(i) for i in tx.conn.execute(query).scalars()]
            if ids:
                tx.conn.execute(
                    sa.update(schedules)
                    .where(schedules.c.id.in_(ids))
                    .values(claimed_by=daemon_id, lease_until=until)
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

    def changed_since(self, daemon_id: int, since: datetime) -> list[dict[str, Any]]:
        """Rows this scheduler holds, or nobody holds, edited since ``since``."""
        with self.db.reading() as conn:
            rows = conn.execute(
                sa.select(schedules).where(
                    schedules.c.updated_at >= since,
                    sa.or_(schedules.c.claimed_by == daemon_id, schedules.c.claimed_by.is_(None)),
                )
            ).mappings()
            return [dict(r) for r in rows]

    def rows(self, ids: Collection[int]) -> list[dict[str, Any]]:
        """Full rows of these schedules."""
        if not ids:
            return []
        with self.db.reading() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    sa.select(schedules).where(schedules.c.id.in_(list(ids)))
                ).mappings()
            ]

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
            .join(tasks, tasks.c.id == schedules.c.task_id)
            .where(
                schedules.c.id.in_(list(ids)),
                schedules.c.claimed_by == daemon_id,
                schedules.c.deleted.is_(False),
                schedules.c.paused.is_(False),
            )
        )
        if self.db.dialect != "sqlite":  # SQLite's BEGIN IMMEDIATE already excludes writers
            query = query.with_for_update(of=schedules)
        return [dict(r) for r in tx.conn.execute(query).mappings()]

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
