"""Executors: claiming, running in isolation, timeouts, logs, outcomes and bookkeeping."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

import norc
from norc.status import DaemonStatus, InstanceStatus
from norc.testing import run_started, wait_until
from tests.tasks import Echo, Hang, Holdable, Noisy, Outcome, Sleep, SlowFinally


def _run_all(
    app: norc.Norc, ids: list[int], **executor_kwargs: object
) -> list[norc.InstanceRecord]:
    with app.executor(**executor_kwargs):  # type: ignore[arg-type]
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)), 60)
    return app.db.instances_by_id(ids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_outcomes_are_recorded(app: norc.Norc) -> None:
    """True/None is SUCCESS, False and raising are FAILURE; times, host, pid, revision recorded."""
    for name, kwargs in [
        ("ok", {}),
        ("none", {"result": None}),
        ("false", {"result": False}),
        ("boom", {"raise_": "kaput"}),
    ]:
        app.save_task(Outcome(name=name, **kwargs))
    ids = [app.enqueue(n) for n in ("ok", "none", "false", "boom")]
    records = _run_all(app, ids, concurrency=2)
    assert [r.status for r in records] == [
        InstanceStatus.SUCCESS,
        InstanceStatus.SUCCESS,
        InstanceStatus.FAILURE,
        InstanceStatus.FAILURE,
    ]
    assert records[3].error == "RuntimeError: kaput"
    for r in records:
        assert r.started_at and r.ended_at and r.started_at <= r.ended_at
        assert r.host == socket.gethostname()
        assert r.pid and r.pid != os.getpid()  # ran in a worker process
        assert r.revision == "rev-42"
        assert r.executor_id is not None
    assert "RuntimeError: kaput" in app.logs(ids[3])  # the traceback is in the log


def test_log_holds_stdout_stderr_and_norc_events(sqlite_app: norc.Norc) -> None:
    """One file per instance with the task's stdout, stderr and Norc's structured events."""
    app = sqlite_app
    app.save_task(Echo(name="echo", message="ahoy"))
    [record] = _run_all(app, [app.enqueue("echo")])
    text = app.logs(record.id)
    assert "out: ahoy" in text and "err: ahoy" in text
    assert 'event="instance started"' in text and "event=echoed" in text
    key = f"{app.log_keys.installation}/tasks/Echo/echo/echo-{record.id}"
    assert app.log_path(record) == app.settings.log_dir.resolve() / key
    assert record.log_key == key


def test_hung_python_loop_times_out_and_its_process_is_gone(
    sqlite_app: norc.Norc, tmp_path: Path
) -> None:
    """A task spinning in Python ends TIMEDOUT once its timeout has passed: its whole
    process group is killed (the worker and the task's child), and finally_ runs."""
    app = sqlite_app
    app.save_task(Hang(name="hang", marker_dir=str(tmp_path), child=True, timeout=1))
    [record] = _run_all(app, [app.enqueue("hang")])
    assert record.status is InstanceStatus.TIMEDOUT
    assert record.error == "timed out after 1 s"
    assert record.duration is not None and record.duration >= 1.0  # not before its timeout
    worker = int((tmp_path / f"pid-{record.id}").read_text())
    child = int((tmp_path / f"child-{record.id}").read_text())
    assert not _alive(worker) and not _alive(child)  # the whole process group
    assert (tmp_path / f"finally-{record.id}").read_text() == "ran"
    assert f"timed out after 1 s; process group {worker} killed" in app.logs(record.id)


def test_finally_is_bounded(sqlite_app: norc.Norc) -> None:
    """A finally_ that hangs is killed after finally_timeout; the outcome stands."""
    app = sqlite_app
    app.save_task(SlowFinally(name="slowfin", finally_timeout=0.5))
    app.save_task(Outcome(name="after"))
    ids = [app.enqueue("slowfin"), app.enqueue("after")]
    records = _run_all(app, ids)
    assert [r.status for r in records] == [InstanceStatus.SUCCESS, InstanceStatus.SUCCESS]
    assert "finally_ exceeded 0.5 s" in app.logs(ids[0])


def test_megabytes_and_binary_output_keep_the_log_intact(sqlite_app: norc.Norc) -> None:
    """Large and non-UTF-8 output neither blocks the task nor breaks reading its log."""
    app = sqlite_app
    app.save_task(Noisy(name="noisy", megabytes=6))
    [record] = _run_all(app, [app.enqueue("noisy")])
    assert record.status is InstanceStatus.SUCCESS
    assert app.log_path(record).stat().st_size > 6 * 1024 * 1024
    assert "\ufffd" in app.logs(record.id)[-2000:]  # undecodable bytes come back replaced


def test_missing_task_type_is_an_error_and_the_executor_goes_on(app: norc.Norc) -> None:
    """An instance whose class is gone ends ERROR naming type and plugin; the next one runs."""
    task_id = app.db.insert_task(
        name="orphan",
        type="Vanished",
        type_path="norc_gone_plugin:Vanished",
        plugin="norc-gone",
        params={},
        settings={"description": "", "timeout": None, "finally_timeout": 1.0},
    )
    app.save_task(Outcome(name="fine"))
    ids = [app.enqueue(task_id), app.enqueue("fine")]
    records = _run_all(app, ids)
    assert records[0].status is InstanceStatus.ERROR
    assert "'Vanished'" in (records[0].error or "") and "norc-gone" in (records[0].error or "")
    assert records[1].status is InstanceStatus.SUCCESS


def test_invalid_stored_params_are_an_error(sqlite_app: norc.Norc) -> None:
    """Params that no longer fit the class end the instance ERROR, naming the parameter."""
    app = sqlite_app
    app.save_task(Echo(name="e"))
    with app.db.transaction() as tx:
        from norc.store.schema import tasks

        tx.conn.execute(tasks.update().values(params={"message": 12}))
    [record] = _run_all(app, [app.enqueue("e")])
    assert record.status is InstanceStatus.ERROR
    assert "'message'" in (record.error or "")


def test_heartbeat_row_lives_with_the_executor(app: norc.Norc) -> None:
    """An executor is a daemon row: RUNNING with a fresh heartbeat, ENDED after stop()."""
    executor = app.executor(concurrency=3)
    executor.start()
    try:
        [row] = app.db.daemons(kind="executor")
        assert row.status == "RUNNING" and row.concurrency == 3 and row.pid == os.getpid()
        assert row.heartbeat is not None
    finally:
        assert executor.stop(timeout=30)
    [row] = app.db.daemons(kind="executor")
    assert row.status == DaemonStatus.ENDED.value and row.ended_at is not None


def test_embedded_executor_leaves_signal_handlers_alone(sqlite_app: norc.Norc) -> None:
    """Embedding an executor installs no signal handlers."""
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with sqlite_app.executor():
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_stop_lets_running_instances_finish(sqlite_app: norc.Norc) -> None:
    """stop() takes nothing new but waits for what runs; the rest stays QUEUED."""
    app = sqlite_app
    app.save_task(Sleep(name="nap", seconds=1.0))
    running, waiting = app.enqueue("nap"), app.enqueue("nap")
    executor = app.executor(concurrency=1).start()
    wait_until(lambda: run_started(app, running))
    assert executor.stop(timeout=30)
    assert app.instance(running).status is InstanceStatus.SUCCESS
    assert app.instance(waiting).status is InstanceStatus.QUEUED


def test_kill_interrupts_running_instances_and_runs_finally(
    sqlite_app: norc.Norc, tmp_path: Path
) -> None:
    """kill() ends running instances INTERRUPTED at once; their finally_ still runs."""
    app = sqlite_app
    app.save_task(Hang(name="hang", marker_dir=str(tmp_path)))
    instance_id = app.enqueue("hang")
    executor = app.executor().start()
    wait_until(lambda: (tmp_path / f"pid-{instance_id}").exists())
    assert executor.kill(timeout=30)
    record = app.instance(instance_id)
    assert record.status is InstanceStatus.INTERRUPTED
    assert (tmp_path / f"finally-{instance_id}").exists()
    [row] = app.db.daemons(kind="executor")
    assert row.status == DaemonStatus.KILLED.value


def test_a_timeout_counts_from_the_run_not_from_the_worker_start(
    sqlite_app: norc.Norc, tmp_path: Path
) -> None:
    """A worker process slower to start than the task's timeout still lets the task run
    its time, and the recorded run is the task's, not the start-up's."""
    app = sqlite_app
    slow_python = tmp_path / "slow-python"
    start_up = 3.0
    slow_python.write_text(f'#!/bin/sh\nsleep {start_up}\nexec "{sys.executable}" "$@"\n')
    slow_python.chmod(0o755)
    app.save_task(Sleep(name="short", seconds=0.2, timeout=2.0))
    [record] = _run_all(app, [app.enqueue("short")], python=str(slow_python))
    assert record.status is InstanceStatus.SUCCESS  # its 2 s did not include the 3 s start
    assert record.started_at and record.enqueued_at
    # The recorded start is the run's, stamped after the start-up it waited for.
    assert (record.started_at - record.enqueued_at).total_seconds() >= start_up


def test_a_task_that_ends_a_new_worker_fails_alone(sqlite_app: norc.Norc, tmp_path: Path) -> None:
    """A task that exits the worker process on its first run is an ERROR of that instance;
    the executor is not taken for a broken host and runs the next one."""
    app = sqlite_app
    hold = tmp_path / "hold"
    hold.touch()
    app.save_task(Holdable(name="exits", hold=str(hold), exit_code=3))
    with app.executor() as executor:
        first = app.enqueue("exits")
        wait_until(lambda: app.instance(first).status.is_final)
        second = app.enqueue("exits")
        wait_until(lambda: app.instance(second).status.is_final)
        assert executor.status is DaemonStatus.RUNNING
    assert app.instance(first).status is InstanceStatus.ERROR
    assert "exited with code 3" in (app.instance(first).error or "")
    assert app.instance(second).status is InstanceStatus.SUCCESS


def test_thread_isolation_runs_in_process(sqlite_app: norc.Norc) -> None:
    """isolation='thread' runs the task in the executor's own process."""
    app = sqlite_app
    app.save_task(Outcome(name="ok"))
    [record] = _run_all(app, [app.enqueue("ok")], isolation="thread")
    assert record.status is InstanceStatus.SUCCESS and record.pid == os.getpid()


def test_idle_embedded_executor_wakes_at_once(sqlite_app: norc.Norc) -> None:
    """An enqueue in the same process starts an idle executor's next run within milliseconds."""
    app = sqlite_app
    app.save_task(Outcome(name="ok"))
    with app.executor():
        first = app.enqueue("ok")  # warms the worker process
        wait_until(lambda: app.instance(first).status.is_final)
        time.sleep(0.3)  # let the executor go idle, waiting on its queue
        before = app.db.wakeups.generation("default")
        instance_id = app.enqueue("ok")
        # The mechanism: the enqueue signals the in-process wake-up the idle claim waits
        # on (how fast that is, is bench/queue.py's business, not a test's).
        assert app.db.wakeups.generation("default") > before
        # Not "started_at is set": a claim stamps it before the run, and leaving the block
        # right then would give the claimed instance back, unstarted.
        wait_until(lambda: app.instance(instance_id).status.is_final)
    record = app.instance(instance_id)
    assert record.status is InstanceStatus.SUCCESS
    assert record.enqueued_at and record.started_at and record.started_at >= record.enqueued_at


def test_priority_runs_first(sqlite_app: norc.Norc) -> None:
    """A high-priority instance enqueued last is run first by a single slot."""
    app = sqlite_app
    app.save_task(Outcome(name="ok"))
    low = app.enqueue_many("ok", 3)
    high = app.enqueue("ok", priority=10)
    records = {r.id: r for r in _run_all(app, [*low, high])}
    assert all(records[high].started_at <= records[i].started_at for i in low)  # type: ignore[operator]


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_unknown_queue_fails_before_starting(sqlite_app: norc.Norc, isolation: str) -> None:
    """An executor on a missing queue raises UnknownQueue and registers nothing."""
    from norc.errors import UnknownQueue

    with pytest.raises(UnknownQueue):
        sqlite_app.executor(queue="missing", isolation=isolation).start()  # type: ignore[arg-type]
    assert sqlite_app.db.daemons() == []


def test_an_interrupt_decided_for_a_finished_instance_spares_the_next() -> None:
    """A stop decided for the instance a slot just finished does not touch the one it
    runs now, one decided for the instance it runs next applies when that starts, and a
    KILL interrupts whatever it runs."""
    from norc.executor.work import SlotState

    slot = SlotState()
    slot.busy_with = 1
    slot.ended()  # 1 ends; whoever decided to stop it read busy_with before that
    slot.busy_with = 2
    slot.interrupt(1, "stopped from outside: the instance was ended")
    assert not slot.interrupted()
    slot.interrupt(2, "stopped from outside: the instance was ended")
    assert slot.interrupted()
    slot.ended()
    slot.busy_with = 3
    assert not slot.interrupted()
    slot.interrupt(4, "stopped from outside: the instance was ended")  # sent ahead
    assert not slot.interrupted()
    slot.ended()
    slot.busy_with = 4  # starts: interrupted at once
    assert slot.interrupted() == "stopped from outside: the instance was ended"
    slot.interrupt(None, "interrupted by a KILL request")
    assert slot.interrupted() == "interrupted by a KILL request"


_LATE_MODULE = """
import attrs

from norc.abc import RunContext, Task


@attrs.define(kw_only=True)
class Late(Task):
    type_name = "test.Late"

    def run(self, ctx: RunContext) -> bool:
        return True
"""


def test_a_class_workers_cannot_import_is_error_until_it_is_installed(
    sqlite_app: norc.Norc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance whose task class the worker cannot import ends ERROR saying so; once
    the module is installed, the next instance of the same task runs in the same worker."""
    import sys
    import types

    app = sqlite_app
    module = types.ModuleType("norc_test_late_module")
    exec(_LATE_MODULE, module.__dict__)  # only this process has it, for now
    monkeypatch.setitem(sys.modules, module.__name__, module)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])  # workers get our path
    app.save_task(module.Late(name="late"))
    with app.executor(concurrency=1):
        first = app.enqueue("late")
        wait_until(lambda: app.instance(first).status.is_final, 30)
        record = app.instance(first)
        assert record.status is InstanceStatus.ERROR
        assert "is not installed here" in (record.error or "")
        (site / "norc_test_late_module.py").write_text(_LATE_MODULE)
        second = app.enqueue("late")
        wait_until(lambda: app.instance(second).status.is_final, 30)
        assert app.instance(second).status is InstanceStatus.SUCCESS
        assert app.instance(second).pid == record.pid  # the same worker process


def test_two_executors_on_one_handle_and_queue_each_start_one_at_once(app: norc.Norc) -> None:
    """Two idle executors embedded on one handle, on the same queue, start a pair of
    instances enqueued together at the same time, one each: neither waits for the other's
    wake-up."""
    app.save_task(Sleep(name="s", seconds=1.0))
    options = {"concurrency": 1, "isolation": "thread", "claim_ahead": 0.0}
    with app.executor(**options) as a, app.executor(**options) as b:  # type: ignore[arg-type]
        time.sleep(0.6)  # both idle, waiting for work
        ids = app.enqueue_many("s", 2)
        wait_until(lambda: all(run_started(app, i) for i in ids), 10)
    records = app.db.instances_by_id(ids)  # both ended: the executors' stop let them finish
    # One each, both running at once (the 1 s runs overlap): neither took both, nor
    # waited for the other to finish. How soon each woke is bench/queue.py's business.
    assert {r.executor_id for r in records} == {a.id, b.id}
    spans = sorted((r.started_at, r.ended_at) for r in records)
    assert spans[0][1] is not None and spans[1][0] is not None and spans[1][0] < spans[0][1]
