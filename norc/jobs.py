"""Jobs: a Task whose body is a graph of other tasks (flow 4 of the design).

Building: ``job = Job(name="nightly"); a = job.add("extract"); job.add("load",
after=[a])``; ``app.save_task(job)`` validates the graph (unknown tasks, cycles,
dependencies on another job's nodes, a Job nested in itself) with errors naming the
nodes. The graph is stored in the Job's own params, so it changes atomically with the
task and each run uses the graph it started with... of the moment each node starts.

Running: a Job instance is never run in a worker and holds no executor slot. The
executor that claims it *starts* it: in one transaction the nodes without parents are
enqueued. Whoever records the end of a node (any executor, on any host) *advances* the
job in the same transaction: children whose parents all succeeded are enqueued, the
descendants of a node that failed (after its retries) are recorded SKIPPED, and when
every node has ended the Job instance ends (SUCCESS, or FAILURE naming the failed
nodes). The Job instance row is locked while advancing, and a unique key on (job
instance, node, attempt) backs it, so two parents ending at the same moment on two
hosts never enqueue a child twice. Nested Jobs are nodes like any other: when a nested
Job instance ends, its parent Job advances.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from norc.abc import RunContext, Task
from norc.alerts import events as alert_events
from norc.enqueue import enqueue_rows
from norc.errors import NorcError
from norc.status import FINAL_INSTANCE_STATUSES, InstanceStatus
from norc.store.schema import instances, tasks, utcnow

if TYPE_CHECKING:
    from norc.app import Norc
    from norc.store.connections import Transaction


class InvalidJob(NorcError, ValueError):
    """A Job's graph is invalid: the message names the nodes."""


@attrs.frozen
class JobNode:
    """A node of one Job, returned by :meth:`Job.add`; pass it in ``after=``."""

    job: Job = attrs.field(eq=False, repr=False)
    name: str


def _nodes_valid(instance: object, attribute: attrs.Attribute[Any], value: list[Any]) -> None:
    for node in value:
        if (
            not isinstance(node, dict)
            or not isinstance(node.get("name"), str)
            or not isinstance(node.get("task"), str)
        ):
            raise InvalidJob(f"job node {node!r} needs a 'name' and a 'task'")


@attrs.define(kw_only=True)
class Job(Task):
    """A graph of tasks: each node runs a saved task once its parents have succeeded."""

    type_name = "Job"
    #: Tasks whose instances are expanded by the executor instead of run in a worker.
    expands = True

    #: ``[{"name": ..., "task": ..., "after": [...], "queue": ...}]``, in insertion order.
    nodes: list[dict[str, Any]] = attrs.field(factory=list, validator=_nodes_valid)

    def add(
        self,
        task: Task | str,
        *,
        name: str | None = None,
        after: Sequence[JobNode | str] = (),
        queue: str | None = None,
    ) -> JobNode:
        """Add a node running ``task`` (a saved task or its name) after the ``after`` nodes.

        ``name`` defaults to the task's name; ``queue`` to the Job instance's queue.
        """
        task_name = task if isinstance(task, str) else task.name
        node_name = name or task_name
        if any(n["name"] == node_name for n in self.nodes):
            raise InvalidJob(f"job {self.name!r} already has a node {node_name!r}; pass name=")
        parents = []
        for parent in after:
            if isinstance(parent, JobNode):
                if parent.job is not self:
                    raise InvalidJob(
                        f"node {node_name!r} of job {self.name!r} cannot depend on node"
                        f" {parent.name!r} of job {parent.job.name!r}"
                    )
                parents.append(parent.name)
            else:
                parents.append(parent)
        self.nodes.append({"name": node_name, "task": task_name, "after": parents, "queue": queue})
        return JobNode(self, node_name)

    def run(self, ctx: RunContext) -> bool:
        """Never called: executors expand Jobs instead (see the module docstring)."""
        raise NorcError("a Job is started by an executor, not run")

    # -- validation ------------------------------------------------------------------

    def order(self) -> list[str]:
        """Node names in an order where every node comes after its parents.

        Raises :class:`InvalidJob` for unknown parents or a cycle (naming its nodes).
        """
        names = [n["name"] for n in self.nodes]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise InvalidJob(f"job {self.name!r} has duplicate node names: {', '.join(dup)}")
        known = set(names)
        children: dict[str, list[str]] = {n: [] for n in names}
        waiting: dict[str, int] = {}
        for node in self.nodes:
            for parent in node.get("after", []):
                if parent not in known:
                    raise InvalidJob(
                        f"node {node['name']!r} of job {self.name!r} depends on unknown node"
                        f" {parent!r}"
                    )
                children[parent].append(node["name"])
            waiting[node["name"]] = len(set(node.get("after", [])))
        ready = [n for n in names if waiting[n] == 0]
        ordered: list[str] = []
        while ready:
            current = ready.pop()
            ordered.append(current)
            for child in children[current]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        if len(ordered) != len(names):
            cycle = sorted(n for n in names if waiting[n] > 0)
            raise InvalidJob(f"job {self.name!r} has a cycle among nodes: {', '.join(cycle)}")
        return ordered

    def on_save(self, app: Norc) -> None:
        """Validate against the database: every node's task exists; no Job contains itself."""
        self.order()
        wanted = {n["task"] for n in self.nodes}
        with app.db.reading() as conn:
            rows = conn.execute(
                sa.select(tasks.c.name, tasks.c.type, tasks.c.params).where(
                    tasks.c.name.in_(sorted(wanted))
                )
            ).all()
        found = {r.name: r for r in rows}
        missing = sorted(n["name"] for n in self.nodes if n["task"] not in found)
        if missing:
            raise InvalidJob(
                f"job {self.name!r}: nodes {', '.join(missing)} run tasks that do not exist"
            )
        self._check_nesting(app, {r.name: r for r in rows if r.type == Job.type_name}, [self.name])

    def _check_nesting(self, app: Norc, nested: dict[str, Any], path: list[str]) -> None:
        for name, row in nested.items():
            if name in path:
                raise InvalidJob(f"job {path[0]!r} contains itself: {' -> '.join([*path, name])}")
            inner = row.params.get("nodes", [])
            inner_tasks = {n["task"] for n in inner}
            if not inner_tasks:
                continue
            with app.db.reading() as conn:
                rows = conn.execute(
                    sa.select(tasks.c.name, tasks.c.type, tasks.c.params).where(
                        tasks.c.name.in_(sorted(inner_tasks)), tasks.c.type == Job.type_name
                    )
                ).all()
            self._check_nesting(app, {r.name: r for r in rows}, [*path, name])


