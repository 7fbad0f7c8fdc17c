"""The data behind ``norc report``, ``norc status`` and the web page: one implementation.

Each function returns plain rows (dicts of JSON-friendly values, datetimes as ISO 8601
strings via :func:`jsonable`), so the CLI prints them as tables or JSON and the web API
serves them unchanged.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from norc.control import is_alive
from norc.status import STATUS_GROUPS, InstanceStatus
from norc.store.schema import instances, schedules

if TYPE_CHECKING:
    from norc.app import Norc


def jsonable(value: Any) -> Any:
    """Datetimes to ISO strings, recursively; everything else as is."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _group_counts(by_status: dict[str, int]) -> dict[str, int]:
    return {
        group: sum(by_status.get(s.value, 0) for s in STATUS_GROUPS[group])
        for group in ("running", "succeeded", "failed")
    }


def daemons(
    app: Norc,
    kind: str,
    *,
    since: datetime | None = None,
    limit: int | None = 50,
    alive_only: bool = False,
) -> list[dict[str, Any]]:
    """Executors or schedulers: liveness, heartbeat age, and what they did."""
    now = datetime.now(UTC)
    rows = []
    records = [
        d
        for d in app.db.daemons(kind=kind)
        if (since is None or d.ended_at is None or d.ended_at >= since)
        and (not alive_only or is_alive(app, d, now))
    ][:limit]
    counts = app.db.counts_by_executor([d.id for d in records]) if kind == "executor" else {}
    held: Counter[int] = Counter()
    if kind == "scheduler" and records:
        with app.db.reading() as conn:
            for owner, n in conn.execute(
                sa.select(schedules.c.claimed_by, sa.func.count())
                .where(schedules.c.claimed_by.in_([d.id for d in records]))
                .group_by(schedules.c.claimed_by)
            ).all():
                held[int(owner)] = int(n)
    for d in records:
        row = {
            "id": d.id,
            "kind": d.kind,
            "host": d.host,
            "pid": d.pid,
            "queue": d.queue,
            "concurrency": d.concurrency,
            "status": d.status,
            "request": d.request,
            "alive": is_alive(app, d, now),
            "heartbeat": d.heartbeat,
            "heartbeat_age": round((now - d.heartbeat).total_seconds(), 1) if d.heartbeat else None,
            "started_at": d.started_at,
            "ended_at": d.ended_at,
            "error": d.error,
        }
        if kind == "executor":
            row.update(_group_counts(counts.get(d.id, {})))
        else:
            row["schedules"] = held.get(d.id, 0)
        rows.append(row)
    return rows


def queues(app: Norc) -> list[dict[str, Any]]:
    """Queues: type, depth (approximate for external queues) and live consumers."""
    from norc.errors import NorcError

    consumers = Counter(d.queue for d in app.db.daemons(kind="executor") if is_alive(app, d))
    rows = []
    for name, type_name, settings in app.queues():
        try:
            depth: int | None = app.queue(name).count()
        except NorcError:
            depth = None  # its plugin is not installed here
        rows.append(
            {
                "name": name,
                "type": type_name,
                "depth": depth,
                "consumers": consumers.get(name, 0),
                "settings": settings,
            }
        )
    for name, members in app.db.list_queue_groups():
        rows.append(
            {
                "name": name,
                "type": "group",
                "depth": None,
                "consumers": consumers.get(name, 0),
                "settings": {"queues": members},
            }
        )
    return rows


def tasks(
    app: Norc, *, since: datetime | None = None, task: str | None = None
) -> list[dict[str, Any]]:
    """Tasks (or one, by name) with how their instances went since ``since``, next fire."""
    records = app.tasks() if task is None else [app.task_record(task)]
    query = sa.select(instances.c.task_id, instances.c.status, sa.func.count()).group_by(
        instances.c.task_id, instances.c.status
    )
    if task is not None:
        query = query.where(instances.c.task_id == records[0].id)
    if since is not None:
        query = query.where(instances.c.created_at >= since)
    per_task: dict[int, dict[str, int]] = {}
    with app.db.reading() as conn:
        for task_id, status, n in conn.execute(query).all():
            per_task.setdefault(int(task_id), {})[str(status)] = int(n)
    next_fire: dict[int, datetime] = {}
    for s in app.schedules(task=task):
        if s.next_fire_at and not s.paused:
            current = next_fire.get(s.task_id)
            next_fire[s.task_id] = min(current, s.next_fire_at) if current else s.next_fire_at
    rows = []
    for t in records:
        counts = _group_counts(per_task.get(t.id, {}))
        done = counts["succeeded"] + counts["failed"]
        rows.append(
            {
                "id": t.id,
                "name": t.name,
                "type": t.type,
                "plugin": t.plugin,
                "timeout": t.timeout,
                "description": t.description,
                "params": t.params,
                **counts,
                "success_rate": round(counts["succeeded"] / done, 3) if done else None,
                "next_fire": next_fire.get(t.id),
            }
        )
    return rows


