"""CommandTask run as cron runs a command: shell, environment, cwd, stdin and user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import norc
from norc.errors import InvalidTaskParams
from norc.testing import wait_until
from norc_command import CRON_PATH, CommandTask


def _run(app: norc.Norc, task: CommandTask) -> norc.InstanceRecord:
    app.save_task(task)
    instance_id = app.enqueue(task.name)
    with app.executor(concurrency=1):
        wait_until(lambda: app.instance(instance_id).status.is_final, 60)
    return app.instance(instance_id)


def _by_hand(command: str, env: dict[str, str], cwd: str, stdin: str | None = None) -> str:
    """What ``/bin/sh -c command`` prints when run by hand with this environment."""
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _output(app: norc.Norc, record: norc.InstanceRecord) -> str:
    """The command's own output: the instance log without Norc's event lines."""
    return "".join(
        line
        for line in app.logs(record.id).splitlines(keepends=True)
        if "event=" not in line and not line.startswith("{")
    )


def test_existing_tasks_keep_the_executor_environment(
    sqlite_app: norc.Norc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CommandTask saved with only a command sees the executor's variables and cwd."""
    monkeypatch.setenv("NORC_TEST_MARKER", "from-the-executor")
    out = tmp_path / "out"
    record = _run(
        sqlite_app,
        CommandTask(name="old", command=f'echo "$NORC_TEST_MARKER" > {out}; pwd >> {out}'),
    )
    assert record.status is norc.InstanceStatus.SUCCESS
    assert out.read_text().splitlines() == ["from-the-executor", str(Path.cwd())]


def test_default_params_load_for_tasks_saved_before_them(sqlite_app: norc.Norc) -> None:
    """Stored params without shell/env/... load with the old behaviour's defaults."""
    sqlite_app.save_task(CommandTask(name="t", command="true"))
    task = sqlite_app.task("t")
    assert isinstance(task, CommandTask)
    assert (task.shell, task.env, task.inherit_env, task.cwd, task.stdin, task.user) == (
        "/bin/sh",
        {},
        True,
        None,
        None,
        None,
    )


