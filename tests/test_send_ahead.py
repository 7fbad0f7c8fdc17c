"""Sending a busy worker its next instance (process isolation): when it happens, and what
becomes of an instance sent ahead when its worker is killed or dies before it starts.

Most tests drive the real worker loop, dispatch and worker processes through a stand-in
for the executor (no database), so that what is sent ahead of what is exact; the first
one goes through a real executor.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import norc
from norc.abc import Task
from norc.executor.dispatch import Dispatch
from norc.executor.work import Work
from norc.executor.workerloop import SEND_AHEAD_DEPTH, SEND_AHEAD_WORK, WorkerLoop
from norc.status import InstanceStatus
from norc.testing import NoopTask, wait_until
from tests.tasks import Holdable, PolicyProbe


def test_short_runs_are_sent_ahead_and_timed_from_their_real_start(
    sqlite_app: norc.Norc,
) -> None:
    """A one-worker executor given many no-ops sends them ahead, and each one's recorded
    run starts no earlier than the previous one's ended."""
    app = sqlite_app
    app.save_task(NoopTask(name="noop"))
    ids = app.enqueue_many("noop", 300)
    with app.executor(concurrency=1) as executor:
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)), 60)
        assert executor.stats["sent_ahead"] > 0
    records = sorted(app.db.instances_by_id(ids), key=lambda r: (r.started_at, r.id))
    assert {r.status for r in records} == {InstanceStatus.SUCCESS}
    assert len({r.pid for r in records}) == 1
    for before, after in itertools.pairwise(records):
        assert before.ended_at and after.started_at and after.started_at >= before.ended_at


def test_a_pause_returns_once_nothing_sent_ahead_is_left(
    sqlite_app: norc.Norc, tmp_path: Path
) -> None:
    """pause() during a long run with instances sent ahead behind it returns once they
    have started; from then on nothing more starts, and after resume() all run once."""
    app = sqlite_app
    hold = tmp_path / "hold"
    app.save_task(Holdable(name="h", hold=str(hold), seconds=1.5))
    ids = app.enqueue_many("h", 3000)
    with app.executor(concurrency=1) as executor:
        wait_until(lambda: executor.stats["sent_ahead"] > 50, 30)
        hold.touch()  # the next run sleeps 1.5 s; instances are sent ahead behind it
        wait_until(lambda: not hold.exists() and any(s.ahead_ids for s in executor._slots))
        executor.pause(timeout=10)
        assert all(not slot.ahead_ids for slot in executor._slots)
        time.sleep(0.3)  # the runs under way end
        ended = {r.id for r in app.db.instances_by_id(ids) if r.status.is_final}
        time.sleep(0.5)
        records = app.db.instances_by_id(ids)
        assert {r.id for r in records if r.status.is_final} == ended
        assert {r.status for r in records} == {InstanceStatus.SUCCESS, InstanceStatus.QUEUED}
        executor.resume()
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)), 60)
    for record in app.db.instances_by_id(ids):
        assert app.logs(record.id).count('event="instance started"') == 1


