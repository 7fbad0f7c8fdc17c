"""Crontab files: parsed as cron reads them, imported as CommandTasks, exported back."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import norc
from norc.crontab import (
    MAILTO_NOTE,
    REBOOT_REASON,
    export_crontab,
    import_crontab,
    is_system_path,
    marker,
    parse_crontab,
    split_percent,
    task_names,
)
from norc.testing import wait_until

# The examples of Debian's crontab(5).
USER_EXAMPLE = """\
# use /bin/bash to run commands, instead of the default /bin/sh
SHELL=/bin/bash
# mail any output to `paul', no matter whose crontab this is
MAILTO=paul
#
# run five minutes after midnight, every day
5 0 * * *       $HOME/bin/daily.job >> $HOME/tmp/out 2>&1
# run at 2:15pm on the first of every month -- output mailed to paul
15 14 1 * *     $HOME/bin/monthly
# run at 10 pm on weekdays, annoy Joe
0 22 * * 1-5    mail -s "It's 10pm" joe%Joe,%%Where are your kids?%
23 0-23/2 * * * echo "run 23 minutes after midn, 2am, 4am ..., everyday"
5 4 * * sun     echo "run at 5 after 4 every sunday"
"""
SYSTEM_EXAMPLE = """\
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
# m h dom mon dow user  command
17 *    * * *   root    cd / && run-parts --report /etc/cron.hourly
25 6    * * *   root    test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )
"""


# ----------------------------------------------------------------------- parsing


def test_the_user_example_of_crontab_5() -> None:
    """Five time fields and a command; SHELL and MAILTO apply to every entry below them."""
    parsed = parse_crontab(USER_EXAMPLE)
    assert parsed.errors == ()
    assert [(e.line, e.spec) for e in parsed.entries] == [
        (7, "5 0 * * *"),
        (9, "15 14 1 * *"),
        (11, "0 22 * * 1-5"),
        (12, "23 0-23/2 * * *"),
        (13, "5 4 * * SUN"),
    ]
    first = parsed.entries[0]
    assert first.command == "$HOME/bin/daily.job >> $HOME/tmp/out 2>&1"
    assert (first.user, first.shell, first.mailto, first.stdin) == (None, "/bin/bash", "paul", None)
    assert first.env == {"MAILTO": "paul"}
    assert MAILTO_NOTE in first.notes
    mail = parsed.entries[2]
    assert mail.command == 'mail -s "It\'s 10pm" joe'
    assert mail.stdin == "Joe,\n\nWhere are your kids?\n"


def test_the_system_example_of_crontab_5() -> None:
    """A system crontab has the user after the time fields; the rest is the command."""
    parsed = parse_crontab(SYSTEM_EXAMPLE, system=True)
    assert parsed.errors == ()
    assert [(e.user, e.spec, e.command) for e in parsed.entries] == [
        ("root", "17 * * * *", "cd / && run-parts --report /etc/cron.hourly"),
        (
            "root",
            "25 6 * * *",
            "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
        ),
    ]
    assert parsed.entries[0].env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin"
    }


def test_the_same_line_in_user_format_keeps_the_user_in_the_command() -> None:
    """Without --system, the word after the times is the command's first word."""
    (entry,) = parse_crontab("17 * * * * root run-parts /etc/cron.hourly\n").entries
    assert (entry.user, entry.command) == (None, "root run-parts /etc/cron.hourly")


def test_system_paths_are_detected() -> None:
    """/etc/crontab and /etc/cron.d/* are system crontabs; anything else is a user's."""
    assert is_system_path("/etc/crontab") and is_system_path("/etc/cron.d/php")
    assert not is_system_path("/var/spool/cron/crontabs/root")
    assert not is_system_path("-") and not is_system_path(None)


def test_settings_apply_to_the_entries_after_them_only() -> None:
    """A variable set below an entry does not reach it; a new value reaches what follows."""
    parsed = parse_crontab("* * * * * one\nA=1\n* * * * * two\nA=2\nB=x\n* * * * * three\n")
    assert [e.env for e in parsed.entries] == [{}, {"A": "1"}, {"A": "2", "B": "x"}]