def test_cron_like_environment_matches_sh_by_hand(
    sqlite_app: norc.Norc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inherit_env=False: HOME, LOGNAME, USER, PATH, SHELL and env only; starts in HOME."""
    monkeypatch.setenv("NORC_TEST_MARKER", "must-not-leak")
    me = pwd.getpwuid(os.geteuid())
    command = "env | sort; pwd"
    record = _run(
        sqlite_app,
        CommandTask(name="cron", command=command, inherit_env=False, env={"FOO": "bar baz"}),
    )
    assert record.status is norc.InstanceStatus.SUCCESS
    expected_env = {
        "HOME": me.pw_dir,
        "LOGNAME": me.pw_name,
        "USER": me.pw_name,
        "PATH": CRON_PATH,
        "SHELL": "/bin/sh",
        "FOO": "bar baz",
    }
    assert _output(sqlite_app, record) == _by_hand(command, expected_env, me.pw_dir)
    assert "must-not-leak" not in sqlite_app.logs(record.id)


def test_env_overrides_the_base_and_home_moves_the_start(
    sqlite_app: norc.Norc, tmp_path: Path
) -> None:
    """env's PATH and HOME replace cron's, and the command starts in that HOME."""
    out = tmp_path / "out"
    record = _run(
        sqlite_app,
        CommandTask(
            name="home",
            command=f'echo "$PATH"; pwd > {out}',
            inherit_env=False,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
        ),
    )
    assert record.status is norc.InstanceStatus.SUCCESS
    assert _output(sqlite_app, record) == "/usr/local/bin:/usr/bin:/bin\n"
    assert out.read_text().strip() == str(tmp_path)


def test_stdin_cwd_and_shell(sqlite_app: norc.Norc, tmp_path: Path) -> None:
    """stdin is fed to the command, cwd is where it starts, shell runs it as shell -c."""
    record = _run(
        sqlite_app,
        CommandTask(
            name="all",
            command='cat; pwd; echo "${BASH_VERSION:+bash}"',
            stdin="line one\nline 50%\n",
            cwd=str(tmp_path),
            shell="/bin/bash",
        ),
    )
    assert record.status is norc.InstanceStatus.SUCCESS
    assert _output(sqlite_app, record) == f"line one\nline 50%\n{tmp_path}\nbash\n"


def test_date_substitution_still_works_with_the_new_params(
    sqlite_app: norc.Norc, tmp_path: Path
) -> None:
    """$UTC{} is still replaced when the task is cron-like."""
    record = _run(
        sqlite_app,
        CommandTask(name="d", command="echo y-$UTC{YYYY}", inherit_env=False),
    )
    assert record.started_at is not None
    assert _output(sqlite_app, record).strip() == f"y-{record.started_at.year}"


def test_a_missing_working_directory_fails_clearly(sqlite_app: norc.Norc, tmp_path: Path) -> None:
    """A cwd that does not exist ends FAILURE with the reason, not a traceback."""
    record = _run(sqlite_app, CommandTask(name="nowhere", command="true", cwd=str(tmp_path / "x")))
    assert record.status is norc.InstanceStatus.FAILURE
    assert "cannot start /bin/sh -c" in (record.error or "")
    assert str(tmp_path / "x") in (record.error or "")


def test_an_unknown_user_fails_clearly(sqlite_app: norc.Norc) -> None:
    """user= naming nobody on the executor's host ends FAILURE saying so."""
    record = _run(sqlite_app, CommandTask(name="ghost", command="true", user="no-such-user-xq"))
    assert record.status is norc.InstanceStatus.FAILURE
    assert record.error == "unknown user 'no-such-user-xq' on this host"


def test_invalid_params_are_refused() -> None:
    """Params are validated when the task is built, as nice is."""
    with pytest.raises(InvalidTaskParams, match="absolute path"):
        CommandTask(name="c", command="true", shell="bash")
    with pytest.raises(InvalidTaskParams, match="variable name"):
        CommandTask(name="c", command="true", env={"A=B": "x"})
    with pytest.raises(InvalidTaskParams, match="text"):
        CommandTask(name="c", command="true", env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidTaskParams, match="cwd must not be empty"):
        CommandTask(name="c", command="true", cwd=" ")
    with pytest.raises(InvalidTaskParams, match="not bool"):
        CommandTask.from_params(name="c", params={"command": "true", "inherit_env": "yes"})


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    """A user created for this test (root only), with a supplementary group; removed after."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root: the executor would refuse (tested as root)")
    name = f"norct{uuid.uuid4().hex[:8]}"
    group = f"{name}g"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-m", "-G", group, "-s", "/bin/sh", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)


def test_user_runs_as_that_user_with_its_groups(
    sqlite_app: norc.Norc, throwaway_user: str, tmp_path: Path
) -> None:
    """As root, user= runs the command with the user's uid, primary and extra groups, HOME."""
    entry = pwd.getpwnam(throwaway_user)
    command = "id -u; id -g; id -G | tr ' ' '\\n' | sort -n | tr '\\n' ' '; echo; echo $HOME; pwd"
    record = _run(
        sqlite_app,
        CommandTask(name="as-user", command=command, user=throwaway_user, inherit_env=False),
    )
    assert record.status is norc.InstanceStatus.SUCCESS, record.error
    groups = sorted(os.getgrouplist(throwaway_user, entry.pw_gid))
    assert len(groups) == 2
    assert _output(sqlite_app, record).splitlines() == [
        str(entry.pw_uid),
        str(entry.pw_gid),
        " ".join(map(str, groups)) + " ",
        entry.pw_dir,
        entry.pw_dir,
    ]


_NOT_ROOT_EXECUTOR = """
import os, pwd, sys
import norc
import norc.executor.executor, norc.executor.running  # noqa: F401 - before losing /root
import norc.plugins.dbqueue, norc.plugins.local_logs  # noqa: F401
from norc.testing import wait_until
from norc_command import CommandTask

folder = sys.argv[1]
app = norc.Norc(f"sqlite:///{folder}/norc.db", log_dir=f"{folder}/logs")
app.save_task(CommandTask(name="as-root", command="id -u", user="root"))
instance_id = app.enqueue("as-root")
for top, dirs, files in os.walk(folder):
    for name in dirs + files:
        os.chmod(os.path.join(top, name), 0o777)
nobody = pwd.getpwnam("nobody")
os.setgroups([])
os.setgid(nobody.pw_gid)
os.setuid(nobody.pw_uid)
# Thread isolation: a worker process would need an interpreter nobody may start here.
with app.executor(isolation="thread"):
    wait_until(lambda: app.instance(instance_id).status.is_final, 60)
record = app.instance(instance_id)
print(record.status.name)
print(record.error)
"""


def test_an_executor_that_is_not_root_refuses_another_user(sqlite_app: norc.Norc) -> None:
    """user= on an executor that is neither root nor that user ends FAILURE saying why."""
    if os.geteuid() != 0:
        record = _run(sqlite_app, CommandTask(name="as-root", command="id -u", user="root"))
        me = pwd.getpwuid(os.geteuid()).pw_name
        assert record.status is norc.InstanceStatus.FAILURE
        assert record.error == f"cannot run as user 'root': the executor runs as {me!r}, not root"
        return
    # As root: an executor process that gives up root for nobody before it runs.
    folder = tempfile.mkdtemp(prefix="norc-not-root-")
    try:
        Path(folder).chmod(0o777)
        result = subprocess.run(
            [sys.executable, "-c", _NOT_ROOT_EXECUTOR, folder],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "FAILURE",
            "cannot run as user 'root': the executor runs as 'nobody', not root",
        ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
