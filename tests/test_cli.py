"""The norc command line: reports, errors as one line with exit code 2, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import norc
from tests.tasks import Outcome


def norc_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``norc`` script as a user would."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("norc")), *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def test_demo_runs_everything_to_success(tmp_path: Path) -> None:
    """`norc demo` on the embedded default succeeds and shows the table and log paths."""
    env = {"NORC_DATABASE_URL": "", "NORC_LOG_DIR": ""}
    result = norc_cli("demo", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "norc.db").exists()
    assert result.stdout.count("SUCCESS") == 3
    assert "demo-echo" in result.stdout and "demo-primes" in result.stdout
    handle = norc.Norc(f"sqlite:///{tmp_path / 'norc.db'}")
    installation = handle.log_keys.installation  # every log key starts with it
    handle.close()
    assert str(tmp_path / "norc-logs" / installation / "tasks" / "CommandTask") in result.stdout


def test_report_json_matches_the_database(app: norc.Norc, db_url: str, tmp_path: Path) -> None:
    """`report instances --json` prints the same rows the API returns, filtered by status."""
    app.save_task(Outcome(name="good"))
    app.save_task(Outcome(name="bad", result=False))
    ids = [app.enqueue("good"), app.enqueue("bad")]
    with app.executor():
        from norc.testing import wait_until

        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)))
    result = norc_cli(
        "--db",
        db_url,
        "report",
        "instances",
        "--status",
        "failed",
        "--since",
        "10m",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == [ids[1]]
    assert rows[0] == app.instance(ids[1]).to_json()
    table = norc_cli("--db", db_url, "report", "instances", cwd=tmp_path)
    assert "SUCCESS" in table.stdout and "FAILURE" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--db", "postgresql://u:pw@127.0.0.1:1/x", "report", "instances"],
            "cannot reach database",
        ),
        (["report", "instances", "--status", "sideways"], "unknown status or group 'sideways'"),
        (["report", "instances", "--since", "yesterdayish"], "yesterdayish"),
        (["enqueue", "ghost"], "unknown task 'ghost'"),
        (["enqueue", "x", "-q", "nope"], "unknown"),
        (["task", "create", "t", "NoSuchType"], "unknown task type 'NoSuchType'"),
        (["task", "create", "t", "CommandTask", "-p", "nice=99", "-p", "command=true"], "nice"),
        (["queue", "create", "q", "-t", "carrier-pigeon"], "unknown queue type"),
        (["logs", "instance", "#999"], "unknown instance 999"),
        (["logs", "instance", "../../etc/passwd"], "is not an instance id"),
        (["schedule", "next", "61 * * * *"], "minute 61 out of range 0-59 in '61 * * * *'"),
        (["schedule", "next", "@daily", "--tz", "Mars/Base"], "Mars/Base"),
        (["control", "executor", "5", "--stop"], "unknown executor 5"),
        (["control", "executor", "5"], "choose exactly one"),
        (["job", "create", "j", "-n", "a:b"], "unknown node 'b'"),
        (["--db", "mysql+nodriver://x/y", "report", "tasks"], "cannot use database URL"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Every error Norc can name prints one line, no traceback, and exits 2."""
    result = norc_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("norc: error: "), result.stderr
    assert message in lines[0]


def test_task_create_enqueue_and_logs(tmp_path: Path) -> None:
    """A CommandTask made, queued and run from the CLI; its log read back by '#id'."""
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    created = norc_cli(
        "--db",
        db,
        "task",
        "create",
        "hello",
        "CommandTask",
        "-p",
        "command=echo hi there",
        "--timeout",
        "10",
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    queued = norc_cli("--db", db, "enqueue", "hello", cwd=tmp_path)
    [instance_id] = queued.stdout.split()
    app = norc.Norc(db, log_dir=tmp_path / "norc-logs")
    with app.executor():
        from norc.testing import wait_until

        wait_until(lambda: app.instance(int(instance_id)).status.is_final)
    logs = norc_cli("--db", db, "logs", "instance", f"#{instance_id}", cwd=tmp_path)
    assert "hi there" in logs.stdout


def test_plugins_lists_distributions(tmp_path: Path) -> None:
    """`norc plugins` shows each plugin with its distribution, version and what it provides."""
    result = norc_cli("plugins", "--json", cwd=tmp_path)
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["command"]["distribution"] == "norc-command"
    assert rows["command"]["provides"] == "task CommandTask"
    assert rows["dbqueue"]["version"] == norc_version()


def norc_version() -> str:
    from importlib.metadata import version

    return version("norc")


def test_schedule_commands(tmp_path: Path) -> None:
    """schedule next/add/list/pause/resume/delete work from the shell."""
    db = ["--db", f"sqlite:///{tmp_path / 's.db'}"]
    nxt = norc_cli(
        "schedule",
        "next",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-03-28T12:00",
        "-n",
        "2",
        cwd=tmp_path,
    )
    assert nxt.stdout.split() == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert (
        norc_cli(
            *db, "task", "create", "t", "CommandTask", "-p", "command=true", cwd=tmp_path
        ).returncode
        == 0
    )
    added = norc_cli(*db, "schedule", "add", "t", "--cron", "daily", cwd=tmp_path)
    assert added.returncode == 0 and "(DAILY)" in added.stdout
    assert norc_cli(*db, "schedule", "pause", "1", cwd=tmp_path).returncode == 0
    listed = json.loads(norc_cli(*db, "schedule", "list", "--json", cwd=tmp_path).stdout)
    assert listed[0]["state"] == "paused" and listed[0]["when"] == "DAILY"
    assert norc_cli(*db, "schedule", "resume", "1", cwd=tmp_path).returncode == 0
    assert norc_cli(*db, "schedule", "delete", "1", cwd=tmp_path).returncode == 0
    assert json.loads(norc_cli(*db, "schedule", "list", "--json", cwd=tmp_path).stdout) == []


def test_job_commands(tmp_path: Path) -> None:
    """job create builds a graph from the shell; job show prints it in dependency order."""
    db = ["--db", f"sqlite:///{tmp_path / 'j.db'}"]
    for name in ("a", "b"):
        norc_cli(*db, "task", "create", name, "CommandTask", "-p", "command=true", cwd=tmp_path)
    made = norc_cli(
        *db, "job", "create", "etl", "-n", "b", "-n", "final=a:b", "-n", "a", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    rows = json.loads(norc_cli(*db, "job", "show", "etl", "--json", cwd=tmp_path).stdout)
    order = [r["node"] for r in rows]
    assert order.index("b") < order.index("final")
    assert next(r for r in rows if r["node"] == "final") == {
        "node": "final",
        "task": "a",
        "after": "b",
        "queue": None,
    }