def test_quoted_values_and_spaces_around_the_equals_sign() -> None:
    """Spaces around '=', quoted values kept as written, unquoted ones trimmed at the end."""
    text = (
        "A = spaced value   \n"
        "B='  single  '\n"
        "C=\"double 'inner'\"\n"
        '"D"=quoted name\n'
        "E=\n"
        "F=''\n"
        "* * * * * cmd\n"
    )
    (entry,) = parse_crontab(text).entries
    assert entry.env == {
        "A": "spaced value",
        "B": "  single  ",
        "C": "double 'inner'",
        "D": "quoted name",
        "E": "",
        "F": "",
    }


def test_a_quoted_value_followed_by_text_is_no_setting() -> None:
    """cron refuses text after a closing quote; the line is reported, not half-taken."""
    parsed = parse_crontab('A="x" y\n* * * * * cmd\n')
    assert [e.line for e in parsed.errors] == [1]
    assert "NAME=value" in parsed.errors[0].reason
    assert parsed.entries[0].env == {}


def test_shell_cron_tz_and_the_variables_cron_sets_itself() -> None:
    """SHELL is the shell, CRON_TZ the zone (neither in env); LOGNAME and USER are ignored."""
    text = (
        "* * * * * before\n"
        "SHELL=/bin/bash\nCRON_TZ=Europe/Berlin\nLOGNAME=mallory\nUSER=mallory\n"
        "* * * * * after\n"
    )
    before, after = parse_crontab(text).entries
    assert (before.shell, before.tz) == ("/bin/sh", None)
    assert (after.shell, after.tz, after.env) == ("/bin/bash", "Europe/Berlin", {})


def test_a_bad_cron_tz_or_shell_fails_the_entries_under_it() -> None:
    """An unknown CRON_TZ or a relative SHELL is reported on each entry it would apply to."""
    parsed = parse_crontab("CRON_TZ=Mars/Base\n* * * * * a\nCRON_TZ=UTC\nSHELL=bash\n* * * * * b\n")
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (2, "CRON_TZ='Mars/Base' (line 1) is not a known timezone"),
        (5, "SHELL='bash' (line 4) is not an absolute path: cron would fail to run it"),
    ]


@pytest.mark.parametrize(
    ("text", "command", "stdin"),
    [
        ("plain", "plain", None),
        ("date +%Y", "date +", "Y\n"),
        (r"date +\%Y-\%m", "date +%Y-%m", None),
        ("mail joe%line one%line two", "mail joe", "line one\nline two\n"),
        ("cat%ends with newline%", "cat", "ends with newline\n"),
        (r"cat%100\% sure%", "cat", "100% sure\n"),
        (r"cat%back\slash", "cat", "back\\slash\n"),
        ("cmd%", "cmd", None),
        (r"echo a\\%b", "echo a\\\\", "b\n"),
        (r"echo \n", "echo \\n", None),
    ],
)
def test_percent_ends_the_command_and_the_rest_is_stdin(
    text: str, command: str, stdin: str | None
) -> None:
    """An unescaped % ends the command; further ones are newlines of stdin; \\% is a %."""
    assert split_percent(text) == (command, stdin)


def test_a_percent_in_a_line_goes_to_stdin() -> None:
    """The % rule applies to the command of a parsed line."""
    (entry,) = parse_crontab("0 9 * * * wc -l%a%b\n").entries
    assert (entry.command, entry.stdin) == ("wc -l", "a\nb\n")


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("@yearly", "@yearly"),
        ("@annually", "@yearly"),
        ("@monthly", "@monthly"),
        ("@weekly", "@weekly"),
        ("@daily", "@daily"),
        ("@midnight", "@daily"),
        ("@hourly", "@hourly"),
    ],
)
def test_the_at_names(name: str, spec: str) -> None:
    """Each @ name cron knows is a schedule spec, in user and system crontabs."""
    (entry,) = parse_crontab(f"{name}   run it\n").entries
    assert (entry.spec, entry.command) == (spec, "run it")
    (entry,) = parse_crontab(f"{name} root run it\n", system=True).entries
    assert (entry.spec, entry.user, entry.command) == (spec, "root", "run it")


def test_reboot_and_unknown_at_names_are_reported() -> None:
    """@reboot is refused with its reason; an unknown @ name is a bad time specifier."""
    parsed = parse_crontab("@reboot /usr/bin/start-it\n@DAILY x\n@fortnightly y\n@daily\n")
    assert [(e.line, e.kind) for e in parsed.errors] == [
        (1, "refused"),
        (2, "unreadable"),
        (3, "unreadable"),
        (4, "unreadable"),
    ]
    assert parsed.errors[0].reason == REBOOT_REASON
    assert "bad time specifier '@DAILY'" in parsed.errors[1].reason
    assert parsed.errors[3].reason == "no command after the time fields"


