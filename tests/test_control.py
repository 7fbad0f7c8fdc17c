"""Operating Norc: requests to live daemons, dead daemons settled, suspension, prune, logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import norc
from norc.control import ControlError
from norc.status import DaemonStatus, InstanceStatus
from norc.testing import run_started, wait_until
from tests.tasks import Hang, Outcome, Sleep

FAST = {"NORC_HEARTBEAT_INTERVAL": "0.5", "NORC_HEARTBEAT_TIMEOUT": "3"}


class Daemons:
    """Starts `norc executor` / `norc scheduler` processes on a test database."""

    def __init__(self, db_url: str, log_dir: Path) -> None:
        self.db_url = db_url
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **FAST, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("norc")),
                "--db",
                self.db_url,
                "--log-dir",
                str(self.log_dir),
                *args,
            ],
            env=env,
            # A file, not a pipe: daemons log to stderr, and a pipe nobody reads fills up.
            stderr=tempfile.TemporaryFile(),  # noqa: SIM115 - lives as long as the process
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                # SIGQUIT kills what still runs; a SIGTERM would wait for it (30 s).
                p.send_signal(signal.SIGQUIT)
        for p in self.procs:
            p.communicate(timeout=30)


@pytest.fixture
def fast_app(db_url: str, log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[norc.Norc]:
    """A handle whose heartbeat settings match the fast daemons started by tests."""
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    handle = norc.Norc(db_url, log_dir=log_dir)
    yield handle
    handle.close()


@pytest.fixture
def daemons(db_url: str, log_dir: Path) -> Iterator[Daemons]:
    """Daemon processes, all ended after the test."""
    d = Daemons(db_url, log_dir)
    yield d
    d.stop_all()


def _daemon_id(app: norc.Norc, kind: str, pid: int) -> int:
    wait_until(lambda: any(d.pid == pid for d in app.daemons(kind)), 30)
    return next(d.id for d in app.daemons(kind) if d.pid == pid)


def test_requests_reach_a_live_executor(fast_app: norc.Norc, daemons: Daemons) -> None:
    """PAUSE, RESUME, KILL and STOP each take effect on an executor process within a second."""
    app = fast_app
    app.save_task(Outcome(name="ok"))
    app.save_task(Sleep(name="nap", seconds=60))
    proc = daemons.start("executor", "-c", "2")
    ex = _daemon_id(app, "executor", proc.pid)

    assert app.request(ex, "PAUSE", wait=True).status == "PAUSED"
    held = app.enqueue("ok")
    time.sleep(1.0)
    assert app.instance(held).status is InstanceStatus.QUEUED  # paused: takes nothing
    assert app.request(ex, "RESUME", wait=True).status == "RUNNING"
    wait_until(lambda: app.instance(held).status is InstanceStatus.SUCCESS, 10)

    napping = app.enqueue("nap")
    wait_until(lambda: run_started(app, napping), 10)
    record = app.request(ex, "KILL", wait=True, timeout=15)
    assert record.status == DaemonStatus.KILLED.value
    assert app.instance(napping).status is InstanceStatus.INTERRUPTED
    assert proc.wait(timeout=15) == 0

    second = daemons.start("executor")
    ex2 = _daemon_id(app, "executor", second.pid)
    assert app.request(ex2, "STOP", wait=True, timeout=15).status == DaemonStatus.ENDED.value
    assert second.wait(timeout=15) == 0
    with pytest.raises(ControlError, match="already ended"):
        app.request(ex2, "PAUSE")


def test_requests_reach_a_live_scheduler(fast_app: norc.Norc, daemons: Daemons) -> None:
    """A scheduler process pauses (no fires), resumes, reloads and stops on request."""
    app = fast_app
    app.save_task(Outcome(name="tick"))
    s = app.add_schedule("tick", every=0.2, start=0)
    proc = daemons.start("scheduler")
    sid = _daemon_id(app, "scheduler", proc.pid)
    fired = lambda: len([i for i in app.instances(limit=None) if i.schedule_id == s.id])  # noqa: E731
    wait_until(lambda: fired() >= 2, 15)
    assert app.request(sid, "PAUSE", wait=True).status == "PAUSED"
    time.sleep(0.3)
    before = fired()
    time.sleep(1.0)
    assert fired() == before
    assert app.request(sid, "RESUME", wait=True).status == "RUNNING"
    wait_until(lambda: fired() >= before + 2, 10)
    app.request(sid, "RELOAD", wait=True)
    with pytest.raises(ControlError, match="RELOAD is for schedulers"):
        app.request(_start_executor(app, daemons), "RELOAD")
    assert app.request(sid, "STOP", wait=True).status == DaemonStatus.ENDED.value
    assert proc.wait(timeout=15) == 0
    assert app.schedule(s.id).claimed_by is None  # leases given back


def _start_executor(app: norc.Norc, daemons: Daemons) -> int:
    return _daemon_id(app, "executor", daemons.start("executor").pid)


def test_host_wide_stop(fast_app: norc.Norc, daemons: Daemons) -> None:
    """`control host NAME --stop` stops every live daemon on that host."""
    app = fast_app
    app.tasks()  # the schema exists first: this test is about control, not creation races
    procs = [daemons.start("executor"), daemons.start("executor"), daemons.start("scheduler")]
    ids = [
        _daemon_id(app, "executor", procs[0].pid),
        _daemon_id(app, "executor", procs[1].pid),
        _daemon_id(app, "scheduler", procs[2].pid),
    ]
    assert sorted(app.request_host(socket.gethostname(), "STOP")) == sorted(ids)
    for p in procs:
        assert p.wait(timeout=20) == 0
    assert {d.status for d in app.daemons()} == {DaemonStatus.ENDED.value}


def test_sigkilled_executor_is_settled_by_a_survivor(fast_app: norc.Norc, daemons: Daemons) -> None:
    """An executor killed with SIGKILL mid-instance: a survivor ends it INTERRUPTED, says
    why, and the task's retry runs on the survivor — once."""
    app = fast_app
    app.save_task(Sleep(name="long", seconds=2, max_retries=1, retry_delay=0))
    victim = daemons.start("executor")
    victim_id = _daemon_id(app, "executor", victim.pid)
    instance_id = app.enqueue("long")
    wait_until(lambda: app.instance(instance_id).status is InstanceStatus.RUNNING, 15)
    survivor = daemons.start("executor", "-q", "default")
    survivor_id = _daemon_id(app, "executor", survivor.pid)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    # The survivor judges others only after a whole heartbeat timeout of beating without
    # trouble: on a loaded machine its first beats can come late, so allow for that.
    wait_until(lambda: app.instance(instance_id).status is InstanceStatus.INTERRUPTED, 120)
    record = app.instance(instance_id)
    assert record.error and record.error.startswith(f"executor {victim_id} on ")
    assert "stopped beating at" in record.error
    dead = next(d for d in app.daemons() if d.id == victim_id)
    assert dead.status == DaemonStatus.ERROR.value and dead.ended_at is not None
    wait_until(lambda: any(r.status is InstanceStatus.SUCCESS for r in app.instances()), 30)
    attempts = sorted(app.instances(task="long"), key=lambda r: r.attempt)
    assert [(r.attempt, r.status) for r in attempts] == [
        (1, InstanceStatus.INTERRUPTED),
        (2, InstanceStatus.SUCCESS),
    ]
    assert attempts[1].executor_id == survivor_id
    assert attempts[1].first_attempt_id == instance_id
    assert app.queue("default").count() == 0  # nothing left claimed by the dead
    from norc import control

    assert control.handle_daemon(app, victim_id).status == DaemonStatus.HANDLED.value


