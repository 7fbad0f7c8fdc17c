"""CommandTask: date substitution, exit codes, nice, output, timeouts of shell commands."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import norc
from norc.errors import InvalidTaskParams
from norc.testing import wait_until
from norc_command import CommandTask, substitute_dates

WHEN = datetime(2026, 3, 7, 4, 5, 9, tzinfo=UTC)


def test_big_mm_is_the_month_and_small_mm_the_minute() -> None:
    """$UTC{YYYY-MM-DD hh:mm:ss} renders month as MM and minute as mm (the seed's bug fixed)."""
    assert substitute_dates("x $UTC{YYYY-MM-DD hh:mm:ss} y", WHEN) == "x 2026-03-07 04:05:09 y"


def test_substitution_tokens_and_literals() -> None:
    """YY is two digits, unknown letters are kept, and several macros in one command work."""
    assert substitute_dates("$UTC{YY/MM} and $UTC{DD.hhh}", WHEN) == "26/03 and 07.04h"
    assert substitute_dates("no macros here $HOME", WHEN) == "no macros here $HOME"


def test_local_uses_the_host_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """$LOCAL{} renders the same instant in the executor host's local time zone."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert substitute_dates("$LOCAL{hh:mm}", WHEN) == "09:35"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_invalid_settings_are_refused() -> None:
    """An empty command or a nice level outside 0-19 is InvalidTaskParams."""
    with pytest.raises(InvalidTaskParams, match="empty"):
        CommandTask(name="c", command="  ")
    with pytest.raises(InvalidTaskParams, match="nice"):
        CommandTask(name="c", command="true", nice=20)


def _run(app: norc.Norc, **tasks: CommandTask) -> dict[str, norc.InstanceRecord]:
    ids = {}
    for name, task in tasks.items():
        app.save_task(task)
        ids[name] = app.enqueue(name)
    with app.executor(concurrency=4):
        wait_until(lambda: all(app.instance(i).status.is_final for i in ids.values()), 60)
    return {name: app.instance(i) for name, i in ids.items()}


def test_exit_status_decides_the_outcome(app: norc.Norc, tmp_path: Path) -> None:
    """Exit 0 is SUCCESS, other codes FAILURE with the code recorded; 126/127: invalid command."""
    not_executable = tmp_path / "data.txt"
    not_executable.write_text("just data")
    results = _run(
        app,
        ok=CommandTask(name="ok", command="echo fine; exit 0"),
        three=CommandTask(name="three", command="exit 3"),
        missing=CommandTask(name="missing", command="no-such-command-anywhere --flag"),
        noexec=CommandTask(name="noexec", command=str(not_executable)),
    )
    assert results["ok"].status is norc.InstanceStatus.SUCCESS and results["ok"].exit_code == 0
    assert results["three"].status is norc.InstanceStatus.FAILURE
    assert results["three"].exit_code == 3
    assert results["missing"].exit_code == 127
    assert "invalid command" in (results["missing"].error or "")
    assert 'event="invalid command"' in app.logs(results["missing"].id)
    assert results["noexec"].exit_code == 126
    assert "cannot execute" in (results["noexec"].error or "")


def test_output_and_fire_time_substitution_land_in_the_log(sqlite_app: norc.Norc) -> None:
    """The command's stdout and stderr go to the instance log, dates substituted."""
    results = _run(
        sqlite_app,
        talk=CommandTask(name="talk", command="echo out-$UTC{YYYY}; echo err-line >&2"),
    )
    text = sqlite_app.logs(results["talk"].id)
    assert f"out-{datetime.now(UTC).year}" in text and "err-line" in text


def test_nice_level_applies(sqlite_app: norc.Norc, tmp_path: Path) -> None:
    """nice=7 runs the command with its niceness raised by 7."""
    out = tmp_path / "nice.txt"
    _run(sqlite_app, n=CommandTask(name="n", command=f"nice > {out}", nice=7))
    assert int(out.read_text()) == os.nice(0) + 7


def test_sleeping_command_times_out_with_its_process_group(
    sqlite_app: norc.Norc, tmp_path: Path
) -> None:
    """`sleep 1000` with timeout 1 ends TIMEDOUT, the sleep killed with its group."""
    pidfile = tmp_path / "pid"
    results = _run(
        sqlite_app,
        sleepy=CommandTask(
            name="sleepy", command=f"sleep 1000 & echo $! > {pidfile}; wait", timeout=1
        ),
    )
    record = results["sleepy"]
    assert record.status is norc.InstanceStatus.TIMEDOUT
    assert record.duration is not None and record.duration >= 1.0
    pid = int(pidfile.read_text())
    wait_until(
        lambda: (
            not Path(f"/proc/{pid}").exists()
            or Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        ),
        5,
    )