def test_lines_that_cannot_be_taken_are_reported_with_their_numbers() -> None:
    """Every bad line has its number and reason; the good ones still parse."""
    text = (
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "61 * * * * bad minute\n"
        "* * * *\n"
        "0 0 * * * good one\n"
        "0 0 * * * * six fields\n"
        "0 0 31 2 * impossible date\n"
        "hello world\n"
        "0 0 * * * dos line\r\n"
        "0 0 * * MON-FRI good two\n"
    )
    parsed = parse_crontab(text)
    assert [e.command for e in parsed.entries] == ["good one", "good two"]
    reasons = {e.line: e.reason for e in parsed.errors}
    assert sorted(reasons) == [4, 5, 7, 8, 9, 10]
    assert "minute 61 out of range" in reasons[4]
    assert "expected 5 time fields" in reasons[5]
    assert "sixth time field" in reasons[7]
    assert "hello" in reasons[9] and "minute" in reasons[9]
    assert "carriage return" in reasons[10]


def test_system_lines_need_a_known_user() -> None:
    """A system line without a user, or with one this host lacks, is reported."""
    parsed = parse_crontab("0 0 * * * nobody-such-xq cmd\n@daily\n", system=True)
    assert "bad username 'nobody-such-xq'" in parsed.errors[0].reason
    assert parsed.entries == ()


def test_names_are_deterministic_with_a_suffix_for_repeats() -> None:
    """prefix-slug-hash, the same for the same user and command; repeats get -2, -3."""
    parsed = parse_crontab("0 1 * * * backup --all\n0 2 * * * backup --all\n0 3 * * * other\n")
    names = task_names(parsed.entries, "cr")
    assert names[0].startswith("cr-backup-all-") and len(names[0]) == len("cr-backup-all-") + 8
    assert names[1] == names[0] + "-2"
    changed = parse_crontab("5 5 * * * backup --all%x\n5 6 * * * backup --all\n0 3 * * * other\n")
    assert task_names(changed.entries, "cr") == names
    system = parse_crontab("0 1 * * * root backup --all\n", system=True).entries
    assert task_names(system, "cr")[0] != names[0]


# ------------------------------------------------------------------------ import


def _commands(app: norc.Norc) -> dict[str, tuple[str, str, str]]:
    return {s.task_name: (s.spec, s.timezone, s.queue) for s in app.schedules()}


def test_import_creates_tasks_and_importing_again_changes_nothing(app: norc.Norc) -> None:
    """Each entry becomes a cron-like CommandTask with one schedule; a re-import is a no-op."""
    rows = import_crontab(app, USER_EXAMPLE, tz="Europe/Berlin")
    assert [r.status for r in rows] == ["created"] * 5
    task = app.task(rows[2].name or "")
    assert task.params() == {
        "command": 'mail -s "It\'s 10pm" joe',
        "nice": 0,
        "shell": "/bin/bash",
        "env": {"MAILTO": "paul"},
        "inherit_env": False,
        "cwd": None,
        "stdin": "Joe,\n\nWhere are your kids?\n",
        "user": None,
    }
    assert task.description == marker("crontab")
    before = {s.id: s.revision for s in app.schedules()}
    assert _commands(app)[rows[4].name or ""] == ("5 4 * * SUN", "Europe/Berlin", "default")
    again = import_crontab(app, USER_EXAMPLE, tz="Europe/Berlin")
    assert [r.status for r in again] == ["unchanged"] * 5
    assert [r.name for r in again] == [r.name for r in rows]
    assert {s.id: s.revision for s in app.schedules()} == before


def test_dry_run_writes_nothing(app: norc.Norc) -> None:
    """--dry-run reports what would be created and saves no task or schedule."""
    rows = import_crontab(app, USER_EXAMPLE + "@reboot x\n", dry_run=True)
    assert [r.status for r in rows] == ["created"] * 5 + ["error"]
    assert app.tasks() == [] and app.schedules() == []


