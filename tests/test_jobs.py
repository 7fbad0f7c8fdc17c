"""Jobs, retries, overlap policies and concurrency limits."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import norc
from norc.jobs import InvalidJob, Job
from norc.status import InstanceStatus
from norc.testing import NoopTask, run_started, wait_until
from tests.tasks import FlakyOnce, Outcome, Sleep

EXECUTOR = """
import sys, norc
app = norc.Norc(sys.argv[1], log_dir=sys.argv[2])
app.executor(queue="default", concurrency=int(sys.argv[3]), install_signal_handlers=True).run()
"""


@pytest.fixture
def executors(app: norc.Norc, db_url: str, tmp_path: Path) -> Iterator[None]:
    """Three executor processes (3 slots each) on the test database."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXECUTOR, db_url, str(tmp_path / "logs"), "3"], env=env
        )
        for _ in range(3)
    ]
    yield
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait(timeout=60)


def _nodes(app: norc.Norc, job_instance: int) -> dict[str, norc.InstanceRecord]:
    """The latest attempt of each node of one Job run."""
    latest: dict[str, norc.InstanceRecord] = {}
    for r in app.db.find_instances(job_instance_id=job_instance, limit=None):
        if r.job_node not in latest or r.attempt > latest[r.job_node].attempt:  # type: ignore[index]
            latest[r.job_node or ""] = r
    return latest


def _final(app: norc.Norc, instance_id: int, timeout: float = 60) -> norc.InstanceRecord:
    wait_until(lambda: app.instance(instance_id).status.is_final, timeout)
    return app.instance(instance_id)


def test_diamond_runs_c_after_a_and_b_exactly_once(app: norc.Norc, executors: None) -> None:
    """A and B run (anywhere), then C once, after both succeeded; the Job ends SUCCESS."""
    for name in "ab":
        app.save_task(Sleep(name=name, seconds=0.3))
    app.save_task(Outcome(name="c"))
    job = Job(name="diamond")
    a, b = job.add("a"), job.add("b")
    job.add("c", after=[a, b])
    app.save_task(job)
    run = app.enqueue("diamond")
    assert _final(app, run).status is InstanceStatus.SUCCESS
    nodes = _nodes(app, run)
    assert {n: r.status for n, r in nodes.items()} == dict.fromkeys("abc", InstanceStatus.SUCCESS)
    assert nodes["c"].started_at >= max(nodes["a"].ended_at, nodes["b"].ended_at)  # type: ignore[operator]
    assert len(app.db.find_instances(job_instance_id=run, limit=None)) == 3
    assert app.instance(run).executor_id is None  # the Job held no executor slot


def test_wide_fan_out_and_in(app: norc.Norc, executors: None) -> None:
    """One root, thirty parallel nodes, one sink: the sink runs once, after all thirty."""
    app.save_task(NoopTask(name="noop"))
    job = Job(name="fan")
    root = job.add("noop", name="root")
    middle = [job.add("noop", name=f"m{i}", after=[root]) for i in range(30)]
    job.add("noop", name="sink", after=middle)
    app.save_task(job)
    run = app.enqueue("fan")
    assert _final(app, run).status is InstanceStatus.SUCCESS
    nodes = _nodes(app, run)
    assert len(nodes) == 32
    assert nodes["sink"].started_at >= max(nodes[f"m{i}"].ended_at for i in range(30))  # type: ignore[operator,type-var]


def test_many_parents_ending_together_never_double_the_child(
    app: norc.Norc, executors: None
) -> None:
    """Twenty diamonds with instant parents: every child exists exactly once."""
    app.save_task(NoopTask(name="noop"))
    job = Job(name="race")
    parents = [job.add("noop", name=f"p{i}") for i in range(4)]
    job.add("noop", name="child", after=parents)
    app.save_task(job)
    runs = [app.enqueue("race") for _ in range(20)]
    for run in runs:
        assert _final(app, run).status is InstanceStatus.SUCCESS
        children = [
            r
            for r in app.db.find_instances(job_instance_id=run, limit=None)
            if r.job_node == "child"
        ]
        assert len(children) == 1