class _Executor:
    """What the worker loop uses of an executor: a real Dispatch, outcomes kept by id."""

    python = None

    def __init__(self, lanes: int = 1) -> None:
        self._kill = False
        self._taking = threading.Event()
        self._taking.set()
        self.stats = {"sent_ahead": 0}
        self.loop = WorkerLoop(self, lanes)  # type: ignore[arg-type]
        self._dispatch: Dispatch[Work] = Dispatch(
            lanes, ahead_seconds=0.0, max_wait=60.0, on_work=self.loop.wake
        )
        self.outcomes: dict[int, dict[str, Any]] = {}

    def suspend(self, reason: str) -> None:
        raise AssertionError(f"suspended: {reason}")

    def _record(self, work: Work, outcome: dict[str, Any]) -> None:
        self._dispatch.finished()
        self.outcomes[work.instance.id] = outcome

    def put_marked(self, works: list[Work]) -> None:
        """Hand ``works`` over with their starts recorded, for a test that takes the
        loop's steps itself (no marker thread running)."""
        self._dispatch.put(works)
        self._dispatch.want(len(works))
        batch, _ = self._dispatch.to_mark(0) or ([], [])
        self._dispatch.marked(batch, len(batch))
        self._dispatch.want(0)

    def _mark(self) -> None:
        """Record every start asked for at once (the executor's marker writes them to
        the database first)."""
        while (step := self._dispatch.to_mark()) is not None:
            works, surplus = step
            self._dispatch.marked(works, len(works) + len(surplus), surplus)

    def __enter__(self) -> _Executor:
        self.loop.thread.start()
        threading.Thread(target=self._mark, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._dispatch.stop_marking()
        self._dispatch.close()
        self.loop.thread.join(30)

    def warm(self, task: Task, log_dir: Path) -> None:
        """Start the worker with one run of ``task`` and pretend its runs take 0.1 ms."""
        self.run([_work(0, task, log_dir)])
        self.loop._typical[1] = 0.0001

    def run(self, works: list[Work], timeout: float = 30) -> list[dict[str, Any]]:
        self._dispatch.put(works)
        ids = [w.instance.id for w in works]
        wait_until(lambda: all(i in self.outcomes for i in ids), timeout)
        return [self.outcomes[i] for i in ids]


def _work(
    instance_id: int, task: Task, log_dir: Path, *, task_id: int = 1, timeout: float | None = None
) -> Work:
    """A claimed instance of ``task`` as the executor prepares it."""
    cls = type(task)
    log_path = str(log_dir / f"{instance_id}.log")
    params = task.params()
    template = {
        "task_id": task_id,
        "task_name": task.name,
        "task_type": cls.type_name,
        "type_path": f"{cls.__module__}:{cls.__qualname__}",
        "params": params,
        "settings": {"timeout": timeout},
        "timeout": timeout,
    }
    job = {
        "op": "run",
        "instance_id": instance_id,
        "attempt": 1,
        "log_path": log_path,
        "fire_time": None,
    }
    record = SimpleNamespace(id=task_id, timeout=timeout, finally_timeout=10.0)
    return Work(
        SimpleNamespace(id=instance_id),  # type: ignore[arg-type]
        record,  # type: ignore[arg-type]
        job,
        template,
        task_id,
        f"{instance_id}.log",
        log_path,
        cls,
        None,
        time.monotonic(),
    )


def _started(log_dir: Path, instance_id: int) -> bool:
    path = log_dir / f"{instance_id}.log"
    return path.exists() and 'event="instance started"' in path.read_text()


def test_an_instance_sent_ahead_of_a_run_that_times_out_starts_after_it(tmp_path: Path) -> None:
    """The instances behind a run that times out go back to the dispatch and run once each,
    in order, timed from their own starts."""
    hold = tmp_path / "hold"
    task = Holdable(name="h", hold=str(hold), seconds=60)
    with _Executor() as executor:
        executor.warm(task, tmp_path)
        hold.touch()
        slow, after, last = executor.run([_work(i, task, tmp_path, timeout=0.5) for i in (1, 2, 3)])
        assert executor.stats["sent_ahead"] == 2
    assert slow["status"] == InstanceStatus.TIMEDOUT.value
    assert after["status"] == last["status"] == InstanceStatus.SUCCESS.value
    assert slow["ended_at"] <= after["started_at"] <= after["ended_at"] <= last["started_at"]
    for i in (2, 3):
        assert (tmp_path / f"{i}.log").read_text().count('event="instance started"') == 1


def test_an_instance_sent_ahead_of_a_worker_that_dies_runs_in_a_new_one(tmp_path: Path) -> None:
    """The instance behind a run whose worker exits goes back and succeeds in a new worker."""
    hold = tmp_path / "hold"
    task = Holdable(name="h", hold=str(hold), exit_code=3)
    with _Executor() as executor:
        executor.warm(task, tmp_path)
        hold.touch()
        died, after = executor.run([_work(1, task, tmp_path), _work(2, task, tmp_path)])
        assert executor.stats["sent_ahead"] == 1
    assert died["status"] == InstanceStatus.ERROR.value
    assert "exited with code 3" in died["error"]
    assert after["status"] == InstanceStatus.SUCCESS.value
    assert (tmp_path / "2.log").read_text().count('event="instance started"') == 1


def test_a_kill_interrupts_an_instance_sent_ahead_without_starting_it(tmp_path: Path) -> None:
    """A KILL while a run holds an instance sent ahead ends both INTERRUPTED; the second
    never starts."""
    hold = tmp_path / "hold"
    task = Holdable(name="h", hold=str(hold), seconds=60)
    with _Executor() as executor:
        executor.warm(task, tmp_path)
        hold.touch()
        works = [_work(1, task, tmp_path), _work(2, task, tmp_path)]
        executor.put_marked(works)
        wait_until(lambda: not hold.exists())  # the first one is asleep
        assert executor.stats["sent_ahead"] == 1
        executor._kill = True
        for lane in executor.loop.lanes:
            lane.interrupt(None, "interrupted by a KILL request")
        wait_until(lambda: {1, 2} <= executor.outcomes.keys())
    first, second = executor.outcomes[1], executor.outcomes[2]
    assert first["status"] == second["status"] == InstanceStatus.INTERRUPTED.value
    assert second["error"] == "the executor was killed before it started"
    assert _started(tmp_path, 1) and not _started(tmp_path, 2)


def test_nothing_is_sent_ahead_behind_a_task_whose_runs_are_long(tmp_path: Path) -> None:
    """Behind a task whose recent runs took a second, the next instance waits in the
    dispatch, where it can still be given back."""
    task = Holdable(name="h", hold=str(tmp_path / "hold"))
    with _Executor() as executor:
        executor.warm(task, tmp_path)
        executor.loop._typical[1] = 1.0
        outcomes = executor.run([_work(i, task, tmp_path) for i in range(1, 4)])
        assert executor.stats["sent_ahead"] == 0
    assert {o["status"] for o in outcomes} == {InstanceStatus.SUCCESS.value}


@pytest.mark.parametrize(
    ("typical", "expected"), [(0.0001, SEND_AHEAD_DEPTH), (0.002, 2), (0.006, 0)]
)
def test_a_lane_is_sent_what_its_short_runs_get_through_soon(
    tmp_path: Path, typical: float, expected: int
) -> None:
    """A lane is sent instances ahead while the runs in front of the next one add up to
    less than SEND_AHEAD_WORK by their task's moving average, and never more than the depth."""
    assert 2 * 0.002 < SEND_AHEAD_WORK < 3 * 0.002
    task = Holdable(name="h", hold=str(tmp_path / "hold"))
    executor = _Executor()  # its loop thread is not started: the test takes its steps
    loop, lane = executor.loop, executor.loop.lanes[0]
    try:
        lane.worker.ensure()  # started beforehand: the run below begins "now", not after a spawn
        loop._typical[1] = typical
        executor.put_marked([_work(i, task, tmp_path) for i in range(1, SEND_AHEAD_DEPTH + 3)])
        loop._start(lane, executor._dispatch.take_nowait())  # type: ignore[arg-type]
        lane.t0 = time.time()  # the run began just now, however busy the machine is
        loop._send_ahead()
        assert len(lane.ahead_ids) == expected
        assert len(executor._dispatch.waiting()) == SEND_AHEAD_DEPTH + 1 - expected
    finally:
        loop._put_back_ahead(lane)
        lane.worker.close()


def test_nothing_is_sent_ahead_behind_an_instance_sent_ahead_whose_task_is_long(
    tmp_path: Path,
) -> None:
    """A long task's instance may be sent behind a short run, but what follows it stays
    in the dispatch (where another lane or executor can take it) instead of its pipe."""
    quick, slow = NoopTask(name="quick"), Holdable(name="h", hold=str(tmp_path / "hold"))
    executor = _Executor()  # its loop thread is not started: the test takes its steps
    loop, lane = executor.loop, executor.loop.lanes[0]
    try:
        lane.worker.ensure()  # started beforehand: the run below begins "now", not after a spawn
        loop._typical.update({1: 0.0001, 2: 1.0})
        behind = _work(3, quick, tmp_path, task_id=1)
        executor.put_marked(
            [_work(1, quick, tmp_path, task_id=1), _work(2, slow, tmp_path, task_id=2), behind]
        )
        loop._start(lane, executor._dispatch.take_nowait())  # type: ignore[arg-type]
        lane.t0 = time.time()  # the run began just now, however busy the machine is
        loop._send_ahead()
        assert lane.ahead_ids == (2,)
        assert executor._dispatch.waiting() == [behind]
    finally:
        loop._put_back_ahead(lane)
        lane.worker.close()


def test_a_paused_executor_sends_nothing_ahead(tmp_path: Path) -> None:
    """While the executor takes no new work, waiting instances stay in the dispatch."""
    task = Holdable(name="h", hold=str(tmp_path / "hold"))
    with _Executor() as executor:
        executor.warm(task, tmp_path)
        executor._taking.clear()
        executor.run([_work(i, task, tmp_path) for i in range(1, 4)])
        assert executor.stats["sent_ahead"] == 0


def test_instances_the_worker_may_have_begun_when_killed_end_interrupted(tmp_path: Path) -> None:
    """If the current run's answer crossed the kill, the instance sent ahead behind it
    (which the worker began) ends INTERRUPTED, and the one behind that goes back."""
    hold = tmp_path / "hold"
    task = Holdable(name="h", hold=str(hold))
    executor = _Executor()  # its loop thread is not started: the test takes its steps
    loop, lane = executor.loop, executor.loop.lanes[0]
    try:
        hold.touch()
        first = _work(1, NoopTask(name="quick"), tmp_path, task_id=2)
        begun, behind = _work(2, task, tmp_path), _work(3, task, tmp_path)
        executor.put_marked([first, begun, behind])
        loop._start(lane, executor._dispatch.take_nowait())  # type: ignore[arg-type]
        for _ in range(2):
            loop._send(lane, executor._dispatch.take_nowait())  # type: ignore[arg-type]
        wait_until(lambda: not hold.exists())  # 1 answered (unread), 2 is asleep
        loop._kill_worker(lane)
    finally:
        for each in loop.lanes:
            each.worker.close()
    assert executor.outcomes[2]["status"] == InstanceStatus.INTERRUPTED.value
    assert "killed just as it started" in executor.outcomes[2]["error"]
    assert 3 not in executor.outcomes and executor._dispatch.waiting() == [behind]
    assert lane.ahead_ids == ()


def _policies(log_dir: Path, ids: range) -> list[int]:
    """The scheduling policy each instance's run printed (PolicyProbe)."""
    return [int((log_dir / f"{i}.log").read_text().split("policy=")[1].split()[0]) for i in ids]


linux_scheduling = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH"), reason="CPU scheduling policies are Linux's"
)


