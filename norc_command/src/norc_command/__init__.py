"""norc-command: run shell commands as Norc tasks.

``CommandTask(name="backup", command="pg_dump mydb > /backups/$UTC{YYYY-MM-DD}.sql")``
runs the command with ``/bin/sh -c`` after substituting dates, exactly like the seed:

- ``$UTC{...}`` and ``$LOCAL{...}`` are replaced by the instance's start time (its
  schedule's fire time when it has one), in UTC or in the executor host's local time;
- inside the braces ``YYYY`` is the year, ``YY`` its last two digits, ``MM`` the month,
  ``DD`` the day, ``hh`` the hour (00-23), ``mm`` the minute and ``ss`` the second;
  anything else is copied as-is. (The seed's own code swapped ``MM`` and ``mm``; this
  is the meaning its documentation gave.)

Exit status 0 is SUCCESS, anything else FAILURE. 126 and 127 ("cannot execute",
"not found") also write a clear "invalid command" line to the instance log. Output goes
to the instance's log. ``nice`` (0-19) lowers the command's CPU priority.

Running a command as cron does (what ``norc crontab import`` saves):

- ``shell`` (default ``/bin/sh``) runs it as ``shell -c command``;
- ``env`` (a dict) is merged over the environment the command starts from. With
  ``inherit_env=False`` that is cron's minimal one: ``HOME``, ``LOGNAME`` and ``USER``
  of the user it runs as, ``PATH=/usr/bin:/bin`` and ``SHELL`` (the shell); with
  ``inherit_env=True`` (the default, so tasks saved before these params existed keep
  their behaviour) it is the executor's own environment;
- ``cwd``: the working directory. By default, a cron-like task (``inherit_env=False``)
  or one with a ``user`` starts in its ``HOME`` (from ``env``, else the user's home), as
  cron does; any other starts in the executor's working directory, as before;
- ``stdin``: text fed to the command's standard input (None: ``/dev/null``);
- ``user``: run as this user, with its primary and supplementary groups. That needs an
  executor running as root (or as that very user); otherwise the instance ends FAILURE
  saying why. ``HOME``, ``LOGNAME`` and ``USER`` are that user's (before ``env``).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from norc import RunContext, Task, hookimpl
from norc.errors import InvalidTaskParams
from norc.registry import PluginRegistry

_DATE_TOKENS = {
    "YYYY": "%Y",
    "YY": "%y",
    "MM": "%m",
    "DD": "%d",
    "hh": "%H",
    "mm": "%M",
    "ss": "%S",
}
_TOKEN = re.compile("|".join(sorted(_DATE_TOKENS, key=len, reverse=True)))
_MACRO = re.compile(r"\$(UTC|LOCAL)\{([^}]*)\}")

INVALID_COMMAND_CODES = {126: "cannot execute", 127: "command not found"}


def substitute_dates(command: str, when: datetime) -> str:
    """Replace every ``$UTC{...}`` and ``$LOCAL{...}`` in ``command`` with ``when`` formatted."""

    def render(match: re.Match[str]) -> str:
        moment = when.astimezone(UTC) if match.group(1) == "UTC" else when.astimezone()
        return _TOKEN.sub(lambda t: moment.strftime(_DATE_TOKENS[t.group(0)]), match.group(2))

    return _MACRO.sub(render, command)


def _check_nice(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 19:
        raise InvalidTaskParams("CommandTask", f"nice must be between 0 and 19, got {value}")


def _check_command(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise InvalidTaskParams("CommandTask", "command must not be empty")


def _check_shell(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or "\0" in value or not Path(value).is_absolute():
        raise InvalidTaskParams("CommandTask", f"shell must be an absolute path, got {value!r}")


_ENV_NAME = re.compile(r"[^=\0]+")


def _check_env(
    instance: object, attribute: attrs.Attribute[dict[str, str]], value: dict[str, str]
) -> None:
    if not isinstance(value, dict):
        raise InvalidTaskParams("CommandTask", f"env must be a dict, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise InvalidTaskParams(
                "CommandTask", f"env: {key!r} is not a variable name (empty, '=' or NUL)"
            )
        if not isinstance(item, str) or "\0" in item:
            raise InvalidTaskParams("CommandTask", f"env: {key} must be text without NUL")


def _check_optional_text(
    instance: object, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is None:
        return
    if not isinstance(value, str) or "\0" in value:
        raise InvalidTaskParams(
            "CommandTask", f"{attribute.name} must be text without NUL, got {value!r}"
        )
    if attribute.name in ("cwd", "user") and not value.strip():
        raise InvalidTaskParams("CommandTask", f"{attribute.name} must not be empty")


#: cron's PATH when the crontab sets none (_PATH_DEFPATH).
CRON_PATH = "/usr/bin:/bin"


class _CannotRun(Exception):
    """The command cannot be started as asked (a user that cannot be switched to...)."""


@attrs.frozen
class _Account:
    name: str
    home: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def _account(user: str | None) -> _Account:
    """The user the command runs as: ``user``, or the executor's effective user."""
    try:
        entry = pwd.getpwnam(user) if user is not None else pwd.getpwuid(os.geteuid())
    except KeyError:
        if user is not None:
            raise _CannotRun(f"unknown user {user!r} on this host") from None
        # An executor whose uid has no passwd entry (a bare container).
        name = os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.geteuid())
        home = os.environ.get("HOME") or "/"
        return _Account(name, home, os.geteuid(), os.getegid(), ())
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)) if user is not None else ()
    return _Account(entry.pw_name, entry.pw_dir, entry.pw_uid, entry.pw_gid, groups)


