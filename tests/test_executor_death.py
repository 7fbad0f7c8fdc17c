"""An executor that dies (SIGKILL) takes its worker processes and its tasks' processes
with it: nothing runs on that nobody records, and a retry never runs beside the first run.

Real processes throughout: `norc executor` is started as a separate process, killed with
SIGKILL, and what it ran is looked for in /proc.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import norc
from norc.status import InstanceStatus
from norc.testing import wait_until
from norc_command import CommandTask
from tests.tasks import Hang
from tests.test_control import FAST, Daemons
from tests.test_executor import _alive

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="looks for processes in /proc")


@pytest.fixture
def fast_app(
    sqlite_url: str, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[norc.Norc]:
    """A handle on a SQLite file whose heartbeat settings match the daemons'."""
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    handle = norc.Norc(sqlite_url, log_dir=log_dir)
    yield handle
    handle.close()


@pytest.fixture
def daemons(sqlite_url: str, log_dir: Path) -> Iterator[Daemons]:
    """`norc` daemon processes on the handle's database, all ended after the test."""
    d = Daemons(sqlite_url, log_dir)
    yield d
    d.stop_all()


@pytest.fixture
def seconds() -> Iterator[str]:
    """An argument for ``sleep`` that no other process has (about 300 s); every sleep
    still running with it is killed after the test, so a failure leaves none behind."""
    marker = f"300.{random.randrange(10**8):08d}"
    yield marker
    for pid in _sleeps(marker):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workers() -> Iterator[list[int]]:
    """Worker pids the test saw; a worker still there after it is killed with its
    process group, so a failure leaves no task running."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid) and b"norc.executor.worker" in _cmdline(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone
        return b""


def _sleeps(seconds: str) -> list[int]:
    """The live (not zombie) processes running exactly ``sleep <seconds>``."""
    wanted = f"sleep\0{seconds}\0".encode()
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if _cmdline(pid) == wanted and _alive(pid)]


def test_a_sigkilled_executor_leaves_no_worker_and_no_task_process(
    fast_app: norc.Norc, daemons: Daemons, seconds: str, workers: list[int], tmp_path: Path
) -> None:
    """SIGKILL an executor running a shell command (two sleeps, one in the background)
    and a Python task with a child: both workers and all their processes go."""
    app = fast_app
    app.save_task(CommandTask(name="shell", command=f"sleep {seconds} & sleep {seconds}"))
    app.save_task(Hang(name="python", marker_dir=str(tmp_path), child=True))
    victim = daemons.start("executor", "-c", "2")
    shell, python = app.enqueue("shell"), app.enqueue("python")
    child_file = tmp_path / f"child-{python}"
    wait_until(lambda: len(_sleeps(seconds)) == 2 and child_file.exists(), 30)
    assert app.instance(shell).status is InstanceStatus.RUNNING
    assert app.instance(python).status is InstanceStatus.RUNNING
    sleeps = _sleeps(seconds)
    # The executor starts each worker in a session of its own: the sleeps' process group
    # is the shell command's worker.
    [shell_worker] = {os.getpgid(pid) for pid in sleeps}
    python_worker = int((tmp_path / f"pid-{python}").read_text())
    workers += [shell_worker, python_worker]
    child = int(child_file.read_text())
    task_processes = [shell_worker, *sleeps, python_worker, child]
    assert all(_alive(pid) for pid in task_processes)
    assert shell_worker != python_worker

    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    wait_until(lambda: not any(_alive(pid) for pid in task_processes), 30)
    assert _sleeps(seconds) == []


def test_the_retry_of_a_sigkilled_executors_run_runs_once_and_alone(
    fast_app: norc.Norc, daemons: Daemons, seconds: str, workers: list[int], tmp_path: Path
) -> None:
    """The first run's processes are gone before a survivor settles the dead executor;
    the retry then runs once (the runs file gets one line per run)."""
    app = fast_app
    runs = tmp_path / "runs"
    # A run appends its line; the first one then sleeps, the retry ends at once.
    command = (
        f'echo "run $$" >> {runs}; [ "$(wc -l < {runs})" -gt 1 ] && exit 0;'
        f" sleep {seconds} & sleep {seconds}"
    )
    app.save_task(CommandTask(name="long", command=command, max_retries=1, retry_delay=0))
    victim = daemons.start("executor")
    first = app.enqueue("long")
    wait_until(lambda: len(_sleeps(seconds)) == 2, 30)
    [worker] = {os.getpgid(pid) for pid in _sleeps(seconds)}
    workers.append(worker)

    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    wait_until(lambda: not _sleeps(seconds) and not _alive(worker), 30)
    assert app.instance(first).status is InstanceStatus.RUNNING  # nobody has settled it yet

    daemons.start("executor")  # the survivor: settles the dead one, runs the retry
    wait_until(lambda: sum(r.status.is_final for r in app.instances(task="long")) == 2, 60)
    attempts = sorted(app.instances(task="long"), key=lambda r: r.attempt)
    assert [(r.attempt, r.status) for r in attempts] == [
        (1, InstanceStatus.INTERRUPTED),
        (2, InstanceStatus.SUCCESS),
    ]
    assert len(runs.read_text().splitlines()) == 2
    assert _sleeps(seconds) == []