@linux_scheduling
def test_a_backlog_runs_as_batch_processes_and_lone_runs_normally(tmp_path: Path) -> None:
    """Runs of a backlog (started while more work waits, or sent ahead) run under
    SCHED_BATCH; a lone run, before and after them, under the normal policy."""
    hold = tmp_path / "hold"
    task = PolicyProbe(name="p", hold=str(hold), seconds=0.3)
    with _Executor() as executor:
        executor.warm(task, tmp_path)  # instance 0, alone
        hold.touch()
        executor.run([_work(i, task, tmp_path) for i in (1, 2, 3)])
        assert executor.stats["sent_ahead"] == 2
        executor.run([_work(4, task, tmp_path)])
    assert _policies(tmp_path, range(5)) == [
        os.SCHED_OTHER,
        os.SCHED_BATCH,
        os.SCHED_BATCH,
        os.SCHED_BATCH,
        os.SCHED_OTHER,
    ]


@linux_scheduling
def test_a_worker_started_with_another_policy_keeps_it(tmp_path: Path) -> None:
    """A worker started by a SCHED_IDLE thread (the embedding application's choice) runs
    everything, sent ahead or not, under SCHED_IDLE."""
    hold = tmp_path / "hold"
    task = PolicyProbe(name="p", hold=str(hold), seconds=0.3)

    def start_idle_worker() -> None:  # the policy is per thread, and a child inherits it
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        executor.loop.lanes[0].worker.ensure()

    executor = _Executor()
    starter = threading.Thread(target=start_idle_worker)
    starter.start()
    starter.join()
    with executor:
        executor.warm(task, tmp_path)
        hold.touch()
        executor.run([_work(i, task, tmp_path) for i in (1, 2, 3)])
        assert executor.stats["sent_ahead"] == 2
    assert _policies(tmp_path, range(1, 4)) == [os.SCHED_IDLE] * 3
