"""Alert events, recorded as outbox rows in the transaction of the change behind them.

Each row is keyed by (rule, event, subject) and inserted with "ignore if present", so
an event is enqueued exactly once however many daemons see it (two survivors settling
one dead daemon, three daemons checking for late fires, a write retried).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from norc.alerts.rules import END_EVENTS, AlertRule
from norc.records import InstanceRecord
from norc.status import InstanceStatus
from norc.store.schema import daemons, instances, notifications, schedules, tasks, utcnow

if TYPE_CHECKING:
    from norc.app import Norc
    from norc.records import DaemonRecord, TaskRecord
    from norc.store.connections import Transaction

#: The ends a ``failure`` event is about (once no retry follows).
FAILED = frozenset(
    {
        InstanceStatus.FAILURE,
        InstanceStatus.ERROR,
        InstanceStatus.TIMEDOUT,
        InstanceStatus.INTERRUPTED,
    }
)
#: What a previous run must have ended as for a success to be ``recovered``.
_FAILED_BEFORE = [s.value for s in FAILED] + [InstanceStatus.HANDLED.value]
_RAN = [InstanceStatus.SUCCESS.value, *_FAILED_BEFORE]
_ON_SUCCESS = frozenset({"success", "recovered", "output"})
_ON_FAILURE = frozenset({"failure"})


def notification_row(
    rule: AlertRule,
    event: str,
    subject: str,
    now: datetime,
    *,
    instance_id: int | None = None,
    daemon_id: int | None = None,
    schedule_id: int | None = None,
    payload: dict[str, Any] | None = None,
    due: datetime | None = None,
) -> dict[str, Any]:
    """An outbox row, pending and due at once (or at ``due``)."""
    return {
        "rule_id": rule.id,
        "event": event,
        "subject": subject,
        "instance_id": instance_id,
        "daemon_id": daemon_id,
        "schedule_id": schedule_id,
        "payload": payload or {},
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": due or now,
        "created_at": now,
    }


def insert_notifications(tx: Transaction, dialect: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert outbox rows, skipping those whose (rule, event, subject) is there already."""
    if not rows:
        return
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(notifications).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(notifications).on_conflict_do_nothing()
    else:  # MariaDB/MySQL: IGNORE skips the duplicate key (and only warns on others)
        statement = sa.insert(notifications).prefix_with("IGNORE")
    tx.conn.execute(statement, list(rows))


def _rules_for(
    app: Norc, events: frozenset[str] | set[str], tx: Transaction | None = None
) -> list[AlertRule]:
    rules = app.alert_rules.current(tx.conn if tx is not None else None)
    return [r for r in rules if r.events & events]


def instances_ended(
    app: Norc,
    tx: Transaction,
    ended: Sequence[tuple[InstanceRecord, TaskRecord | None, InstanceStatus]],
    *,
    executor_id: int | None = None,
) -> None:
    """Record ``failure``, ``success``, ``recovered`` and ``output`` for instances ended
    in ``tx`` (a None task: no retry can follow, e.g. a Job's own instance).

    Without rules this is one look at the handle's rule cache. ``executor_id`` says
    the ends are an executor's conditional writes, some of which may have found the
    instance ended already (stopped from outside): those are checked in ``tx`` first.
    """
    rules = _rules_for(app, END_EVENTS, tx)
    if not rules or not ended:
        return
    from norc.lifecycle import wants_retry

    # Only ends some rule wants: a rule on failures costs nothing for the successes.
    candidates = []
    matched: dict[tuple[str, int | None, frozenset[str]], list[AlertRule]] = {}
    for instance, task, status in ended:
        if status is InstanceStatus.SUCCESS:
            possible = _ON_SUCCESS
        elif status in FAILED and (task is None or not wants_retry(task, instance, status)):
            possible = _ON_FAILURE
        else:
            continue
        key = (instance.task_name, instance.schedule_id, possible)
        if key not in matched:  # a batch is often many runs of a few tasks
            matched[key] = [
                r
                for r in rules
                if r.events & possible and r.matches(instance.task_name, instance.schedule_id)
            ]
        if matched[key]:
            candidates.append((instance, status, possible, matched[key]))
    if not candidates:
        return
    if executor_id is not None:
        ids = [instance.id for instance, *_ in candidates]
        actual = dict(
            tx.conn.execute(
                sa.select(instances.c.id, instances.c.status).where(
                    instances.c.id.in_(ids), instances.c.executor_id == executor_id
                )
            ).all()
        )
        candidates = [c for c in candidates if actual.get(c[0].id) == c[1].value]
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for instance, status, possible, matching in candidates:
        payload = {"status": status.value, "attempt": instance.attempt}
        # `output` (cron's MAILTO: a run that printed something) is only known from the
        # log, which the sender reads: it drops the row if the run printed nothing.
        events = set(possible) - {"recovered"}
        if (
            "recovered" in possible
            and any("recovered" in r.events for r in matching)
            and _failed_before(tx, instance)
        ):
            events.add("recovered")
        for rule in matching:
            for event in events & rule.events:
                rows.append(
                    notification_row(
                        rule,
                        event,
                        f"instance:{instance.id}",
                        now,
                        instance_id=instance.id,
                        schedule_id=instance.schedule_id,
                        payload=payload,
                    )
                )
    insert_notifications(tx, app.db.dialect, rows)


