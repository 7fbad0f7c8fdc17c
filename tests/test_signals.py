"""The command-line daemons read signals as service managers send them: the first SIGTERM
or SIGINT stops gracefully (running instances finish, bounded by --stop-timeout), a
second one or SIGQUIT kills; and they tell systemd how they are doing (sd_notify)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import norc
from norc.status import DaemonStatus, InstanceStatus
from norc.testing import run_started, wait_until
from tests.tasks import Hang, Outcome, Sleep

NORC = str(Path(sys.executable).with_name("norc"))


class Daemon:
    """A `norc` daemon process on a test database; stderr goes to a file the test reads."""

    def __init__(
        self, db_url: str, log_dir: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - as long as the process
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
        self.proc = subprocess.Popen(
            [NORC, "--db", db_url, "--log-dir", str(log_dir), *args],
            env=full_env,
            stderr=self.out,
        )

    def text(self) -> str:
        self.out.seek(0)
        return self.out.read().decode(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the daemon did not end; stderr:\n{self.text()}") from None

    def id(self, app: norc.Norc, kind: str) -> int:
        pid = self.proc.pid
        wait_until(lambda: any(d.pid == pid for d in app.daemons(kind)), 60)
        return next(d.id for d in app.daemons(kind) if d.pid == pid)


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    """Daemons the test started, SIGKILLed after it if they still run."""
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def _executor(
    app: norc.Norc,
    db_url: str,
    log_dir: Path,
    started: list[Daemon],
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[Daemon, int]:
    d = Daemon(db_url, log_dir, "executor", *args, env=env)
    started.append(d)
    return d, d.id(app, "executor")


def _daemon_status(app: norc.Norc, daemon_id: int) -> str:
    return next(d.status for d in app.daemons() if d.id == daemon_id)


def test_first_sigterm_lets_the_running_instance_finish(
    app: norc.Norc, db_url: str, log_dir: Path, started: list[Daemon]
) -> None:
    """SIGTERM while an instance runs: the instance ends SUCCESS, the executor ENDED, and
    the process exits with code 0."""
    app.save_task(Sleep(name="nap", seconds=2))
    d, ex = _executor(app, db_url, log_dir, started)
    napping = app.enqueue("nap")
    wait_until(lambda: run_started(app, napping), 60)
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert app.instance(napping).status is InstanceStatus.SUCCESS
    assert _daemon_status(app, ex) == DaemonStatus.ENDED.value
    assert "stopping: taking nothing new" in d.text()


def test_work_waiting_behind_a_stop_is_given_back(
    sqlite_app: norc.Norc, sqlite_url: str, log_dir: Path, started: list[Daemon]
) -> None:
    """A graceful stop starts nothing new: what waits in the queue stays QUEUED for
    another executor, while the running instance finishes."""
    app = sqlite_app
    app.save_task(Sleep(name="nap", seconds=2))
    d, _ = _executor(app, sqlite_url, log_dir, started)
    napping = app.enqueue("nap")
    wait_until(lambda: run_started(app, napping), 60)
    waiting = app.enqueue("nap")
    d.signal(signal.SIGINT)
    assert d.wait() == 0
    assert app.instance(napping).status is InstanceStatus.SUCCESS
    assert app.instance(waiting).status is InstanceStatus.QUEUED


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_interrupts_the_running_instance(
    app: norc.Norc,
    db_url: str,
    log_dir: Path,
    started: list[Daemon],
    tmp_path: Path,
    second: signal.Signals,
) -> None:
    """A second SIGTERM (or SIGINT) during the graceful stop kills: the running instance
    ends INTERRUPTED, its finally_ runs, the executor ends KILLED with exit code 0."""
    app.save_task(Hang(name="hang", marker_dir=str(tmp_path)))
    d, ex = _executor(app, db_url, log_dir, started)
    hanging = app.enqueue("hang")
    wait_until(lambda: run_started(app, hanging), 60)
    d.signal(signal.SIGTERM)
    wait_until(lambda: "stopping: taking nothing new" in d.text(), 60)
    assert d.proc.poll() is None  # the graceful stop waits for the hanging instance
    d.signal(second)
    assert d.wait() == 0
    assert app.instance(hanging).status is InstanceStatus.INTERRUPTED
    assert (tmp_path / f"finally-{hanging}").read_text() == "ran"
    assert _daemon_status(app, ex) == DaemonStatus.KILLED.value


def test_sigquit_kills_at_once(
    sqlite_app: norc.Norc, sqlite_url: str, log_dir: Path, started: list[Daemon], tmp_path: Path
) -> None:
    """SIGQUIT, even as the first signal, interrupts the running instance."""
    app = sqlite_app
    app.save_task(Hang(name="hang", marker_dir=str(tmp_path)))
    d, ex = _executor(app, sqlite_url, log_dir, started)
    hanging = app.enqueue("hang")
    wait_until(lambda: run_started(app, hanging), 60)
    d.signal(signal.SIGQUIT)
    assert d.wait() == 0
    assert app.instance(hanging).status is InstanceStatus.INTERRUPTED
    assert _daemon_status(app, ex) == DaemonStatus.KILLED.value


def test_the_stop_timeout_escalates_to_a_kill(
    app: norc.Norc, db_url: str, log_dir: Path, started: list[Daemon], tmp_path: Path
) -> None:
    """When running instances outlast --stop-timeout, the executor kills them itself."""
    app.save_task(Hang(name="hang", marker_dir=str(tmp_path)))
    d, ex = _executor(app, db_url, log_dir, started, "--stop-timeout", "1")
    hanging = app.enqueue("hang")
    wait_until(lambda: run_started(app, hanging), 60)
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert app.instance(hanging).status is InstanceStatus.INTERRUPTED
    assert _daemon_status(app, ex) == DaemonStatus.KILLED.value
    assert "stop timeout (1 s) expired" in d.text()


def test_sigterm_gives_a_schedulers_leases_back_at_once(
    app: norc.Norc, db_url: str, log_dir: Path, started: list[Daemon]
) -> None:
    """A scheduler ends on SIGTERM with exit code 0 and its schedules unleased, so another
    scheduler takes them at once instead of waiting for the lease to expire."""
    app.save_task(Outcome(name="tick"))
    s = app.add_schedule("tick", cron="@daily")
    d = Daemon(db_url, log_dir, "scheduler")
    started.append(d)
    sid = d.id(app, "scheduler")
    wait_until(lambda: app.schedule(s.id).claimed_by == sid, 60)
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert _daemon_status(app, sid) == DaemonStatus.ENDED.value
    assert app.schedule(s.id).claimed_by is None
    assert "stopping: giving the schedules back" in d.text()
    with app.scheduler() as other:
        wait_until(lambda: s.id in other.held, 60)


def test_bad_stop_timeout_is_one_line(sqlite_url: str, log_dir: Path) -> None:
    """--stop-timeout takes seconds > 0 (or inf); anything else is one line, exit code 2."""
    for bad in ("0", "-1", "nan", "soon"):
        result = subprocess.run(
            [NORC, "--db", sqlite_url, "executor", "--stop-timeout", bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (bad, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "--stop-timeout" in result.stderr


# -- sd_notify --------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """An AF_UNIX datagram socket standing in for systemd's notification socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(60)
    yield sock
    sock.close()


