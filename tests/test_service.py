"""`norc service unit` prints systemd units that run this installation's daemons as a
service manager expects: notify, a graceful SIGTERM with a matching stop timeout,
restart on failure, the database URL from an environment file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from norc.service import STOP_MARGIN, render_unit, systemd_quote, unit_keys

NORC = str(Path(sys.executable).with_name("norc"))
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def unit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `norc service unit ARGS` as a user would."""
    return subprocess.run(
        [NORC, "service", "unit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def verify(text: str, tmp_path: Path, name: str = "norc-test.service") -> None:
    """systemd-analyze verify accepts the unit without a word (it only warns, exit code
    0, about some bad values, so its stderr must be empty too)."""
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed here")
    path = tmp_path / name
    path.write_text(text)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_executor_unit_runs_this_norc_with_the_options_given(tmp_path: Path) -> None:
    """The executor's unit: Type=notify, ExecStart with this interpreter's norc and the
    options given, SIGTERM with TimeoutStopSec = --stop-timeout + the margin, restart on
    failure, the environment file; systemd-analyze verify accepts it."""
    result = unit("executor", "-q", "reports", "-c", "4", "--stop-timeout", "60")
    assert result.returncode == 0, result.stderr
    service = unit_keys(result.stdout)["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["ExecStart"] == (
        f"{NORC} executor --queue reports --concurrency 4 --stop-timeout 60"
    )
    assert Path(service["ExecStart"].split()[0]).is_absolute()
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # the signal reaches the daemon, not its tasks
    assert service["TimeoutStopSec"] == str(int(60 + STOP_MARGIN))
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "-/etc/norc/norc.env"
    assert service["WatchdogSec"] == "120"
    assert unit_keys(result.stdout)["Install"]["WantedBy"] == "multi-user.target"
    verify(result.stdout, tmp_path)


def test_default_stop_timeout_is_in_the_unit(tmp_path: Path) -> None:
    """Without --stop-timeout the unit still says it (30 s), so TimeoutStopSec follows it;
    the unit options choose the user, the environment file and the watchdog."""
    result = unit(
        "scheduler",
        "--run-as",
        "root",
        "--environment-file",
        "/srv/norc/env",
        "--watchdog",
        "0",
    )
    assert result.returncode == 0, result.stderr
    service = unit_keys(result.stdout)["Service"]
    assert service["ExecStart"] == f"{NORC} scheduler --stop-timeout 30"
    assert service["TimeoutStopSec"] == str(int(30 + STOP_MARGIN))
    assert service["User"] == "root" and service["EnvironmentFile"] == "-/srv/norc/env"
    assert "WatchdogSec" not in service
    verify(result.stdout, tmp_path)


def test_no_stop_bound_is_infinity(tmp_path: Path) -> None:
    """--stop-timeout inf: the daemon waits for ever, and so does systemd."""
    result = unit("executor", "--stop-timeout", "inf")
    assert result.returncode == 0, result.stderr
    service = unit_keys(result.stdout)["Service"]
    assert service["TimeoutStopSec"] == "infinity"
    assert service["ExecStart"].endswith("--stop-timeout inf")
    verify(result.stdout, tmp_path)


def test_web_unit_keeps_secrets_off_the_command_line(tmp_path: Path) -> None:
    """The web unit is Type=simple (uvicorn does not notify) and takes its token from
    the environment file: a token in this shell's environment never reaches ExecStart."""
    result = unit(
        "web", "--host", "0.0.0.0", "--port", "8080", "--read-only", env={"NORC_WEB_TOKEN": "s3"}
    )
    assert result.returncode == 0, result.stderr
    service = unit_keys(result.stdout)["Service"]
    assert service["Type"] == "simple" and "NotifyAccess" not in service
    assert service["ExecStart"] == f"{NORC} web --host 0.0.0.0 --port 8080 --read-only"
    assert "s3" not in result.stdout
    assert "TimeoutStopSec" not in service and "WatchdogSec" not in service
    verify(result.stdout, tmp_path)


def test_awkward_arguments_are_quoted_as_systemd_reads_them(tmp_path: Path) -> None:
    """Blanks, quotes, '%' (a specifier), '$' (a variable) and ';' (a command separator)
    in an option reach the daemon as typed: quoted and escaped for systemd."""
    assert systemd_quote("plain-queue_1") == "plain-queue_1"
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote('50%$HOME;"x"\\') == '"50%%$$HOME;\\"x\\"\\\\"'
    assert systemd_quote("") == '""'
    result = unit("executor", "-q", 'we ird%$;"q')
    assert result.returncode == 0, result.stderr
    assert '--queue "we ird%%$$;\\"q"' in unit_keys(result.stdout)["Service"]["ExecStart"]
    verify(result.stdout, tmp_path)


def test_render_unit_takes_an_executable() -> None:
    """render_unit, the API under the command, runs the executable it is given."""
    text = render_unit("executor", ["--queue", "q"], stop_timeout=5, executable="/opt/n/norc")
    assert unit_keys(text)["Service"]["ExecStart"] == "/opt/n/norc executor --queue q"
    assert unit_keys(text)["Service"]["TimeoutStopSec"] == str(int(5 + STOP_MARGIN))


@pytest.mark.parametrize(
    "args",
    [
        ("nope",),
        ("executor", "--stop-timeout", "0"),
        ("executor", "--stop-timeout", "nan"),
        ("executor", "-c", "0"),
        ("web", "--port", "70000"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...]) -> None:
    """Unknown kinds and bad options: one line on stderr, exit code 2, no unit."""
    result = unit(*args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