def schedules_(
    app: Norc, *, task: str | None = None, include_deleted: bool = False
) -> list[dict[str, Any]]:
    """Schedules with their state and next fire."""
    rows = []
    for r in app.schedules(task=task, include_deleted=include_deleted):
        state = (
            "deleted"
            if r.deleted
            else "paused"
            if r.paused
            else "error"
            if r.error
            else ("finished" if r.next_fire_at is None else "active")
        )
        when = r.label if r.kind == "cron" else (f"every {r.period:g}s" if r.period else "once")
        rows.append(
            {
                "id": r.id,
                "task": r.task_name,
                "when": when,
                "spec": r.spec,
                "kind": r.kind,
                "timezone": r.timezone,
                "queue": r.queue,
                "state": state,
                "repetitions": r.repetitions,
                "remaining": r.remaining,
                "make_up": r.make_up,
                "next_fire": r.next_fire_at,
                "scheduler": r.claimed_by,
                "error": r.error,
            }
        )
    return rows


def status(app: Norc, *, since: datetime) -> dict[str, Any]:
    """The one-screen overview: daemons, queues, instance counts since ``since``."""
    with app.db.reading() as conn:
        by_status = {
            str(s): int(n)
            for s, n in conn.execute(
                sa.select(instances.c.status, sa.func.count())
                # Naming every status lets the (status, created_at) index seek per status
                # instead of scanning it whole: milliseconds at a million rows.
                .where(
                    instances.c.status.in_([s.value for s in InstanceStatus]),
                    instances.c.created_at >= since,
                )
                .group_by(instances.c.status)
            ).all()
        }
    failures = app.instances(status=STATUS_GROUPS["failed"], since=since, limit=5)
    return {
        "since": since,
        "executors": daemons(app, "executor", alive_only=True, limit=None),
        "schedulers": daemons(app, "scheduler", alive_only=True, limit=None),
        "queues": queues(app),
        "instances": {s.value: by_status.get(s.value, 0) for s in InstanceStatus},
        "recent_failures": [f.to_json() for f in failures],
    }


def job_nodes(app: Norc, job_name: str, *, instance_id: int | None = None) -> list[dict[str, Any]]:
    """A Job's nodes in dependency order; with ``instance_id``, how each went in that run."""
    from norc.errors import NorcError
    from norc.jobs import Job

    job = app.task(job_name)
    if not isinstance(job, Job):
        raise NorcError(f"task {job_name!r} is a {type(job).type_name}, not a Job")
    latest: dict[str, Any] = {}
    if instance_id is not None:
        run = app.instance(instance_id)
        if run.task_id != job.id:
            raise NorcError(f"instance {instance_id} is not a run of job {job_name!r}")
        for node_run in app.db.find_instances(job_instance_id=instance_id, limit=None):
            current = latest.get(node_run.job_node or "")
            if current is None or node_run.attempt > current.attempt:
                latest[node_run.job_node or ""] = node_run
    by_name = {n["name"]: n for n in job.nodes}
    rows = []
    for name in job.order():
        node = by_name[name]
        row: dict[str, Any] = {
            "node": name,
            "task": node["task"],
            "after": ", ".join(node.get("after", [])) or "-",
            "queue": node.get("queue"),
        }
        if instance_id is not None:
            r = latest.get(name)
            row.update(
                instance=r.id if r else None,
                status=r.status.value if r else "PENDING",
                attempt=r.attempt if r else None,
                started_at=r.started_at if r else None,
                ended_at=r.ended_at if r else None,
                error=r.error if r else None,
            )
        rows.append(row)
    return rows
