"""Every source of instances goes through one enqueue path, so `norc_instance_queued`
fires exactly once for every QUEUED instance, whoever queued it, after commit."""

from __future__ import annotations

from pathlib import Path

import norc
from norc.jobs import Job
from norc.status import InstanceStatus
from norc.testing import wait_until
from tests.tasks import Outcome


class QueuedCounter:
    """Records each norc_instance_queued call: (instance id, status seen by the hook)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, InstanceStatus]] = []

    @norc.hookimpl
    def norc_instance_queued(self, instance: norc.InstanceRecord) -> None:
        self.calls.append((instance.id, instance.status))


def _queued_rows(app: norc.Norc) -> set[int]:
    """Ids of every instance that was created QUEUED (it has an enqueue time)."""
    return {r.id for r in app.instances(limit=None) if r.enqueued_at is not None}


def test_each_source_fires_the_queued_hook_once_per_instance(db_url: str, log_dir: Path) -> None:
    """The API, a schedule, retries and a Job's nodes: one hook call per QUEUED row, each
    naming a committed instance, none for the SKIPPED rows beside them."""
    counter = QueuedCounter()
    app = norc.Norc(db_url, log_dir=log_dir, plugins=[counter])
    try:
        app.save_task(Outcome(name="ok"))
        app.save_task(Outcome(name="flaky", raise_="boom", max_retries=2, retry_delay=0.01))
        job = Job(name="chain")
        job.add("ok", name="second", after=[job.add("ok", name="first")])
        app.save_task(job)

        by_api = app.enqueue_many("ok", 3)
        schedule = app.add_schedule("ok", every=0.2, repetitions=2)
        first_attempt = app.enqueue("flaky")
        job_run = app.enqueue("chain")
        with app.scheduler(), app.executor(concurrency=2, isolation="thread"):
            wait_until(lambda: app.schedule(schedule.id).next_fire_at is None, 60)
            wait_until(lambda: app.instance(job_run).status.is_final, 60)
            wait_until(
                lambda: sum(r.task_name == "flaky" for r in app.instances(limit=None)) == 3, 60
            )
            wait_until(lambda: all(r.status.is_final for r in app.instances(limit=None)), 60)
        rows = app.instances(limit=None)
        ids = [i for i, _ in counter.calls]
        assert len(ids) == len(set(ids)), "an instance was announced twice"
        assert set(ids) == _queued_rows(app)
        sources = {
            "api": set(by_api) | {first_attempt, job_run},
            "schedule": {r.id for r in rows if r.schedule_id == schedule.id},
            "retries": {r.id for r in rows if r.task_name == "flaky" and r.attempt > 1},
            "job nodes": {r.id for r in rows if r.job_instance_id == job_run},
        }
        assert len(sources["schedule"]) == 2
        assert len(sources["retries"]) == 2
        assert len(sources["job nodes"]) == 2
        for name, expected in sources.items():
            assert expected <= set(ids), f"{name}: not announced: {sorted(expected - set(ids))}"
    finally:
        app.close()


def test_an_enqueue_rolled_back_is_never_announced(sqlite_url: str, log_dir: Path) -> None:
    """The hook runs after commit: instances of a transaction that failed never existed."""
    counter = QueuedCounter()
    app = norc.Norc(sqlite_url, log_dir=log_dir, plugins=[counter])
    try:
        app.save_task(Outcome(name="ok"))
        from norc.enqueue import enqueue_rows
        from norc.store.schema import utcnow

        row = {
            "task_id": app.db.task("ok").id,
            "queue": "default",
            "priority": 0,
            "status": InstanceStatus.QUEUED.value,
            "attempt": 1,
            "created_at": utcnow(),
            "enqueued_at": utcnow(),
        }
        try:
            with app.db.transaction() as tx:
                enqueue_rows(app, tx, [row], ["Outcome"])
                raise RuntimeError("the enqueuing transaction fails")
        except RuntimeError:
            pass
        assert counter.calls == []
        assert app.instances(limit=None) == []
    finally:
        app.close()