def executor_wrote(
    app: Norc,
    tx: Transaction,
    executor_id: int | None,
    rows: Sequence[dict[str, Any]],
    batch: Sequence[tuple[Any, Any]],
) -> None:
    """The executor recorder's one call, for the outcomes it wrote in one batch without
    a look at each (``rows``: the ``finish_instances`` dicts; ``batch``: its (work,
    outcome) pairs). Without rules it returns after a look at the rule cache: the
    recorder writes thousands a second."""
    rules = app.alert_rules.current(tx.conn) if rows else ()
    if not rules:
        return
    # Only the statuses some rule wants, with one string comparison per outcome: rules
    # on failures cost next to nothing for a batch of successes.
    wanted = frozenset().union(*(r.events for r in rules))
    statuses: set[str] = set()
    if wanted & _ON_SUCCESS:
        statuses.add(InstanceStatus.SUCCESS.value)
    if wanted & _ON_FAILURE:
        statuses.update(s.value for s in FAILED)
    picked = {row["id"]: row["status"] for row in rows if row["status"] in statuses}
    if not picked:
        return
    ended = [
        (w.instance, w.task, InstanceStatus(picked[w.instance.id]))
        for w, _ in batch
        if w.instance.id in picked
    ]
    instances_ended(app, tx, ended, executor_id=executor_id)


def job_ended(app: Norc, tx: Transaction, job_id: int, status: InstanceStatus) -> None:
    """Record the end events of a Job's own instance, which this transaction ended."""
    if not _rules_for(app, END_EVENTS, tx):
        return
    row = tx.conn.execute(
        sa.select(
            instances.c.id,
            instances.c.task_id,
            instances.c.queue,
            instances.c.attempt,
            instances.c.schedule_id,
            instances.c.first_attempt_id,
            tasks.c.name,
            tasks.c.type,
        )
        .join(tasks, tasks.c.id == instances.c.task_id)
        .where(instances.c.id == job_id)
    ).first()
    if row is None:
        return
    record = InstanceRecord(
        id=int(row.id),
        task_id=int(row.task_id),
        task_name=row.name,
        task_type=row.type,
        queue=row.queue,
        status=status,
        attempt=int(row.attempt),
        schedule_id=row.schedule_id,
        first_attempt_id=row.first_attempt_id,
    )
    instances_ended(app, tx, [(record, None, status)])


def _failed_before(tx: Transaction, instance: InstanceRecord) -> bool:
    """Whether the task's previous run (not an attempt of this one) ended failed."""
    chain = instance.first_attempt_id or instance.id
    previous = tx.conn.execute(
        sa.select(instances.c.status)
        .where(
            instances.c.task_id == instance.task_id,
            instances.c.id != chain,
            sa.or_(instances.c.first_attempt_id.is_(None), instances.c.first_attempt_id != chain),
            instances.c.status.in_(_RAN),
            instances.c.id < instance.id,
        )
        .order_by(instances.c.created_at.desc(), instances.c.id.desc())
        .limit(1)
    ).scalar()
    return previous in _FAILED_BEFORE


def fires_skipped(
    app: Norc, tx: Transaction, rows: Sequence[dict[str, Any]], ids: Sequence[int]
) -> None:
    """Record ``missed`` for schedule fires inserted as SKIPPED (by ``enqueue_rows``)."""
    rules = _rules_for(app, {"missed"}, tx)
    if not rules:
        return
    skipped = [
        (instance_id, row)
        for instance_id, row in zip(ids, rows, strict=True)
        if row["status"] == InstanceStatus.SKIPPED.value and row.get("schedule_id") is not None
    ]
    if not skipped:
        return
    task_ids = {int(row["task_id"]) for _, row in skipped}
    names = dict(
        tx.conn.execute(sa.select(tasks.c.id, tasks.c.name).where(tasks.c.id.in_(task_ids))).all()
    )
    now = utcnow()
    out = []
    for instance_id, row in skipped:
        for rule in rules:
            if rule.matches(names.get(row["task_id"]), row["schedule_id"]):
                out.append(
                    notification_row(
                        rule,
                        "missed",
                        f"instance:{instance_id}",
                        now,
                        instance_id=instance_id,
                        schedule_id=row["schedule_id"],
                        payload={"error": row.get("error")},
                    )
                )
    insert_notifications(tx, app.db.dialect, out)


def daemon_settled(app: Norc, tx: Transaction, daemon: DaemonRecord, reason: str) -> None:
    """Record ``daemon`` for a daemon settled dead, if it was this transaction (or a
    racing survivor with the same verdict: the outbox key keeps that to one) that ended it."""
    rules = _rules_for(app, {"daemon"}, tx)
    if not rules:
        return
    ended_here = tx.conn.execute(
        sa.select(daemons.c.id).where(
            daemons.c.id == daemon.id, daemons.c.ended_at.is_not(None), daemons.c.error == reason
        )
    ).first()
    if ended_here is None:
        return
    now = utcnow()
    rows = [
        notification_row(
            rule,
            "daemon",
            f"daemon:{daemon.id}",
            now,
            daemon_id=daemon.id,
            payload={"reason": reason},
        )
        for rule in rules
    ]
    insert_notifications(tx, app.db.dialect, rows)