def test_failed_node_skips_descendants_and_fails_the_job(sqlite_app: norc.Norc) -> None:
    """A failing node's descendants end SKIPPED, other branches finish, the Job is FAILURE."""
    app = sqlite_app
    app.save_task(Outcome(name="bad", result=False))
    app.save_task(Outcome(name="good"))
    job = Job(name="partial")
    bad = job.add("bad")
    job.add("good", name="after-bad", after=[bad])
    job.add("good", name="grandchild", after=["after-bad"])
    job.add("good", name="other-branch")
    app.save_task(job)
    run = app.enqueue("partial")
    with app.executor(concurrency=2):
        record = _final(app, run)
    assert record.status is InstanceStatus.FAILURE and "bad" in (record.error or "")
    nodes = _nodes(app, run)
    assert nodes["bad"].status is InstanceStatus.FAILURE
    assert nodes["after-bad"].status is InstanceStatus.SKIPPED
    assert nodes["grandchild"].status is InstanceStatus.SKIPPED
    assert nodes["other-branch"].status is InstanceStatus.SUCCESS


def test_retries_make_new_attempts_linked_to_the_first(
    sqlite_app: norc.Norc, tmp_path: Path
) -> None:
    """A task failing twice with max_retries=2 succeeds on attempt 3; each try is a row."""
    app = sqlite_app
    app.save_task(
        FlakyOnce(
            name="flaky",
            counter=str(tmp_path / "n"),
            failures=2,
            max_retries=2,
            retry_delay=0.05,
            retry_jitter=0,
        )
    )
    first = app.enqueue("flaky")
    with app.executor():
        wait_until(lambda: any(r.status is InstanceStatus.SUCCESS for r in app.instances()), 30)
    attempts = sorted(app.instances(task="flaky"), key=lambda r: r.attempt)
    assert [(r.attempt, r.status) for r in attempts] == [
        (1, InstanceStatus.FAILURE),
        (2, InstanceStatus.FAILURE),
        (3, InstanceStatus.SUCCESS),
    ]
    assert all(r.first_attempt_id == first for r in attempts[1:])
    assert attempts[1].started_at - attempts[0].ended_at >= __import__("datetime").timedelta(
        seconds=0.05
    )  # type: ignore[operator]


def test_retry_inside_a_job_lets_the_job_succeed(sqlite_app: norc.Norc, tmp_path: Path) -> None:
    """A node that fails once and is retried does not fail its Job."""
    app = sqlite_app
    app.save_task(
        FlakyOnce(name="flaky", counter=str(tmp_path / "n"), max_retries=1, retry_delay=0)
    )
    app.save_task(Outcome(name="after"))
    job = Job(name="resilient")
    job.add("after", after=[job.add("flaky")])
    app.save_task(job)
    run = app.enqueue("resilient")
    with app.executor():
        assert _final(app, run).status is InstanceStatus.SUCCESS
    assert _nodes(app, run)["flaky"].attempt == 2


def test_retries_stop_at_max_and_respect_retry_on(sqlite_app: norc.Norc) -> None:
    """max_retries bounds the attempts; an outcome not in retry_on is never retried."""
    app = sqlite_app
    app.save_task(Outcome(name="never", result=False, max_retries=2, retry_delay=0))
    app.save_task(
        Outcome(name="no-retry", result=False, max_retries=3, retry_delay=0, retry_on=("TIMEDOUT",))
    )
    app.enqueue("never")
    app.enqueue("no-retry")
    with app.executor():
        wait_until(
            lambda: (
                len(app.instances(task="never")) == 3
                and all(r.status.is_final for r in app.instances())
            ),
            30,
        )
        time.sleep(0.3)
    assert len(app.instances(task="never")) == 3
    assert len(app.instances(task="no-retry")) == 1


