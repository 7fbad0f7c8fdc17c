"""What happens around an instance's end and start, wherever it ends or starts.

- :func:`after_end` runs inside the transaction that ended instances (an executor's
  recorder, a survivor settling a dead executor, a stop request): it creates retries
  (each attempt is a row of its own, linked to the first) and advances Jobs.
- :func:`stop_instances` ends instances from outside their executor: QUEUED ones are
  SKIPPED (their queue items released), RUNNING ones INTERRUPTED — their executor sees
  it within half a second and kills the process group; Job instances are cancelled
  with all their nodes.
- :func:`overlap_verdict` applies a task's overlap policy when a new run is created.
"""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from norc.abc import INDEPENDENT_OVERLAP
from norc.alerts import events as alert_events
from norc.enqueue import enqueue_rows
from norc.errors import NorcError
from norc.records import InstanceRecord, TaskRecord
from norc.status import InstanceStatus
from norc.store.schema import instances, tasks, utcnow

if TYPE_CHECKING:
    from norc.app import Norc
    from norc.store.connections import Transaction

ACTIVE = (InstanceStatus.QUEUED.value, InstanceStatus.RUNNING.value, InstanceStatus.CREATED.value)


def retry_delay(task: TaskRecord, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential, capped, jittered."""
    base = min(task.retry_max_delay, task.retry_delay * task.retry_backoff ** (attempt - 1))
    spread = (rng or random).uniform(-task.retry_jitter, task.retry_jitter)
    return max(0.0, base * (1 + spread))


def wants_retry(task: TaskRecord, instance: InstanceRecord, status: InstanceStatus) -> bool:
    """Whether an attempt that ended in ``status`` gets another one."""
    return status.value in task.retry_on and instance.attempt <= task.max_retries


def after_end(
    app: Norc, tx: Transaction, ended: Sequence[tuple[InstanceRecord, TaskRecord, InstanceStatus]]
) -> list[int]:
    """Alert events for the ends, retries for attempts that earned one, then advance
    the Jobs of ended nodes.

    Only call it for instances whose end this transaction actually recorded (the end
    updates are conditional), so a retry is created exactly once. Returns retry ids.
    """
    alert_events.instances_ended(app, tx, ended)
    now = utcnow()
    retry_rows: list[dict[str, Any]] = []
    retry_types: list[tuple[str, datetime]] = []
    for instance, task, status in ended:
        if not wants_retry(task, instance, status):
            continue
        available = now + timedelta(seconds=retry_delay(task, instance.attempt))
        retry_rows.append(
            {
                "task_id": instance.task_id,
                "queue": instance.queue,
                "priority": instance.priority,
                "status": InstanceStatus.QUEUED.value,
                "attempt": instance.attempt + 1,
                "first_attempt_id": instance.first_attempt_id or instance.id,
                "schedule_id": instance.schedule_id,
                "fire_time": instance.fire_time,
                "job_instance_id": instance.job_instance_id,
                "job_node": instance.job_node,
                "created_at": now,
                "enqueued_at": now,
            }
        )
        retry_types.append((task.type, available))
    retry_ids = enqueue_rows(
        app,
        tx,
        retry_rows,
        [task_type for task_type, _ in retry_types],
        [available for _, available in retry_types],
    )
    jobs_to_advance = {i.job_instance_id for i, _, _ in ended if i.job_instance_id is not None}
    if jobs_to_advance:
        from norc import jobs

        jobs.advance(app, tx, jobs_to_advance)
    return retry_ids


def stop_instances(
    app: Norc, tx: Transaction, instance_ids: Collection[int], *, reason: str
) -> list[int]:
    """End active instances from outside their executor; returns the ids it ended."""
    if not instance_ids:
        return []
    rows = tx.conn.execute(
        sa.select(
            instances.c.id,
            instances.c.status,
            instances.c.queue,
            instances.c.executor_id,
            instances.c.job_instance_id,
            tasks.c.type,
        )
        .join(tasks, tasks.c.id == instances.c.task_id)
        .where(instances.c.id.in_(sorted(instance_ids)), instances.c.status.in_(ACTIVE))
    ).all()
    parents = {int(r.job_instance_id) for r in rows if r.job_instance_id is not None}
    now = utcnow()
    from norc.jobs import Job, cancel

    ended: list[int] = []
    release: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.type == Job.type_name and row.status == InstanceStatus.RUNNING.value:
            cancel(app, tx, int(row.id), InstanceStatus.INTERRUPTED, reason)
            ended.append(int(row.id))
            continue
        new = (
            InstanceStatus.INTERRUPTED
            if row.status == InstanceStatus.RUNNING.value
            else (InstanceStatus.SKIPPED)
        )
        done = tx.conn.execute(
            sa.update(instances)
            .where(instances.c.id == row.id, instances.c.status == row.status)
            .values(status=new.value, ended_at=now, error=reason)
        ).rowcount
        if done:
            ended.append(int(row.id))
            release[row.queue].append(int(row.id))
    for queue, ids in release.items():
        # A queue whose plugin is not installed here keeps its items; claims drop them.
        with contextlib.suppress(NorcError):
            app.queue(queue).release(ids, tx)
    if parents:
        # A stopped node is a failed node: its Job skips its descendants and may end.
        # (No retry: stopping is deliberate.) Jobs being cancelled are no longer
        # RUNNING, so advancing them does nothing.
        from norc.jobs import advance

        advance(app, tx, parents)
    return ended


def overlap_verdict(
    app: Norc, tx: Transaction, task_id: int, policy: str, *, new_label: str
) -> str | None:
    """Apply an overlap policy before creating a run of a task.

    Returns None when the new run goes ahead, or the reason it is SKIPPED. ``replace``
    stops the active runs first. ``queue`` lets the run be created; executors start
    it only once the earlier ones ended (it counts as a concurrency limit of one).
    The task row is locked, so two schedulers creating runs of one task take turns.
    """
    if policy in INDEPENDENT_OVERLAP:
        return None
    lock = sa.select(tasks.c.id).where(tasks.c.id == task_id)
    if app.db.dialect != "sqlite":
        lock = lock.with_for_update()
    tx.conn.execute(lock)
    active = [
        int(i)
        for i in tx.conn.execute(
            sa.select(instances.c.id).where(
                instances.c.task_id == task_id, instances.c.status.in_(ACTIVE)
            )
        ).scalars()
    ]
    if not active:
        return None
    if policy == "skip":
        return f"skipped: overlap policy 'skip' and instance {active[0]} is still active"
    if policy == "replace":
        stop_instances(app, tx, active, reason=f"replaced by a new run ({new_label})")
        return None
    raise NorcError(f"unknown overlap policy {policy!r}")