def check_overdue(app: Norc, *, silent: bool = True) -> None:
    """Record ``late`` fires and (with ``silent``) ``silent`` tasks, from the database
    alone (housekeeping: so a late fire is noticed with no scheduler or executor alive,
    by any daemon)."""
    late_rules = _rules_for(app, {"late"})
    silent_rules = [r for r in _rules_for(app, {"silent"}) if r.within is not None and silent]
    if not late_rules and not silent_rules:
        return
    now = utcnow()
    with app.db.transaction() as tx:
        rows = _late(tx, late_rules, now) if late_rules else []
        if silent_rules:
            rows += _silent(tx, silent_rules, now)
        insert_notifications(tx, app.db.dialect, rows)


def _late(tx: Transaction, rules: list[AlertRule], now: datetime) -> list[dict[str, Any]]:
    cutoff = now - timedelta(seconds=min(r.late_after for r in rules))
    # Fires no scheduler has handled (no scheduler alive, or wedged) ...
    unfired = tx.conn.execute(
        sa.select(schedules.c.id, schedules.c.next_fire_at, tasks.c.name)
        .join(tasks, tasks.c.id == schedules.c.task_id)
        .where(
            schedules.c.deleted.is_(False),
            schedules.c.paused.is_(False),
            schedules.c.next_fire_at < cutoff,
        )
    ).all()
    # ... and fires whose instance waits in its queue (no executor, a stuck queue).
    waiting = tx.conn.execute(
        sa.select(instances.c.id, instances.c.schedule_id, instances.c.fire_time, tasks.c.name)
        .join(tasks, tasks.c.id == instances.c.task_id)
        .where(
            instances.c.status == InstanceStatus.QUEUED.value,
            instances.c.schedule_id.is_not(None),
            instances.c.fire_time < cutoff,
            # A retry keeps its fire time and waits out its backoff: not late.
            instances.c.attempt == 1,
        )
    ).all()
    found: list[tuple[int, datetime, str, int | None]]
    found = [(int(r.id), r.next_fire_at, r.name, None) for r in unfired]
    found += [(int(r.schedule_id), r.fire_time, r.name, int(r.id)) for r in waiting]
    out = []
    for schedule_id, fire_time, task_name, instance_id in found:
        for rule in rules:
            overdue = (now - fire_time).total_seconds()
            if overdue >= rule.late_after and rule.matches(task_name, schedule_id):
                out.append(
                    notification_row(
                        rule,
                        "late",
                        # One per fire, whether it is noticed before or after it is queued.
                        f"fire:{schedule_id}:{fire_time.isoformat()}",
                        now,
                        instance_id=instance_id,
                        schedule_id=schedule_id,
                        payload={
                            "task": task_name,
                            "fire_time": fire_time.isoformat(),
                            "late_after": rule.late_after,
                        },
                    )
                )
    return out


def _silent(tx: Transaction, rules: list[AlertRule], now: datetime) -> list[dict[str, Any]]:
    all_tasks = tx.conn.execute(sa.select(tasks.c.id, tasks.c.name)).all()
    scheduled: dict[int, set[int]] = {}
    if any(r.schedule_id is not None for r in rules):
        for schedule_id, task_id in tx.conn.execute(sa.select(schedules.c.id, schedules.c.task_id)):
            scheduled.setdefault(int(task_id), set()).add(int(schedule_id))
    out = []
    last: dict[int, tuple[int, datetime] | None] = {}
    for rule in rules:
        assert rule.within is not None
        for task_id, task_name in all_tasks:
            if rule.schedule_id is not None:
                if rule.schedule_id not in scheduled.get(int(task_id), set()):
                    continue
                if rule.task_glob is not None and not rule.matches(task_name, None):
                    continue
            elif not rule.matches(task_name, None):
                continue
            if task_id not in last:
                found = tx.conn.execute(
                    sa.select(instances.c.id, instances.c.ended_at)
                    .where(
                        instances.c.task_id == task_id,
                        instances.c.status == InstanceStatus.SUCCESS.value,
                    )
                    .order_by(instances.c.created_at.desc())
                    .limit(1)
                ).first()
                last[task_id] = (int(found.id), found.ended_at) if found else None
            success = last[task_id]
            since = max(rule.created_at, success[1]) if success else rule.created_at
            if (now - since).total_seconds() < rule.within:
                continue
            out.append(
                notification_row(
                    rule,
                    "silent",
                    # One per silence: a success starts the next one.
                    f"silent:{task_id}:{success[0] if success else 0}",
                    now,
                    payload={
                        "task": task_name,
                        "since": since.isoformat(),
                        "within": rule.within,
                        "last_success_instance": success[0] if success else None,
                    },
                )
            )
    return out