def test_replace_updates_what_changed_and_retires_what_is_gone(app: norc.Norc) -> None:
    """A changed spec, zone, variable or stdin updates the task; a removed line is retired."""
    first = "A=1\n0 1 * * * keep\n0 2 * * * change-spec\n0 3 * * * change-stdin%x\n0 4 * * * gone\n"
    rows = {r.command: r for r in import_crontab(app, first, tz="UTC")}
    second = "A=2\n0 1 * * * keep\n30 2 * * * change-spec\n0 3 * * * change-stdin%y\n"
    without = import_crontab(app, second, tz="UTC")
    assert [(r.command, r.status) for r in without] == [
        ("keep", "error"),
        ("change-spec", "error"),
        ("change-stdin", "error"),
    ]
    assert "pass --replace" in (without[0].reason or "")
    assert _commands(app)[rows["gone"].name or ""][0] == "0 4 * * *"  # nothing touched
    replaced = import_crontab(app, second, tz="UTC", replace=True)
    assert [(r.command, r.status) for r in replaced] == [
        ("keep", "updated"),
        ("change-spec", "updated"),
        ("change-stdin", "updated"),
        ("gone", "retired"),
    ]
    assert replaced[3].line is None
    schedules = _commands(app)
    assert rows["gone"].name not in schedules
    assert schedules[rows["change-spec"].name or ""] == ("30 2 * * *", "UTC", "default")
    assert app.task(rows["keep"].name or "").params()["env"] == {"A": "2"}
    assert app.task(rows["change-stdin"].name or "").params()["stdin"] == "y\n"
    assert app.task(rows["gone"].name or "").name == rows["gone"].name  # history kept
    assert [r.status for r in import_crontab(app, second, tz="UTC", replace=True)] == [
        "unchanged"
    ] * 3
    # Back in the file, a retired entry gets a schedule again.
    back = import_crontab(app, first, tz="UTC", replace=True)
    assert [r.status for r in back] == ["updated", "updated", "updated", "created"]


def test_an_unreadable_line_stops_replace_from_retiring(app: norc.Norc) -> None:
    """A line that cannot be read may be a wanted entry: nothing is retired then."""
    import_crontab(app, "0 1 * * * one\n0 2 * * * two\n")
    rows = import_crontab(app, "0 1 * * * one\n0 2 * * two\n", replace=True)
    assert [r.status for r in rows] == ["unchanged", "error"]
    assert "nothing was retired" in rows[1].notes[0]
    assert len(app.schedules()) == 2
    # @reboot is refused, not unreadable: retiring goes on.
    rows = import_crontab(app, "0 1 * * * one\n@reboot two\n", replace=True)
    assert [r.status for r in rows] == ["unchanged", "error", "retired"]


def test_a_prefix_only_retires_its_own(app: norc.Norc) -> None:
    """Entries imported under another prefix are left alone by --replace."""
    import_crontab(app, "0 1 * * * one\n", prefix="web")
    import_crontab(app, "0 1 * * * one\n", prefix="db")
    rows = import_crontab(app, "", prefix="db", replace=True)
    assert [(r.name or "").split("-")[0] for r in rows] == ["db"]
    assert [s.task_name.split("-")[0] for s in app.schedules()] == ["web"]


def test_a_task_of_that_name_not_imported_is_not_overwritten(app: norc.Norc) -> None:
    """A name taken by a task saved otherwise is an error, even with --replace."""
    from norc_command import CommandTask

    (entry,) = parse_crontab("0 1 * * * one\n").entries
    (name,) = task_names([entry], "crontab")
    app.save_task(CommandTask(name=name, command="mine"))
    (row,) = import_crontab(app, "0 1 * * * one\n", replace=True)
    assert row.status == "error" and "not imported from a crontab" in (row.reason or "")
    assert app.task(name).params()["command"] == "mine"


# --------------------------------------------------------------------------- CLI