def test_dead_daemon_can_be_forced_down(fast_app: norc.Norc, daemons: Daemons) -> None:
    """A request to a daemon that stopped beating is refused, unless forced."""
    app = fast_app
    victim = daemons.start("executor")
    victim_id = _daemon_id(app, "executor", victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    time.sleep(3.2)
    with pytest.raises(ControlError, match="not alive"):
        app.request(victim_id, "PAUSE")
    assert app.request(victim_id, "STOP", force=True).status == DaemonStatus.KILLED.value


def test_broken_host_suspends_the_executor(sqlite_app: norc.Norc, tmp_path: Path) -> None:
    """An executor that cannot start a worker is SUSPENDED until resumed; the instance is ERROR."""
    app = sqlite_app
    app.save_task(Outcome(name="ok"))
    instance_id = app.enqueue("ok")
    ex = app.executor(python=str(tmp_path / "no-such-python")).start()
    try:
        wait_until(lambda: app.instance(instance_id).status.is_final, 10)
        assert app.instance(instance_id).status is InstanceStatus.ERROR
        assert "cannot start a worker process" in (app.instance(instance_id).error or "")
        wait_until(lambda: app.daemons()[0].status == DaemonStatus.SUSPENDED.value, 10)
        second = app.enqueue("ok")
        time.sleep(0.5)
        assert app.instance(second).status is InstanceStatus.QUEUED  # suspended: takes nothing
        ex.python = None
        for slot in ex._slots:  # the host is "fixed": workers use this interpreter again
            assert slot.worker is not None
            slot.worker.python = sys.executable
        app.request(ex.id or 0, "RESUME", wait=True)
        wait_until(lambda: app.instance(second).status is InstanceStatus.SUCCESS, 10)
        assert app.daemons()[0].error is None
    finally:
        ex.stop()


def test_report_json_is_the_database(fast_app: norc.Norc, tmp_path: Path) -> None:
    """`report executors --json` shows each executor's row and its outcome counts."""
    app = fast_app
    app.save_task(Outcome(name="ok"))
    app.save_task(Outcome(name="bad", result=False))
    ids = [app.enqueue("ok"), app.enqueue("ok"), app.enqueue("bad")]
    with app.executor() as ex:
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)))
        out = subprocess.run(
            [
                str(Path(sys.executable).with_name("norc")),
                "--db",
                app.settings.database_url,
                "report",
                "executors",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **FAST},
        ).stdout
    [row] = json.loads(out)
    assert row["id"] == ex.id and row["alive"] is True and row["status"] == "RUNNING"
    assert (row["succeeded"], row["failed"], row["running"]) == (2, 1, 0)