def _messages(sock: socket.socket, until: str) -> list[str]:
    """Datagrams received until one contains ``until`` (a timeout fails the test)."""
    got: list[str] = []
    while not any(until in m for m in got):
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {until!r} notification; got {got}") from None
    return got


@pytest.mark.parametrize("kind", ["executor", "scheduler"])
def test_daemon_notifies_ready_and_stopping(
    sqlite_app: norc.Norc,
    sqlite_url: str,
    log_dir: Path,
    started: list[Daemon],
    notify_socket: socket.socket,
    kind: str,
) -> None:
    """Started with $NOTIFY_SOCKET, a daemon sends READY=1 once it runs and STOPPING=1
    when a SIGTERM stops it; WATCHDOG=1 comes when $WATCHDOG_USEC asks for it."""
    sqlite_app.tasks()  # the schema exists before the daemon starts
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "1000000"}
    d = Daemon(sqlite_url, log_dir, kind, env=env)
    started.append(d)
    before_ready = _messages(notify_socket, "READY=1")
    assert d.id(sqlite_app, kind)  # the row exists once READY is sent
    assert any(m.split("\n")[0] == "READY=1" for m in before_ready)
    assert "WATCHDOG=1" in _messages(notify_socket, "WATCHDOG=1")
    d.signal(signal.SIGTERM)
    assert "STOPPING=1" in _messages(notify_socket, "STOPPING=1")
    assert d.wait() == 0


def test_notifier_reaches_an_abstract_socket_and_is_silent_without_one() -> None:
    """'@name' in $NOTIFY_SOCKET is Linux's abstract namespace; no variable, no datagram."""
    from norc.service import Notifier

    name = f"norc-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(10)
        env = {"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "4000000"}
        notifier = Notifier.from_environment(env)
        assert env == {}  # unset for the processes the daemon starts
        assert notifier.watchdog_interval == 2.0
        assert notifier.ready("up")
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
    silent = Notifier.from_environment({})
    assert not silent.enabled and silent.watchdog_interval is None
    assert not silent.ready() and not silent.stopping() and not silent.watchdog()


def test_a_watchdog_for_another_process_is_ignored() -> None:
    """$WATCHDOG_PID naming another process means the watchdog is not ours to feed."""
    from norc.service import Notifier

    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environment(env).watchdog_interval is None


def test_embedded_run_installs_no_handlers(sqlite_app: norc.Norc) -> None:
    """Without install_signal_handlers, run() leaves SIGTERM, SIGINT and SIGQUIT alone."""
    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
    before = [signal.getsignal(s) for s in sigs]
    ex = sqlite_app.executor(isolation="thread")
    seen: list[object] = []

    def look() -> None:
        seen.extend(signal.getsignal(s) for s in sigs)
        ex.stop(timeout=0)

    ex.run(on_started=look)
    assert seen == before