@attrs.define(kw_only=True)
class CommandTask(Task):
    """A shell command, run with ``shell -c`` in the instance's process group."""

    type_name = "CommandTask"

    command: str = attrs.field(validator=_check_command)
    nice: int = attrs.field(default=0, validator=_check_nice)
    shell: str = attrs.field(default="/bin/sh", validator=_check_shell)
    env: dict[str, str] = attrs.field(factory=dict, validator=_check_env)
    inherit_env: bool = True
    cwd: str | None = attrs.field(default=None, validator=_check_optional_text)
    stdin: str | None = attrs.field(default=None, validator=_check_optional_text)
    user: str | None = attrs.field(default=None, validator=_check_optional_text)

    def environment(self, account: _Account | None = None) -> dict[str, str]:
        """The environment the command gets (on this host, as the user it runs as)."""
        account = account or _account(self.user)
        base: dict[str, str] = dict(os.environ) if self.inherit_env else {"PATH": CRON_PATH}
        if not self.inherit_env or self.user is not None:
            base.update(HOME=account.home, LOGNAME=account.name, USER=account.name)
        if not self.inherit_env:
            base["SHELL"] = self.shell
        return {**base, **self.env}

    def working_directory(self, environment: Mapping[str, str]) -> str | None:
        """Where the command starts: ``cwd``, else HOME for cron-like tasks, else None."""
        if self.cwd is not None:
            return self.cwd
        if not self.inherit_env or self.user is not None:
            return environment.get("HOME") or "/"
        return None

    def _switch(self, account: _Account) -> dict[str, Any]:
        """subprocess arguments that make the command run as ``user``."""
        if self.user is None or account.uid == os.geteuid():
            return {}
        if os.geteuid() != 0:
            me = _account(None).name
            raise _CannotRun(
                f"cannot run as user {self.user!r}: the executor runs as {me!r}, not root"
            )
        return {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}

    def run(self, ctx: RunContext) -> bool:
        """Run the command; its exit status decides the outcome."""
        when = ctx.fire_time or datetime.now(UTC)
        command = substitute_dates(self.command, when)
        argv = [self.shell, "-c", command]
        if self.nice:
            argv = [shutil.which("nice") or "nice", "-n", str(self.nice), *argv]
        try:
            account = _account(self.user)
            switch = self._switch(account)
        except _CannotRun as exc:
            ctx.error = str(exc)
            ctx.log.error("cannot run command", reason=str(exc), command=command)
            return False
        environment = self.environment(account)
        cwd = self.working_directory(environment)
        ctx.log.info(
            "running command",
            command=command,
            nice=self.nice or None,
            shell=self.shell if self.shell != "/bin/sh" else None,
            user=self.user,
            cwd=cwd,
        )
        stdin: dict[str, Any] = (
            {"stdin": subprocess.DEVNULL}
            if self.stdin is None
            else {"input": self.stdin.encode("utf-8")}
        )
        # The log file takes the command's output directly: no pipe to fill, no size
        # limit, binary output kept byte for byte.
        try:
            proc = subprocess.run(
                argv,
                stdout=ctx.log_file,
                stderr=ctx.log_file,
                env=environment,
                cwd=cwd,
                check=False,
                **stdin,
                **switch,
            )
        except OSError as exc:
            # A missing shell or working directory, a user switch the kernel refused.
            reason = f"cannot start {self.shell} -c: {exc.strerror or exc}"
            if exc.filename is not None:
                reason += f": {exc.filename}"
            ctx.error = reason
            ctx.log.error("cannot run command", reason=reason, command=command)
            return False
        ctx.exit_code = proc.returncode
        if proc.returncode in INVALID_COMMAND_CODES:
            ctx.error = (
                f"invalid command (exit {proc.returncode}:"
                f" {INVALID_COMMAND_CODES[proc.returncode]}): {command}"
            )
            ctx.log.error("invalid command", exit_code=proc.returncode, command=command)
            return False
        if proc.returncode != 0:
            ctx.error = f"command exited with status {proc.returncode}"
            return False
        return True


@hookimpl
def norc_register_types(registry: PluginRegistry) -> None:
    """Provide the ``CommandTask`` task type."""
    registry.add_task_type(CommandTask)


__all__ = ["CRON_PATH", "CommandTask", "substitute_dates"]