def norc_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``norc`` script as a user would."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("norc")), *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_cli_dry_run_json_and_exit_codes(sqlite_url: str, tmp_path: Path) -> None:
    """--dry-run --json lists every line with its status; 2 when a line was not taken."""
    good = tmp_path / "good"
    good.write_text("MAILTO=ops\nCRON_TZ=Asia/Tokyo\n0 9 * * MON-FRI report%data\n")
    bad = tmp_path / "bad"
    bad.write_text(good.read_text() + "@reboot start\n99 * * * * nope\n")
    db = ["--db", sqlite_url]
    result = norc_cli(*db, "crontab", "import", str(bad), "--dry-run", "--json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["line"], r["status"]) for r in rows] == [(3, "created"), (4, "error"), (5, "error")]
    first = rows[0]
    assert {k: first[k] for k in ("spec", "tz", "command", "stdin", "env", "user")} == {
        "spec": "0 9 * * MON-FRI",
        "tz": "Asia/Tokyo",
        "command": "report",
        "stdin": "data\n",
        "env": {"MAILTO": "ops"},
        "user": None,
    }
    assert (first["shell"], first["mailto"]) == ("/bin/sh", "ops")
    assert MAILTO_NOTE in first["notes"]
    assert rows[1]["reason"] == REBOOT_REASON
    listed = norc_cli(*db, "task", "list", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) == []  # the dry run wrote nothing

    result = norc_cli(*db, "crontab", "import", str(good), "--prefix", "ops", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "line 3: created ops-report-" in result.stdout
    assert "note: MAILTO" in result.stdout
    result = norc_cli(*db, "crontab", "import", str(good), "--prefix", "ops", cwd=tmp_path)
    assert result.returncode == 0 and "line 3: unchanged" in result.stdout
    result = norc_cli(*db, "crontab", "import", str(bad), "--prefix", "ops", cwd=tmp_path)
    assert result.returncode == 2
    assert "line 4: error: @reboot is not imported" in result.stdout
    assert "line 5: error: minute 99 out of range" in result.stdout


def test_cli_system_detection_and_options(sqlite_url: str, tmp_path: Path) -> None:
    """--system reads the user field; --queue and --tz set the schedules'."""
    path = tmp_path / "sys"
    path.write_text("0 0 * * * root echo hi\n")
    db = ["--db", sqlite_url]
    norc_cli(*db, "queue", "create", "cron", cwd=tmp_path)
    args = ("crontab", "import", str(path), "--system", "--queue", "cron", "--tz", "Asia/Kolkata")
    result = norc_cli(*db, *args, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["user"], row["command"], row["tz"]) == ("root", "echo hi", "Asia/Kolkata")
    with norc.Norc(sqlite_url) as app:
        (schedule,) = app.schedules()
        assert (schedule.queue, schedule.timezone) == ("cron", "Asia/Kolkata")
    missing = norc_cli(*db, "crontab", "import", str(tmp_path / "none"), cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_cli_reads_stdin_and_reports_retired_entries(sqlite_url: str, tmp_path: Path) -> None:
    """FILE '-' is standard input; --replace prints each retired task."""
    argv = [str(Path(sys.executable).with_name("norc")), "--db", sqlite_url, "crontab", "import"]

    def run(text: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, "-", "--tz", "UTC", *args],
            input=text,
            cwd=tmp_path,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )

    first = run("0 1 * * * one\n0 2 * * * two\n")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "2 created"
    second = run("0 1 * * * one\n", "--replace")
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert lines[0].startswith("line 1: unchanged crontab-one-")
    assert lines[1].startswith("gone: retired crontab-two-") and lines[1].endswith(" two")
    assert lines[-1] == "1 unchanged, 1 retired"


# ------------------------------------------------------------------ running them


def _run_imported(app: norc.Norc, name: str) -> norc.InstanceRecord:
    instance_id = app.enqueue(name)
    with app.executor(concurrency=1):
        wait_until(lambda: app.instance(instance_id).status.is_final, 60)
    return app.instance(instance_id)


def _output(app: norc.Norc, record: norc.InstanceRecord) -> str:
    return "".join(
        line for line in app.logs(record.id).splitlines(keepends=True) if "event=" not in line
    )


def test_an_imported_entry_runs_as_sh_runs_its_command_by_hand(
    sqlite_app: norc.Norc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output, stdin and environment match /bin/sh -c with cron's environment, in HOME."""
    monkeypatch.setenv("NORC_TEST_MARKER", "executor-only")
    home = tmp_path / "home"
    home.mkdir()
    text = (
        f"HOME={home}\n"
        "GREETING = 'hello  there'\n"
        'PATH="/usr/local/bin:/usr/bin:/bin"\n'
        "0 4 * * * env | sort; pwd; echo 100\\%; tr a-z A-Z%first line%second\n"
    )
    (row,) = import_crontab(sqlite_app, text)
    record = _run_imported(sqlite_app, row.name or "")
    assert record.status is norc.InstanceStatus.SUCCESS, record.error
    me = pwd.getpwuid(os.geteuid())
    by_hand = subprocess.run(
        ["/bin/sh", "-c", "env | sort; pwd; echo 100%; tr a-z A-Z"],
        env={
            "HOME": str(home),
            "LOGNAME": me.pw_name,
            "USER": me.pw_name,
            "SHELL": "/bin/sh",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "GREETING": "hello  there",
        },
        cwd=home,
        input="first line\nsecond\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert _output(sqlite_app, record) == by_hand
    assert "FIRST LINE\nSECOND\n" in by_hand and "executor-only" not in by_hand


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    """A user made for this test (root only), removed after."""
    if os.geteuid() != 0:
        pytest.skip("running a system crontab line as its user needs a root executor")
    name = f"norcc{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)


def test_a_system_entry_runs_as_its_user(sqlite_app: norc.Norc, throwaway_user: str) -> None:
    """The user field of a system crontab is the user the command runs as, in its home."""
    entry = pwd.getpwnam(throwaway_user)
    text = f"0 0 * * * {throwaway_user} id -un; echo $HOME $LOGNAME; pwd\n"
    (row,) = import_crontab(sqlite_app, text, system=True)
    assert row.status == "created", row.reason
    record = _run_imported(sqlite_app, row.name or "")
    assert record.status is norc.InstanceStatus.SUCCESS, record.error
    assert _output(sqlite_app, record).splitlines() == [
        throwaway_user,
        f"{entry.pw_dir} {throwaway_user}",
        entry.pw_dir,
    ]


# ------------------------------------------------------------------------ export


def test_export_writes_what_cron_can_express_and_reimports_unchanged(app: norc.Norc) -> None:
    """An export of imported entries imports back to the same tasks; the rest are comments."""
    from norc_command import CommandTask

    text = (
        "SHELL=/bin/bash\nCRON_TZ=Europe/Berlin\nMAILTO=ops\n"
        "0 1 * * * backup 50\\% --fast%stdin one%two\n"
        "A=' x y'\n@daily cleanup\n"
    )
    rows = import_crontab(app, text, prefix="crontab")
    assert [r.status for r in rows] == ["created", "created"]
    app.save_task(CommandTask(name="crontab-plain", command="echo $UTC{YYYY}"))
    app.add_schedule("crontab-plain", cron="0 5 * * *")
    app.save_task(CommandTask(name="crontab-every", command="true", inherit_env=False))
    app.add_schedule("crontab-every", every=60)
    exported = export_crontab(app, prefix="crontab")
    lines = exported.splitlines()
    assert "0 1 * * * backup 50\\% --fast%stdin one%two" in lines
    assert "CRON_TZ=Europe/Berlin" in lines and "A=' x y'" in lines
    assert any(
        line.startswith("# not exported:") and "crontab-every" in line and "every-N" in line
        for line in lines
    )
    assert any(line.startswith("# not exported:") and "crontab-plain" in line for line in lines)
    again = import_crontab(app, exported, prefix="crontab", tz="UTC")
    assert [r.status for r in again] == ["unchanged", "unchanged"]


def test_cli_export(sqlite_url: str, tmp_path: Path) -> None:
    """`norc crontab export --prefix P` prints the crontab of that prefix's schedules."""
    with norc.Norc(sqlite_url) as app:
        import_crontab(app, "0 1 * * * one\n", prefix="a", tz="UTC")
        import_crontab(app, "0 2 * * * two\n", prefix="b", tz="UTC")
    result = norc_cli("--db", sqlite_url, "crontab", "export", "--prefix", "a", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["CRON_TZ=UTC", "0 1 * * * one"]


def test_export_of_system_entries_has_the_user_field(app: norc.Norc) -> None:
    """Entries with a user export as a system crontab; one without a user is a comment."""
    import_crontab(app, SYSTEM_EXAMPLE, system=True, prefix="sys", tz="UTC")
    import_crontab(app, "0 0 * * * no-user\n", prefix="sys-plain", tz="UTC")
    exported = export_crontab(app)
    lines = exported.splitlines()
    assert "PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin" in lines
    assert "17 * * * * root cd / && run-parts --report /etc/cron.hourly" in lines
    assert any(line.startswith("# not exported:") and "no user" in line for line in lines)
    again = import_crontab(app, exported, system=True, prefix="sys", tz="UTC")
    assert [r.status for r in again] == ["unchanged", "unchanged"]
    only_sys = export_crontab(app, prefix="sys")
    assert "no-user" not in only_sys and "run-parts" in only_sys
    assert "no-user" in export_crontab(app, prefix="sys-plain")


def test_a_paused_schedule_stays_paused_on_reimport(app: norc.Norc) -> None:
    """Pausing is not in the crontab: a re-import, even with --replace, leaves it paused."""
    (row,) = import_crontab(app, "0 1 * * * one\n", tz="UTC")
    (schedule,) = app.schedules()
    app.pause_schedule(schedule.id)
    assert [r.status for r in import_crontab(app, "0 1 * * * one\n", tz="UTC")] == ["unchanged"]
    rows = import_crontab(app, "0 2 * * * one\n", tz="UTC", replace=True)
    assert [(r.name, r.status) for r in rows] == [(row.name, "updated")]
    (after,) = app.schedules()
    assert (after.id, after.spec, after.paused) == (schedule.id, "0 2 * * *", True)


# ------------------------------------------------------------------------ MAILTO


def _mailto_rules(app: norc.Norc) -> dict[str, tuple[str, ...]]:
    return {r.name: (r.target, r.task_glob or "", ",".join(sorted(r.events))) for r in app.alerts()}


def test_mailto_becomes_an_email_alert_per_task_idempotently(app: norc.Norc) -> None:
    """Each entry under a non-empty MAILTO gets an email alert (failure, output); a bare
    user name is mailed at localhost; MAILTO="" means none; importing again changes
    nothing; --replace updates a changed MAILTO and removes the alerts of entries gone."""
    text = (
        "MAILTO=ops@example.com,root\n"
        "0 1 * * * backup\n"
        'MAILTO=""\n'
        "0 2 * * * quiet\n"
        "MAILTO=dev@example.com\n"
        "0 3 * * * report\n"
    )
    rows = {r.command: r for r in import_crontab(app, text, tz="UTC")}
    backup, quiet, report = (rows[c].name for c in ("backup", "quiet", "report"))
    assert _mailto_rules(app) == {
        f"{backup}.mailto": ("ops@example.com,root@localhost", backup, "failure,output"),
        f"{report}.mailto": ("dev@example.com", report, "failure,output"),
    }
    before = [(r.name, r.created_at) for r in app.alerts()]
    assert {r.status for r in import_crontab(app, text, tz="UTC")} == {"unchanged"}
    assert [(r.name, r.created_at) for r in app.alerts()] == before
    changed = "MAILTO=team@example.com\n0 1 * * * backup\n0 2 * * * quiet\n"
    import_crontab(app, changed, tz="UTC", replace=True)
    assert _mailto_rules(app) == {
        f"{backup}.mailto": ("team@example.com", backup, "failure,output"),
        f"{quiet}.mailto": ("team@example.com", quiet, "failure,output"),
    }
    import_crontab(app, "0 1 * * * backup\n", tz="UTC", replace=True)
    assert _mailto_rules(app) == {}


def test_an_imported_entry_mails_its_failure_and_its_output_to_mailto(
    sqlite_app: norc.Norc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run by a real executor, a failing entry is mailed with its output, a succeeding
    entry that printed is mailed, and one that printed nothing is not."""
    from norc.alerts.delivery import deliver_due
    from tests.alert_servers import Mailbox

    app = sqlite_app
    app.alert_sender.stop()  # this test delivers by hand
    box = Mailbox().start()
    monkeypatch.setenv("NORC_SMTP_URL", box.url)
    try:
        text = (
            "MAILTO=ops@example.com\n"
            "0 1 * * * echo disk is full; exit 3\n"
            "0 2 * * * echo all good\n"
            "0 3 * * * true\n"
        )
        names = {r.command: r.name for r in import_crontab(app, text, tz="UTC")}
        ids = [app.enqueue(name) for name in names.values()]
        with app.executor():
            wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)))
        wait_until(lambda: len(app.alert_history()) == 3)
        deliver_due(app)
        wait_until(lambda: len(box.messages) == 2)
        # A long subject is folded, and unfolding may leave the fold's space in front.
        by_subject = {m["Subject"].strip(): m for m in box.messages}
        failed = next(s for s in by_subject if s.startswith("[norc] failure"))
        printed = next(s for s in by_subject if s.startswith("[norc] output"))
        assert names["echo disk is full; exit 3"] in failed
        assert names["echo all good"] in printed
        assert "disk is full" in str(by_subject[failed].get_content())
        assert "all good" in str(by_subject[printed].get_content())
        assert {r.status for r in app.alert_history()} == {"sent", "skipped"}
    finally:
        box.stop()
