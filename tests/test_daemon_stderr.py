"""The command-line daemons say what they do on stderr (for journald, containers and a
person at a terminal) as well as in their log in the log store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa

import norc
from norc.store.schema import schedules
from norc.testing import wait_until
from tests.tasks import Outcome


class Daemon:
    """A `norc` daemon process whose stderr goes to a file the test reads."""

    def __init__(self, db_url: str, log_dir: Path, *args: str) -> None:
        self.out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - as long as the process
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        norc_bin = str(Path(sys.executable).with_name("norc"))
        self.proc = subprocess.Popen(
            [norc_bin, "--db", db_url, "--log-dir", str(log_dir), *args],
            env=env,
            stderr=self.out,
        )

    def text(self) -> str:
        self.out.seek(0)
        return self.out.read().decode(errors="replace")

    def json_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def events(self) -> list[object]:
        return [line.get("event") for line in self.json_lines()]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no end after SIGINT; stderr:\n{self.text()}") from None


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_scheduler_writes_json_lines_to_a_non_terminal_stderr(
    sqlite_app: norc.Norc, sqlite_url: str, log_dir: Path, started: list[Daemon]
) -> None:
    """Not on a terminal, `norc scheduler` writes JSON lines: its start, its end, and the
    same events into its log in the log store."""
    sqlite_app.tasks()  # the schema exists before the daemon starts
    d = Daemon(sqlite_url, log_dir, "scheduler")
    started.append(d)
    wait_until(lambda: "scheduler started" in d.events(), 30)
    assert d.stop() == 0
    lines = d.json_lines()
    start = next(line for line in lines if line["event"] == "scheduler started")
    assert start["level"] == "info" and start["pid"] == d.proc.pid and "timestamp" in start
    assert "scheduler ended" in d.events()
    scheduler_id = int(str(start["scheduler"]))
    assert "scheduler started" in sqlite_app.daemon_logs(scheduler_id)


def test_executor_console_format_is_for_people(
    sqlite_app: norc.Norc, sqlite_url: str, log_dir: Path, started: list[Daemon]
) -> None:
    """`--log-format console` gives readable lines, not JSON."""
    sqlite_app.tasks()
    d = Daemon(sqlite_url, log_dir, "executor", "--log-format", "console")
    started.append(d)
    wait_until(lambda: "executor started" in d.text(), 30)
    assert d.stop() == 0
    started_line = next(line for line in d.text().splitlines() if "executor started" in line)
    assert not started_line.startswith("{")
    assert "queue=default" in started_line or "queue" in started_line


def test_a_schedule_set_aside_is_an_error_line_on_stderr(
    sqlite_app: norc.Norc, sqlite_url: str, log_dir: Path, started: list[Daemon]
) -> None:
    """A schedule the scheduler cannot time (a corrupt row) is set aside, and the daemon
    says so on stderr as an error naming the schedule, besides showing ERROR."""
    sqlite_app.save_task(Outcome(name="t"))
    bad = sqlite_app.add_schedule("t", cron="* * * * *")
    with sqlite_app.db.transaction() as tx:
        tx.conn.execute(
            sa.update(schedules).where(schedules.c.id == bad.id).values(spec="not a spec")
        )
    d = Daemon(sqlite_url, log_dir, "scheduler")
    started.append(d)
    wait_until(lambda: "schedule set aside" in d.events(), 30)
    line = next(line for line in d.json_lines() if line["event"] == "schedule set aside")
    assert line["level"] == "error" and line["schedule"] == bad.id
    assert "cannot be timed" in str(line["error"])
    wait_until(lambda: sqlite_app.daemons(kind="scheduler")[0].status == "ERROR", 30)
    assert d.stop() == 0


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_traceback_on_stderr_holds_no_local_variables(fmt: str) -> None:
    """A daemon's error with a traceback shows where it failed, never the frames' local
    variables (a password in a URL, a token)."""
    import io

    import structlog

    from norc.daemon import configure_stderr_logging

    out = io.StringIO()
    configure_stderr_logging(fmt, out)  # type: ignore[arg-type]
    try:
        url = "postgresql://norc:s3cret-password@db/norc"
        try:
            raise RuntimeError(f"cannot reach {url.split('@')[1]}")
        except RuntimeError:
            structlog.get_logger("norc.test").exception("loop failed")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "loop failed" in text and "RuntimeError" in text
    assert "s3cret-password" not in text