def test_prune_deletes_old_history_only(sqlite_app: norc.Norc) -> None:
    """prune removes final instances and logs older than the cut-off, keeping the rest."""
    app = sqlite_app
    app.save_task(Outcome(name="ok"))
    old = [app.enqueue("ok") for _ in range(5)]
    with app.executor():
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(old)))
    paths = [app.log_path(r) for r in app.db.instances_by_id(old)]
    assert all(p.exists() for p in paths)
    time.sleep(1.1)
    waiting = app.enqueue("ok")
    counts = app.prune(timedelta(seconds=1), batch=2)
    assert counts["instances"] == 5 and counts["daemons"] == 1
    assert app.db.instances_by_id(old) == []
    assert not any(p.exists() for p in paths)
    assert app.instance(waiting).status is InstanceStatus.QUEUED
    assert app.queue("default").count() == 1


def test_follow_prints_a_running_log_until_it_ends(sqlite_app: norc.Norc, tmp_path: Path) -> None:
    """`logs instance ID --follow` streams a running instance's output and exits when it ends."""
    from norc_command import CommandTask

    app = sqlite_app
    app.save_task(
        CommandTask(name="talk", command="for i in 1 2 3; do echo line-$i; sleep 0.4; done")
    )
    instance_id = app.enqueue("talk")
    with app.executor():
        wait_until(lambda: run_started(app, instance_id))
        out = subprocess.run(
            [
                str(Path(sys.executable).with_name("norc")),
                "--db",
                app.settings.database_url,
                "--log-dir",
                str(app.settings.log_dir),
                "logs",
                "instance",
                str(instance_id),
                "--follow",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    assert all(f"line-{i}" in out for i in (1, 2, 3))
    assert app.instance(instance_id).status is InstanceStatus.SUCCESS


def test_an_executor_settled_while_stalled_ends_when_it_wakes(
    fast_app: norc.Norc, daemons: Daemons, tmp_path: Path
) -> None:
    """An executor that stopped beating (SIGSTOP here; a partition or a paused VM alike) is
    settled by a survivor: its instance INTERRUPTED. When it wakes, it must not carry on
    under that row: it kills what it still ran, leaves the verdict as it is and exits 2."""
    app = fast_app
    app.save_task(Hang(name="hang", marker_dir=str(tmp_path), child=True))
    victim = daemons.start("executor")
    victim_id = _daemon_id(app, "executor", victim.pid)
    instance_id = app.enqueue("hang")
    child_file = tmp_path / f"child-{instance_id}"
    wait_until(child_file.exists, 30)
    child = int(child_file.read_text())
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        daemons.start("executor", "-q", "default")  # the survivor that settles it
        wait_until(lambda: app.instance(instance_id).status is InstanceStatus.INTERRUPTED, 60)
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    assert victim.wait(timeout=60) == 2
    dead = next(d for d in app.daemons() if d.id == victim_id)
    assert dead.status == DaemonStatus.ERROR.value and "stopped beating" in (dead.error or "")
    wait_until(lambda: not Path(f"/proc/{child}").exists(), 30)
    assert "declared dead" in app.daemon_logs(victim_id)