def test_job_timeout_interrupts_running_nodes_and_skips_the_rest(
    sqlite_app: norc.Norc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Job past its timeout ends TIMEDOUT: its running node INTERRUPTED, the rest SKIPPED."""
    monkeypatch.setenv("NORC_HEARTBEAT_INTERVAL", "0.3")
    app = norc.Norc(sqlite_app.settings.database_url, log_dir=sqlite_app.settings.log_dir)
    app.save_task(Sleep(name="slow", seconds=30))
    app.save_task(Outcome(name="later"))
    job = Job(name="bounded", timeout=1)
    job.add("later", after=[job.add("slow")])
    app.save_task(job)
    run = app.enqueue("bounded")
    with app.executor():
        record = _final(app, run, 20)
        wait_until(lambda: _nodes(app, run)["slow"].status.is_final, 10)
    assert record.status is InstanceStatus.TIMEDOUT
    nodes = _nodes(app, run)
    assert nodes["slow"].status is InstanceStatus.INTERRUPTED
    assert "timed out" in (nodes["slow"].error or "")
    assert nodes["later"].status is InstanceStatus.SKIPPED


def test_stopping_a_job_instance_stops_its_nodes(sqlite_app: norc.Norc) -> None:
    """stop_instance on a running Job interrupts its running nodes and skips the others."""
    app = sqlite_app
    app.save_task(Sleep(name="slow", seconds=30))
    app.save_task(Outcome(name="later"))
    job = Job(name="stoppable")
    job.add("later", after=[job.add("slow")])
    app.save_task(job)
    run = app.enqueue("stoppable")
    with app.executor():
        wait_until(
            lambda: (
                _nodes(app, run).get("slow") is not None
                and _nodes(app, run)["slow"].status is InstanceStatus.RUNNING
            ),
            20,
        )
        assert app.stop_instance(run)
        wait_until(lambda: _nodes(app, run)["slow"].status.is_final, 10)
    assert app.instance(run).status is InstanceStatus.INTERRUPTED
    assert _nodes(app, run)["slow"].status is InstanceStatus.INTERRUPTED
    assert _nodes(app, run)["later"].status is InstanceStatus.SKIPPED


def test_nested_job(sqlite_app: norc.Norc) -> None:
    """A Job node may be another Job; the outer Job ends after the inner one."""
    app = sqlite_app
    app.save_task(Outcome(name="ok"))
    inner = Job(name="inner")
    inner.add("ok", name="x", after=[inner.add("ok", name="w")])
    app.save_task(inner)
    outer = Job(name="outer")
    outer.add("ok", name="last", after=[outer.add("inner")])
    app.save_task(outer)
    run = app.enqueue("outer")
    with app.executor(concurrency=2):
        assert _final(app, run).status is InstanceStatus.SUCCESS
    nodes = _nodes(app, run)
    assert nodes["last"].started_at >= nodes["inner"].ended_at  # type: ignore[operator]
    assert {n for n in _nodes(app, nodes["inner"].id)} == {"w", "x"}


def test_invalid_graphs_are_refused_naming_nodes(sqlite_app: norc.Norc) -> None:
    """Cycles, unknown parents, missing tasks, foreign nodes and self-nesting are refused."""
    app = sqlite_app
    app.save_task(Outcome(name="ok"))
    cyclic = Job(name="cyclic")
    cyclic.add("ok", name="a", after=["c"])
    cyclic.add("ok", name="b", after=["a"])
    cyclic.add("ok", name="c", after=["b"])
    with pytest.raises(InvalidJob, match="cycle among nodes: a, b, c"):
        app.save_task(cyclic)
    unknown = Job(name="unknown")
    unknown.add("ok", after=["ghost"])
    with pytest.raises(InvalidJob, match="unknown node 'ghost'"):
        app.save_task(unknown)
    missing = Job(name="missing")
    missing.add("nonexistent-task")
    with pytest.raises(InvalidJob, match="nonexistent-task"):
        app.save_task(missing)
    other = Job(name="other")
    foreign = other.add("ok")
    mine = Job(name="mine")
    with pytest.raises(InvalidJob, match="cannot depend on node 'ok' of job 'other'"):
        mine.add("ok", name="x", after=[foreign])
    loop = Job(name="loop")
    loop.add("ok")
    app.save_task(loop)
    loop.add("loop", name="itself")
    with pytest.raises(InvalidJob, match="contains itself"):
        app.save_task(loop, replace=True)


def test_thousand_node_job_saves_in_order(sqlite_app: norc.Norc) -> None:
    """A 1,000-node Job validates and saves; its order keeps every node after its parents."""
    app = sqlite_app
    app.save_task(NoopTask(name="noop"))
    job = Job(name="big")
    previous = [job.add("noop", name="n0")]
    for i in range(1, 1000):
        previous.append(job.add("noop", name=f"n{i}", after=[previous[i // 2]]))
    app.save_task(job)
    order = app.task("big").order()  # type: ignore[attr-defined]
    position = {name: k for k, name in enumerate(order)}
    assert len(order) == 1000
    assert all(position[f"n{i // 2}"] < position[f"n{i}"] for i in range(1, 1000))


def _overlapping(records: list[norc.InstanceRecord]) -> int:
    """The most instances that were RUNNING at one moment."""
    events = sorted(
        itertools.chain.from_iterable(
            [(r.started_at, 1), (r.ended_at, -1)] for r in records if r.started_at and r.ended_at
        )
    )
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def test_concurrency_limit_holds_across_executors(app: norc.Norc, executors: None) -> None:
    """With concurrency_limit=2, nine executor slots never run more than two at once."""
    app.save_task(Sleep(name="limited", seconds=0.4, concurrency_limit=2))
    ids = app.enqueue_many("limited", 8)
    wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)), 90)
    records = app.db.instances_by_id(ids)
    assert {r.status for r in records} == {InstanceStatus.SUCCESS}
    assert _overlapping(records) == 2


def test_overlap_queue_starts_after_the_previous(app: norc.Norc, executors: None) -> None:
    """overlap='queue': a second run waits for the first to end, even with idle slots."""
    app.save_task(Sleep(name="serial", seconds=0.5, overlap="queue"))
    ids = [app.enqueue("serial"), app.enqueue("serial"), app.enqueue("serial")]
    wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)), 60)
    assert _overlapping(app.db.instances_by_id(ids)) == 1


def test_overlap_skip_records_the_skipped_run(sqlite_app: norc.Norc) -> None:
    """overlap='skip': a run while another is active is recorded SKIPPED with the reason."""
    app = sqlite_app
    app.save_task(Sleep(name="single", seconds=0.5, overlap="skip"))
    first = app.enqueue("single")
    second = app.enqueue("single")
    assert app.instance(second).status is InstanceStatus.SKIPPED
    assert f"instance {first} is still active" in (app.instance(second).error or "")
    with app.executor():
        assert _final(app, first).status is InstanceStatus.SUCCESS
        third = app.enqueue("single")
        assert _final(app, third).status is InstanceStatus.SUCCESS


def test_overlap_replace_interrupts_the_old_run(sqlite_app: norc.Norc) -> None:
    """overlap='replace': a new run interrupts the running one, then runs itself."""
    app = sqlite_app
    app.save_task(Sleep(name="fresh", seconds=1, overlap="replace"))
    with app.executor(concurrency=2):
        old = app.enqueue("fresh")
        wait_until(lambda: run_started(app, old))
        new = app.enqueue("fresh")
        assert _final(app, old).status is InstanceStatus.INTERRUPTED
        assert "replaced by a new run" in (app.instance(old).error or "")
        assert _final(app, new).status is InstanceStatus.SUCCESS


def test_schedule_fires_obey_overlap(sqlite_app: norc.Norc) -> None:
    """A schedule firing every 0.2 s for a 1 s task with overlap skip records SKIPPED fires."""
    app = sqlite_app
    app.save_task(Sleep(name="long", seconds=1, overlap="skip"))
    app.add_schedule("long", every=0.2, start=0)
    with app.executor(), app.scheduler():
        wait_until(lambda: any(r.status is InstanceStatus.SKIPPED for r in app.instances()), 10)
        time.sleep(1.5)
    statuses = [r.status for r in app.instances(limit=None)]
    assert statuses.count(InstanceStatus.SKIPPED) >= 3
    running = [r for r in app.instances(limit=None) if r.started_at]
    assert _overlapping([r for r in running if r.ended_at]) <= 1


def test_stopping_one_node_skips_its_descendants_and_ends_the_job(sqlite_app: norc.Norc) -> None:
    """A node stopped by request counts as failed: its child is SKIPPED and the Job ends."""
    app = sqlite_app
    app.save_task(Sleep(name="slow", seconds=30))
    app.save_task(Outcome(name="ok"))
    job = Job(name="partly-stopped")
    job.add("ok", name="child", after=[job.add("slow")])
    job.add("ok", name="other")
    app.save_task(job)
    run = app.enqueue("partly-stopped")
    with app.executor(concurrency=2):
        wait_until(
            lambda: (
                "slow" in _nodes(app, run)
                and _nodes(app, run)["slow"].status is InstanceStatus.RUNNING
            ),
            20,
        )
        assert app.stop_instance(_nodes(app, run)["slow"].id)
        record = _final(app, run, 20)
    assert record.status is InstanceStatus.FAILURE
    nodes = _nodes(app, run)
    assert nodes["slow"].status is InstanceStatus.INTERRUPTED
    assert nodes["child"].status is InstanceStatus.SKIPPED
    assert nodes["other"].status is InstanceStatus.SUCCESS
