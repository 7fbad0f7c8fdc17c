"""Bad schedule input never crashes: one-line errors at the CLI, InvalidSpec in the API."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import norc
from norc.errors import InvalidSpec, NorcError
from norc.schedules.timing import SimpleTiming, check_period
from tests.tasks import Outcome
from tests.test_cli import norc_cli

HUGE_DIGITS = "9" * 5000


@pytest.mark.parametrize(
    ("every", "message"),
    [
        (math.inf, "every inf is not a finite number of seconds"),
        (-math.inf, "every -inf is not a finite number of seconds"),
        (math.nan, "every nan is not a finite number of seconds"),
        (1e308, "every 1e+308 seconds is longer than 100 years"),
        (1e-7, "every 1e-07 seconds rounds to zero"),
        (4e-7, "every 4e-07 seconds rounds to zero"),
        (0, "every must be > 0 seconds, got 0"),
        (-5, "every must be > 0 seconds, got -5"),
        (timedelta(0), "every must be > 0 seconds, got datetime.timedelta(0)"),
        pytest.param(
            10**5000,
            "every <an integer of about 5001 digits> seconds is longer than 100 years",
            id="int-of-5000-digits",
        ),
        ("30", "every must be a number of seconds or a timedelta, got str '30'"),
        (True, "every must be a number of seconds or a timedelta, got bool True"),
    ],
)
def test_bad_periods_name_the_value(every: object, message: str) -> None:
    """Each bad period is an InvalidSpec (a ValueError and a NorcError) naming it."""
    with pytest.raises(InvalidSpec) as caught:
        check_period(every)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, NorcError)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("every", "seconds"),
    [(1e-6, 1e-6), (6e-7, 6e-7), (0.2, 0.2), (86400, 86400.0), (timedelta(hours=1), 3600.0)],
)
def test_good_periods_pass(every: object, seconds: float) -> None:
    """Periods from a microsecond to 100 years are taken as seconds."""
    assert check_period(every) == seconds


def test_simple_timing_past_year_9999_never_fires_again() -> None:
    """A period that would step past datetime's range ends the schedule instead of crashing."""
    start = datetime(9999, 12, 1, tzinfo=UTC)
    timing = SimpleTiming(start, 86400 * 365.0)
    assert timing.next_after(start - timedelta(seconds=1)) == start
    assert timing.next_after(start) is None


def test_api_refuses_bad_every_and_start(sqlite_app: norc.Norc) -> None:
    """add_schedule and update_schedule refuse bad periods and delays before storing anything."""
    sqlite_app.save_task(Outcome(name="t"))
    for every in (math.inf, 1e308, 1e-7, 10**5000):
        with pytest.raises(InvalidSpec, match="every"):
            sqlite_app.add_schedule("t", every=every)
    for start in (math.inf, -math.inf, math.nan, 1e308, 10**5000):
        with pytest.raises(InvalidSpec, match="start delay"):
            sqlite_app.add_schedule("t", every=60, start=start)
    assert sqlite_app.schedules() == []
    s = sqlite_app.add_schedule("t", every=60)
    with pytest.raises(InvalidSpec, match="every inf is not a finite number"):
        sqlite_app.update_schedule(s.id, every=math.inf)
    assert sqlite_app.schedule(s.id).period == 60
    with pytest.raises(InvalidSpec, match="out of range 0-59"):
        sqlite_app.add_schedule("t", cron=HUGE_DIGITS + " * * * *")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "inf"], "--every inf is not a finite number of seconds"),
        (["--every", "1e308"], "--every 1e308 seconds is longer than 100 years"),
        (["--every", "1e-7"], "--every 1e-7 seconds rounds to zero"),
        (["--every", "0"], "--every must be > 0 seconds, got 0"),
        (["--every", "nan"], "--every nan is not a finite number of seconds"),
        (["--every", "soon"], "Invalid value for '--every': 'soon' is not a number of seconds"),
        pytest.param(
            ["--every", HUGE_DIGITS],
            "--every 999999999999... (5000 characters) seconds is longer",
            id="every-5000-digits",
        ),
        pytest.param(
            ["--every", "60", "--start", HUGE_DIGITS + "s"], "start delay", id="start-5000-digits"
        ),
        pytest.param(
            ["--cron", HUGE_DIGITS + " * * * *"],
            "minute 999999999999... (5000 digits) out of",
            id="cron-5000-digits",
        ),
        (["--cron", "* * * * * /bin/true"], "a schedule spec has no command"),
        (["--cron", "*\u00a0* * * *"], "U+00A0 (NO-BREAK SPACE) at position 1"),
    ],
)
def test_schedule_add_bad_input_is_one_line_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """`norc schedule add` with bad input prints one line and exits 2 (no traceback)."""
    db = ["--db", f"sqlite:///{tmp_path / 'cli.db'}"]
    made = norc_cli(*db, "task", "create", "t", "CommandTask", "-p", "command=true", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = norc_cli(*db, "schedule", "add", "t", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("norc: error: "), result.stderr
    assert message in lines[0]
    assert len(lines[0]) < 400


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            HUGE_DIGITS + " * * * *",
            "minute 999999999999... (5000 digits) out of range 0-59",
            id="5000-digits",
        ),
        ("-1 * * * *", "minute -1 out of range 0-59 in '-1 * * * *'"),
        ("* -5 * * *", "hour -5 out of range 0-23 in '* -5 * * *'"),
        ("* * * * * /bin/true", "`norc crontab import` is for crontab files"),
        ("0 2 *\u2003* *", "U+2003 (EM SPACE) at position 5"),
    ],
)
def test_schedule_next_bad_spec_is_one_line_exit_2(tmp_path: Path, spec: str, message: str) -> None:
    """`norc schedule next` with a bad spec prints one line and exits 2."""
    result = norc_cli("schedule", "next", spec, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("norc: error: "), result.stderr
    assert message in lines[0]