# -- running ---------------------------------------------------------------------------------

_FAILED = frozenset(FINAL_INSTANCE_STATUSES) - {InstanceStatus.SUCCESS}


def start(app: Norc, tx: Transaction, job_instance_ids: Iterable[int]) -> None:
    """Start claimed Job instances: they hold no executor slot; their roots are enqueued."""
    ids = sorted(job_instance_ids)
    if not ids:
        return
    # RUNNING, but owned by nobody: no executor's death may interrupt a Job itself. It
    # starts now (its timeout counts from here): a claim leaves started_at unset.
    tx.conn.execute(
        sa.update(instances)
        .where(instances.c.id.in_(ids))
        .values(executor_id=None, pid=None, started_at=utcnow())
    )
    advance(app, tx, ids)


def advance(app: Norc, tx: Transaction, job_instance_ids: Iterable[int]) -> None:
    """Bring Job instances up to date with their nodes (see the module docstring)."""
    for job_id in sorted(set(job_instance_ids)):  # a fixed order: no lock-order deadlocks
        _advance_one(app, tx, job_id)


def _lock_job(app: Norc, tx: Transaction, job_id: int) -> Any:
    query = (
        sa.select(
            instances.c.id,
            instances.c.status,
            instances.c.queue,
            instances.c.priority,
            instances.c.job_instance_id,
            instances.c.task_id,
            tasks.c.params,
            tasks.c.name.label("t_name"),
        )
        .join(tasks, tasks.c.id == instances.c.task_id)
        .where(instances.c.id == job_id)
    )
    if app.db.dialect != "sqlite":  # SQLite's BEGIN IMMEDIATE already serialises writers
        query = query.with_for_update(of=instances)
    return tx.conn.execute(query).first()


def _advance_one(app: Norc, tx: Transaction, job_id: int) -> None:
    job = _lock_job(app, tx, job_id)
    if job is None or job.status != InstanceStatus.RUNNING.value:
        return  # ended already (timed out, stopped): its nodes were settled then
    graph = Job(name=job.t_name, nodes=list(job.params.get("nodes", [])))
    by_name = {n["name"]: n for n in graph.nodes}
    latest = _latest_attempts(tx, job_id)
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    for name in graph.order():
        if name in latest:
            continue
        parents = by_name[name].get("after", [])
        states = [latest.get(p) for p in parents]
        failed = [p for p, s in zip(parents, states, strict=True) if s in _FAILED]
        if failed:
            latest[name] = InstanceStatus.SKIPPED
            new_rows.append(
                _node_row(
                    job,
                    by_name[name],
                    now,
                    InstanceStatus.SKIPPED,
                    f"skipped: parent {failed[0]!r} ended {latest[failed[0]]}",
                )
            )
        elif all(s is InstanceStatus.SUCCESS for s in states):
            latest[name] = InstanceStatus.QUEUED
            new_rows.append(_node_row(job, by_name[name], now, InstanceStatus.QUEUED, None))
    task_ids = _task_ids(tx, {r["_task"] for r in new_rows})
    missing = []
    for row in new_rows:
        task_id = task_ids.get(row.pop("_task"))
        if task_id is None and row["status"] == InstanceStatus.QUEUED.value:
            missing.append(row["job_node"])
        # A SKIPPED row whose task is gone is still recorded, under the Job's own task.
        row["task_id"] = task_id if task_id is not None else job.task_id
    if missing:
        _end_job(
            app,
            tx,
            job,
            InstanceStatus.ERROR,
            f"nodes {', '.join(missing)} run tasks that no longer exist",
            now,
        )
        return
    queued = [r for r in new_rows if r["status"] == InstanceStatus.QUEUED.value]
    types = _task_types(tx, [r["task_id"] for r in queued])
    enqueue_rows(app, tx, new_rows, [types.get(r["task_id"], "") for r in new_rows])
    if len(latest) == len(graph.nodes) and all(
        s in FINAL_INSTANCE_STATUSES for s in latest.values()
    ):
        failed_nodes = sorted(n for n, s in latest.items() if s is not InstanceStatus.SUCCESS)
        if failed_nodes:
            _end_job(
                app,
                tx,
                job,
                InstanceStatus.FAILURE,
                f"nodes not successful: {', '.join(failed_nodes)}",
                now,
            )
        else:
            _end_job(app, tx, job, InstanceStatus.SUCCESS, None, now)


