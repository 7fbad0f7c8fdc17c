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
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime

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


@attrs.define(kw_only=True)
class CommandTask(Task):
    """A shell command, run with ``/bin/sh -c`` in the instance's process group."""

    type_name = "CommandTask"

    command: str = attrs.field(validator=_check_command)
    nice: int = attrs.field(default=0, validator=_check_nice)

    def run(self, ctx: RunContext) -> bool:
        """Run the command; its exit status decides the outcome."""
        when = ctx.fire_time or datetime.now(UTC)
        command = substitute_dates(self.command, when)
        argv = ["/bin/sh", "-c", command]
        if self.nice:
            argv = ["nice", "-n", str(self.nice), *argv]
        ctx.log.info("running command", command=command, nice=self.nice or None)
        # The log file takes the command's output directly: no pipe to fill, no size
        # limit, binary output kept byte for byte.
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=ctx.log_file,
            stderr=ctx.log_file,
            check=False,
        )
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


__all__ = ["CommandTask", "substitute_dates"]