def _latest_attempts(tx: Transaction, job_id: int) -> dict[str, InstanceStatus]:
    rows = tx.conn.execute(
        sa.select(instances.c.job_node, instances.c.attempt, instances.c.status)
        .where(instances.c.job_instance_id == job_id)
        .order_by(instances.c.attempt)
    ).all()
    return {r.job_node: InstanceStatus(r.status) for r in rows}


def _node_row(
    job: Any, node: dict[str, Any], now: datetime, status: InstanceStatus, error: str | None
) -> dict[str, Any]:
    row = {
        "_task": node["task"],
        "queue": node.get("queue") or job.queue,
        "priority": job.priority,
        "status": status.value,
        "attempt": 1,
        "created_at": now,
        "job_instance_id": job.id,
        "job_node": node["name"],
        "error": error,
    }
    if status is InstanceStatus.QUEUED:
        row["enqueued_at"] = now
    else:
        row["ended_at"] = now
    return row


def _task_ids(tx: Transaction, names: set[str]) -> dict[str, int]:
    if not names:
        return {}
    return {
        str(n): int(i)
        for n, i in tx.conn.execute(
            sa.select(tasks.c.name, tasks.c.id).where(tasks.c.name.in_(sorted(names)))
        ).all()
    }


def _task_types(tx: Transaction, task_ids: list[int]) -> dict[int, str]:
    if not task_ids:
        return {}
    return {
        int(i): str(t)
        for i, t in tx.conn.execute(
            sa.select(tasks.c.id, tasks.c.type).where(tasks.c.id.in_(sorted(set(task_ids))))
        ).all()
    }


def _end_job(
    app: Norc, tx: Transaction, job: Any, status: InstanceStatus, error: str | None, now: datetime
) -> None:
    ended = tx.conn.execute(
        sa.update(instances)
        .where(instances.c.id == job.id, instances.c.status == InstanceStatus.RUNNING.value)
        .values(status=status.value, ended_at=now, error=error)
    ).rowcount
    if ended:
        alert_events.job_ended(app, tx, int(job.id), status)
    tx.after_commit(lambda: app.after_interrupt([job.id]))
    if job.job_instance_id is not None:  # a nested Job: its parent moves on too
        _advance_one(app, tx, int(job.job_instance_id))


def cancel(app: Norc, tx: Transaction, job_id: int, status: InstanceStatus, reason: str) -> None:
    """End a Job instance now: running nodes INTERRUPTED, the rest SKIPPED (recursively)."""
    from norc.lifecycle import stop_instances

    job = _lock_job(app, tx, job_id)
    if job is None or job.status != InstanceStatus.RUNNING.value:
        return
    now = utcnow()
    graph = Job(name=job.t_name, nodes=list(job.params.get("nodes", [])))
    latest = _latest_attempts(tx, job_id)
    active = [
        int(i)
        for i in tx.conn.execute(
            sa.select(instances.c.id).where(
                instances.c.job_instance_id == job_id,
                instances.c.status.in_(
                    [
                        InstanceStatus.QUEUED.value,
                        InstanceStatus.RUNNING.value,
                        InstanceStatus.CREATED.value,
                    ]
                ),
            )
        ).scalars()
    ]
    ended = tx.conn.execute(
        sa.update(instances)
        .where(instances.c.id == job.id, instances.c.status == InstanceStatus.RUNNING.value)
        .values(status=status.value, ended_at=now, error=reason)
    ).rowcount
    if ended and status is InstanceStatus.TIMEDOUT:  # a stop by request is no failure
        alert_events.job_ended(app, tx, int(job.id), status)
    stop_instances(app, tx, active, reason=f"job {job_id} ended: {reason}")
    untouched = [n for n in graph.nodes if n["name"] not in latest]
    rows = [
        _node_row(job, n, now, InstanceStatus.SKIPPED, f"skipped: job {job_id} ended")
        for n in untouched
    ]
    task_ids = _task_ids(tx, {r["_task"] for r in rows})
    for row in rows:
        row["task_id"] = task_ids.get(row.pop("_task"), job.task_id)
    enqueue_rows(app, tx, rows, [""] * len(rows))  # all SKIPPED: nothing to push
    tx.after_commit(lambda: app.after_interrupt([job.id]))
