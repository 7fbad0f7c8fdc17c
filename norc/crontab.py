"""Crontab files in and out: parse them as cron does, import them as CommandTasks.

:func:`parse_crontab` reads a user crontab (five time fields, then the command) or a
system crontab (``/etc/crontab``, ``/etc/cron.d/*``: a user name after the time fields)
the way Debian's cron and cronie read them (crontab(5)): comments and blank lines,
environment settings that apply to the entries after them, ``@`` names, and the ``%``
rule of the command. Every line it cannot take is kept as a :class:`CrontabError` with
its line number and reason; the others still parse.

:func:`import_crontab` saves each entry as a ``CommandTask`` (the norc-command plugin's
type, found through the handle's registry) with one cron schedule, through the public
API only (``save_task``, ``add_schedule``, ``update_schedule``, ``delete_schedule``).
Task names are derived from the entry, so importing the same file again changes
nothing; ``replace=True`` updates what changed and retires (deletes the schedules of)
the entries of the prefix that are gone. :func:`export_crontab` writes the command
schedules back as a crontab. See ``docs/crontab.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from norc.errors import InvalidSpec, NorcError, UnknownTask
from norc.schedules.cron import parse_cron, resolve_timezone

if TYPE_CHECKING:
    from norc.app import Norc
    from norc.records import ScheduleRecord, TaskRecord

__all__ = [
    "MAILTO_NOTE",
    "Crontab",
    "CrontabEntry",
    "CrontabError",
    "ImportRow",
    "export_crontab",
    "import_crontab",
    "is_system_path",
    "local_timezone",
    "marker",
    "parse_crontab",
    "split_percent",
    "task_names",
]

#: The @ names cron knows, with the spec each is stored as (``@reboot`` is refused).
SPECIAL_NAMES: Final = {
    "yearly": "@yearly",
    "annually": "@yearly",
    "monthly": "@monthly",
    "weekly": "@weekly",
    "daily": "@daily",
    "midnight": "@daily",
    "hourly": "@hourly",
}
REBOOT_REASON: Final = (
    "@reboot is not imported: Norc has no 'when a host starts' trigger"
    " (start the command from the host's init system, e.g. a systemd unit, instead)"
)
MAILTO_NOTE: Final = (
    "MAILTO becomes an email alert on this task (see docs/crontab.md): a mail when a run"
    " fails, or succeeds having printed something; MAILTO stays in the command's environment"
)
SUBSTITUTION_NOTE: Final = (
    "the command contains $UTC{...} or $LOCAL{...}, which CommandTask replaces by the"
    " fire time (cron would pass it to the shell)"
)
#: Variables cron sets itself from the user's passwd entry: a crontab cannot change them.
CRON_SETS: Final = ("LOGNAME", "USER")
DEFAULT_SHELL: Final = "/bin/sh"
_BLANKS: Final = " \t"
_PREFIX: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,59}")
_FIELD_NAMES: Final = ("minute", "hour", "day-of-month", "month", "day-of-week")

ErrorKind = Literal["unreadable", "refused"]
Status = Literal["created", "unchanged", "updated", "retired", "error"]


# ----------------------------------------------------------------------- parsing


@attrs.frozen(kw_only=True)
class CrontabEntry:
    """One job line of a crontab, with the environment in force where it stands."""

    line: int
    text: str
    #: The schedule spec as Norc stores it (``parse_cron(...).canonical``).
    spec: str
    #: ``CRON_TZ`` in force, or None: the importer's default zone.
    tz: str | None
    #: What the shell runs: the part before the first unescaped ``%``, ``\\%`` made ``%``.
    command: str
    #: The command's standard input (the rest, ``%`` made newlines), or None.
    stdin: str | None
    #: The variables set above the entry (``PATH``, ``HOME``, ``MAILTO``, any other),
    #: except ``SHELL`` (:attr:`shell`) and ``CRON_TZ`` (:attr:`tz`).
    env: dict[str, str]
    #: The user field of a system crontab; None in a user crontab.
    user: str | None
    shell: str
    mailto: str | None
    notes: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class CrontabError:
    """A line that could not be taken, and why."""

    line: int
    text: str
    reason: str
    #: ``refused``: understood but not supported (``@reboot``); ``unreadable``: not
    #: a line cron would take either. Only unreadable lines stop ``replace`` retiring.
    kind: ErrorKind = "unreadable"


@attrs.frozen(kw_only=True)
class Crontab:
    """A parsed crontab file."""

    entries: tuple[CrontabEntry, ...]
    errors: tuple[CrontabError, ...]
    system: bool


def is_system_path(path: str | os.PathLike[str] | None) -> bool:
    """Whether cron reads this file as a system crontab (``/etc/crontab``, ``/etc/cron.d/*``)."""
    if path is None or str(path) == "-":
        return False
    resolved = Path(os.path.abspath(path))  # noqa: PTH100 - no symlinks resolved, on purpose
    return resolved == Path("/etc/crontab") or resolved.parent == Path("/etc/cron.d")


def split_percent(text: str) -> tuple[str, str | None]:
    """Split a crontab command at its first unescaped ``%``, as cron does when it runs it.

    The command keeps every backslash except that of ``\\%`` (a literal ``%``). The rest
    becomes the standard input: each unescaped ``%`` a newline, ``\\%`` a ``%``, other
    backslashes kept, and a final newline added if it does not end with one. Returns
    (command, stdin); stdin is None when nothing follows a ``%``.
    """
    command: list[str] = []
    escaped = False
    rest: str | None = None
    for index, char in enumerate(text):
        if escaped:
            if char == "%":
                command[-1] = "%"
            else:
                command.append(char)
            escaped = False
            continue
        if char == "%":
            rest = text[index + 1 :]
            break
        command.append(char)
        escaped = char == "\\"
    if not rest:
        return "".join(command), None
    out: list[str] = []
    escaped = False
    for char in rest:
        if escaped:
            if char != "%":
                out.append("\\")
        elif char == "%":
            char = "\n"
        escaped = char == "\\"
        if not escaped:
            out.append(char)
    if escaped:
        out.append("\\")
    if out and out[-1] != "\n":
        out.append("\n")
    return "".join(command), "".join(out)


def _parse_env(text: str) -> tuple[str, str] | None:
    """``NAME=value`` as cron's load_env reads it, or None if the line is not a setting.

    The name may be quoted; spaces around ``=`` are allowed; a value in single or
    double quotes is taken as written (nothing but blanks may follow the closing
    quote), an unquoted one runs to the end of the line, trailing blanks dropped.
    """
    n, i = len(text), 0
    quote = text[0] if text[:1] in ("'", '"') else ""
    i += bool(quote)
    start = i
    while i < n:
        char = text[i]
        if quote:
            if char == quote:
                break
            if char == "=":
                return None
        elif char.isspace() or char == "=":
            break
        i += 1
    else:
        return None
    name = text[start:i]
    if quote:
        i += 1
    while i < n and text[i] != "=":
        if not text[i].isspace():
            return None
        i += 1
    if i == n or not name:
        return None
    i += 1
    while i < n and text[i].isspace():
        i += 1
    value = text[i:]
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        if end == -1 or value[end + 1 :].strip():
            return None
        return name, value[1:end]
    return name, value.rstrip()


def _take_word(text: str) -> tuple[str, str]:
    """The first blank-separated word of ``text`` and what follows it, blanks skipped."""
    match = re.match(r"([^ \t]*)[ \t]*(.*)", text, re.DOTALL)
    assert match is not None
    return match.group(1), match.group(2)


@attrs.define
class _State:
    """The settings in force while reading a crontab, top to bottom."""

    env: dict[str, str] = attrs.field(factory=dict)
    shell: str = DEFAULT_SHELL
    shell_line: int = 0
    tz: str | None = None
    tz_line: int = 0


def parse_crontab(text: str, *, system: bool = False) -> Crontab:
    """Parse a crontab; ``system``: lines have a user field after the time fields."""
    entries: list[CrontabEntry] = []
    errors: list[CrontabError] = []
    state = _State()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start one
    for number, raw in enumerate(lines, 1):
        body = raw.lstrip(_BLANKS)
        if not body or body.startswith("#"):
            continue
        if raw.endswith("\r"):
            errors.append(
                CrontabError(
                    line=number,
                    text=raw,
                    reason="the line ends with a carriage return (a DOS line ending);"
                    " cron would pass it to the command: convert the file (dos2unix)",
                )
            )
            continue
        setting = _parse_env(body)
        if setting is not None:
            _apply_setting(state, number, *setting)
            continue
        result = _parse_entry(state, number, raw, body, system)
        if isinstance(result, CrontabEntry):
            entries.append(result)
        else:
            errors.append(result)
    return Crontab(entries=tuple(entries), errors=tuple(errors), system=system)


def _apply_setting(state: _State, number: int, name: str, value: str) -> None:
    if name == "SHELL":
        state.shell, state.shell_line = value, number
    elif name == "CRON_TZ":
        state.tz, state.tz_line = (value or None), number
    elif name in CRON_SETS:
        # As cron does: LOGNAME and USER are the user's, whatever the crontab says.
        pass
    else:
        state.env[name] = value


def _parse_entry(
    state: _State, number: int, raw: str, body: str, system: bool
) -> CrontabEntry | CrontabError:
    def error(reason: str, kind: ErrorKind = "unreadable") -> CrontabError:
        return CrontabError(line=number, text=raw, reason=reason, kind=kind)

    notes: list[str] = []
    if body.startswith("-"):
        # cronie: '-' first = do not syslog the run. Norc records every run anyway.
        body = body[1:]
        notes.append("the leading '-' (cronie: do not log the run) is ignored")
    if body.startswith("@"):
        word, rest = _take_word(body)
        if word == "@reboot":
            return error(REBOOT_REASON, "refused")
        if word[1:] not in SPECIAL_NAMES:
            known = ", ".join(f"@{name}" for name in [*SPECIAL_NAMES, "reboot"])
            return error(f"bad time specifier {word!r} (cron knows {known})")
        spec = SPECIAL_NAMES[word[1:]]
    else:
        fields: list[str] = []
        rest = body
        for field_name in _FIELD_NAMES:
            word, rest = _take_word(rest)
            if not word:
                return error(
                    f"expected 5 time fields and a command, got {len(fields)} field(s)"
                    + (" (not a NAME=value setting either)" if "=" in body else "")
                )
            if not (word[0].isascii() and (word[0].isdigit() or word[0] == "*")) and (
                field_name not in ("month", "day-of-week")
            ):
                return error(
                    f"bad {field_name} {word!r}"
                    + (" (not a NAME=value setting either)" if "=" in body else "")
                )
            fields.append(word)
        try:
            spec = parse_cron(" ".join(fields)).canonical
        except InvalidSpec as exc:
            return error(str(exc))
    user: str | None = None
    if system:
        user, rest = _take_word(rest)
        if not user:
            return error("no user field (a system crontab names the user after the times)")
        try:
            pwd.getpwnam(user)
        except KeyError:
            return error(f"bad username {user!r}: no such user on this host")
    if not rest:
        return error("no command after the time fields")
    if rest.startswith("*"):
        return error("the command starts with '*': a sixth time field? (cron refuses this)")
    command, stdin = split_percent(rest)
    if not command.strip():
        return error("empty command (nothing before the first '%')")
    if not Path(state.shell).is_absolute():
        return error(
            f"SHELL={state.shell!r} (line {state.shell_line}) is not an absolute path:"
            " cron would fail to run it"
        )
    if state.tz is not None:
        try:
            resolve_timezone(state.tz)
        except InvalidSpec:
            return error(f"CRON_TZ={state.tz!r} (line {state.tz_line}) is not a known timezone")
    mailto = state.env.get("MAILTO")
    if mailto:
        notes.append(MAILTO_NOTE)
    if "$UTC{" in command or "$LOCAL{" in command:
        notes.append(SUBSTITUTION_NOTE)
    return CrontabEntry(
        line=number,
        text=raw,
        spec=spec,
        tz=state.tz,
        command=command,
        stdin=stdin,
        env=dict(state.env),
        user=user,
        shell=state.shell,
        mailto=mailto,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------- names


def _slug(command: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", command.lower()).strip("-")
    return slug[:40].rstrip("-") or "command"


def task_names(entries: Sequence[CrontabEntry], prefix: str) -> list[str]:
    """The task name of each entry: ``prefix-slug-hash``, ``-2``, ``-3``... for repeats.

    The slug is the command's first 40 characters in lower-case letters, digits and
    dashes; the hash is the first 8 hex digits of the SHA-256 of user and command. So a
    name changes only when the command (or its user) does: a new schedule, stdin or
    environment updates the same task. The same command on several lines gets a
    suffix in file order.
    """
    seen: dict[str, int] = {}
    names = []
    for entry in entries:
        digest = hashlib.sha256(f"{entry.user or ''}\0{entry.command}".encode()).hexdigest()
        base = f"{prefix}-{_slug(entry.command)}-{digest[:8]}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def marker(prefix: str) -> str:
    """The description of every task imported under ``prefix``: how its kin are found."""
    return f"imported from a crontab (prefix {prefix})"


def check_prefix(prefix: str) -> str:
    """``prefix`` if usable in task names, else :class:`NorcError`."""
    if not _PREFIX.fullmatch(prefix):
        raise NorcError(
            f"bad prefix {prefix!r}: use 1-60 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return prefix


def local_timezone() -> str:
    """The IANA name of this host's zone (``$TZ``, ``/etc/timezone``, ``/etc/localtime``),
    the zone cron would read a crontab in; ``UTC`` when none can be named."""
    candidates = []
    if os.environ.get("TZ"):
        candidates.append(os.environ["TZ"].lstrip(":"))
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    with contextlib.suppress(OSError):
        target = str(Path("/etc/localtime").readlink())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        try:
            resolve_timezone(name)
        except InvalidSpec:
            continue
        return name
    return "UTC"


# ------------------------------------------------------------------------ import


@attrs.define(kw_only=True)
class ImportRow:
    """What importing one line did (or, in a dry run, would do)."""

    line: int | None
    name: str | None
    spec: str | None
    tz: str | None
    command: str | None
    stdin: str | None
    env: dict[str, str] | None
    user: str | None
    shell: str | None
    mailto: str | None
    status: Status
    reason: str | None = None
    text: str | None = None
    notes: list[str] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return attrs.asdict(self)


def _row(entry: CrontabEntry, name: str | None, tz: str, status: Status, **extra: Any) -> ImportRow:
    return ImportRow(
        line=entry.line,
        name=name,
        spec=entry.spec,
        tz=tz,
        command=entry.command,
        stdin=entry.stdin,
        env=dict(entry.env),
        user=entry.user,
        shell=entry.shell,
        mailto=entry.mailto,
        status=status,
        text=entry.text,
        notes=list(entry.notes),
        **extra,
    )


def _error_row(error: CrontabError) -> ImportRow:
    return ImportRow(
        line=error.line,
        name=None,
        spec=None,
        tz=None,
        command=None,
        stdin=None,
        env=None,
        user=None,
        shell=None,
        mailto=None,
        status="error",
        reason=error.reason,
        text=error.text,
    )


def _command_task_type(app: Norc) -> Any:
    cls = app.registry.task_type("CommandTask")
    if cls is None:
        raise NorcError(
            "importing a crontab needs the CommandTask type: install norc-command"
            " (pip install ./norc_command) and do not disable its plugin"
        )
    return cls


def entry_params(entry: CrontabEntry) -> dict[str, Any]:
    """The CommandTask params an entry is saved with: cron's way of running it."""
    return {
        "command": entry.command,
        "nice": 0,
        "shell": entry.shell,
        "env": dict(entry.env),
        "inherit_env": False,
        "cwd": None,
        "stdin": entry.stdin,
        "user": entry.user,
    }


def import_crontab(
    app: Norc,
    text: str,
    *,
    path: str | os.PathLike[str] | None = None,
    system: bool | None = None,
    prefix: str = "crontab",
    tz: str | None = None,
    queue: str = "default",
    dry_run: bool = False,
    replace: bool = False,
) -> list[ImportRow]:
    """Import a crontab's entries as CommandTasks with cron schedules.

    ``system`` None: a system crontab if ``path`` is ``/etc/crontab`` or in
    ``/etc/cron.d``. ``tz``: the zone of entries without ``CRON_TZ`` (default: this
    host's, as cron). ``dry_run``: write nothing, report what would happen. Returns one
    row per job line, per line that could not be taken (status ``error``) and, with
    ``replace``, per retired task; lines that fail do not stop the others.
    """
    check_prefix(prefix)
    zone = tz or local_timezone()
    resolve_timezone(zone)
    app.queue(queue)  # an unknown queue fails before anything is written
    cls = _command_task_type(app)
    parsed = parse_crontab(text, system=is_system_path(path) if system is None else system)
    rows: list[ImportRow] = []
    names = task_names(parsed.entries, prefix)
    for entry, name in zip(parsed.entries, names, strict=True):
        row = _import_entry(app, cls, entry, name, zone, prefix, queue, dry_run, replace)
        if row.status != "error" and not dry_run:
            _sync_mailto(app, name, entry.mailto)
        rows.append(row)
    rows.extend(_error_row(error) for error in parsed.errors)
    if replace:
        unreadable = [e for e in parsed.errors if e.kind == "unreadable"]
        if unreadable:
            for row in rows:
                if row.status == "error" and row.line in {e.line for e in unreadable}:
                    row.notes.append(
                        "nothing was retired: a line that cannot be read may be an entry"
                        " that is still wanted; fix it and import again"
                    )
        else:
            rows.extend(_retire(app, set(names), prefix, dry_run))
    rows.sort(key=lambda row: (row.line is None, row.line or 0))
    return rows


def _schedule_matches(schedule: ScheduleRecord, spec: str, tz: str, queue: str) -> bool:
    return (schedule.kind, schedule.spec, schedule.timezone, schedule.queue) == (
        "cron",
        spec,
        tz,
        queue,
    )


def _import_entry(
    app: Norc,
    cls: Any,
    entry: CrontabEntry,
    name: str,
    default_tz: str,
    prefix: str,
    queue: str,
    dry_run: bool,
    replace: bool,
) -> ImportRow:
    tz = entry.tz or default_tz
    try:
        task = cls.from_params(name=name, params=entry_params(entry), description=marker(prefix))
    except NorcError as exc:
        return _row(entry, name, tz, "error", reason=str(exc))
    try:
        existing: TaskRecord | None = app.task_record(name)
    except UnknownTask:
        existing = None
    if existing is None:
        if not dry_run:
            app.save_task(task)
            app.add_schedule(name, cron=entry.spec, tz=tz, queue=queue)
        return _row(entry, name, tz, "created")
    if existing.type != "CommandTask" or existing.description != marker(prefix):
        return _row(
            entry,
            name,
            tz,
            "error",
            reason=f"a task named {name!r} exists and was not imported from a crontab"
            f" with prefix {prefix!r}: rename it or choose another --prefix",
        )
    live = app.schedules(task=name)
    differs = sorted(k for k, v in task.params().items() if existing.params.get(k) != v)
    wrong_schedule = bool(live) and (
        len(live) > 1 or not _schedule_matches(live[0], entry.spec, tz, queue)
    )
    if not differs and not wrong_schedule:
        if live:
            return _row(entry, name, tz, "unchanged")
        if not dry_run:  # retired earlier, back in the file
            app.add_schedule(name, cron=entry.spec, tz=tz, queue=queue)
        return _row(entry, name, tz, "created")
    what = [f"params {', '.join(differs)}"] if differs else []
    if wrong_schedule:
        what.append("schedule")
    if not replace:
        return _row(
            entry,
            name,
            tz,
            "error",
            reason=f"{name!r} is saved with another {' and '.join(what)}:"
            " pass --replace to update it",
        )
    if not dry_run:
        if differs:
            app.save_task(task, replace=True)
        if not live:
            app.add_schedule(name, cron=entry.spec, tz=tz, queue=queue)
        elif wrong_schedule:
            if not _schedule_matches(live[0], entry.spec, tz, queue):
                app.update_schedule(live[0].id, cron=entry.spec, tz=tz, queue=queue)
            for extra in live[1:]:
                app.delete_schedule(extra.id)
    return _row(entry, name, tz, "updated", reason=f"changed: {' and '.join(what)}")


def mailto_alert_name(task_name: str) -> str:
    """The alert rule an imported entry's ``MAILTO`` becomes."""
    return f"{task_name}.mailto"


def mailto_addresses(mailto: str) -> str:
    """MAILTO's addresses for the email channel: cron hands a bare user name to the local
    mailer, so ``root`` becomes ``root@localhost``."""
    parts = [a.strip() for a in mailto.split(",") if a.strip()]
    return ",".join(a if "@" in a else f"{a}@localhost" for a in parts)


def _sync_mailto(app: Norc, task_name: str, mailto: str | None) -> None:
    """Make the task's MAILTO alert match ``mailto`` (None or empty: no alert), writing
    only what differs, so a second import of the same file changes nothing.

    The rule (docs/crontab.md): cron mails whatever a job prints; Norc keeps the output
    in the instance log and mails a run that fails (``failure``, after its last attempt,
    with the end of its log) or that succeeds having printed something (``output``).
    """
    name = mailto_alert_name(task_name)
    existing = next((r for r in app.alerts() if r.name == name), None)
    if not mailto:
        if existing is not None:
            app.remove_alert(name)
        return
    target = mailto_addresses(mailto)
    glob = _glob_escape(task_name)
    wanted = (frozenset({"failure", "output"}), glob, "email", target)
    if (
        existing is not None
        and (
            existing.events,
            existing.task_glob,
            existing.channel,
            existing.target,
        )
        == wanted
    ):
        return
    app.add_alert(name, on=["failure", "output"], task=glob, email=target, replace=True)


def _glob_escape(name: str) -> str:
    """``name`` as an fnmatch pattern matching only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _retire(app: Norc, wanted: set[str], prefix: str, dry_run: bool) -> list[ImportRow]:
    rows = []
    for record in app.tasks():
        if record.description != marker(prefix) or record.name in wanted:
            continue
        live = app.schedules(task=record.name)
        if not live:
            continue  # retired already
        if not dry_run:
            for schedule in live:
                app.delete_schedule(schedule.id)
            _sync_mailto(app, record.name, None)
        params = record.params
        rows.append(
            ImportRow(
                line=None,
                name=record.name,
                spec=live[0].spec,
                tz=live[0].timezone,
                command=params.get("command"),
                stdin=params.get("stdin"),
                env=params.get("env"),
                user=params.get("user"),
                shell=params.get("shell"),
                mailto=(params.get("env") or {}).get("MAILTO"),
                status="retired",
                reason="no longer in the crontab: its schedules are deleted, the task and"
                " its history kept",
            )
        )
    return rows


# ------------------------------------------------------------------------ export


def _escape_command(command: str) -> str | None:
    """The crontab text of a command (``%`` as ``\\%``), or None if it cannot be written."""
    if "\n" in command or "\\%" in command or command.endswith("\\"):
        return None
    return command.replace("%", "\\%")


def _escape_stdin(stdin: str) -> str | None:
    """The ``%...`` tail that gives this standard input, or None if none does."""
    if not stdin.endswith("\n") or "\\\n" in stdin or "\\%" in stdin:
        return None
    return "%" + stdin[:-1].replace("%", "\\%").replace("\n", "%")


def _crontab_spec(schedule: ScheduleRecord) -> str | None:
    if schedule.kind != "cron":
        return None
    try:
        parsed = parse_cron(schedule.spec)
    except InvalidSpec:
        return None
    if parsed.kind != "crontab":
        return None
    fields = parsed.canonical.split()
    if len(fields) == 6:
        if fields[0] != "0":
            return None
        fields = fields[1:]
    return " ".join(fields)


def _why_not(record: TaskRecord, schedule: ScheduleRecord) -> str | None:
    """Why this schedule cannot be a crontab line, or None if it can."""
    params = record.params
    if record.type != "CommandTask":
        return f"task type {record.type} is not a shell command"
    if schedule.kind != "cron":
        return "an every-N-seconds schedule (crontab has only calendar times)"
    if _crontab_spec(schedule) is None:
        return f"spec {schedule.label!r} is not crontab format (seed, predefined or seconds)"
    command = str(params.get("command", ""))
    if "$UTC{" in command or "$LOCAL{" in command:
        return "the command uses $UTC{...}/$LOCAL{...}, which cron does not replace"
    if _escape_command(command) is None:
        return "the command has a newline or a backslash before % or at its end"
    stdin = params.get("stdin")
    if stdin is not None and _escape_stdin(stdin) is None:
        return "its stdin does not end with a newline or has a backslash before % or newline"
    if params.get("nice"):
        return "nice is set (cron has no nice setting)"
    if params.get("cwd") is not None:
        return "cwd is set (cron starts commands in HOME)"
    if params.get("inherit_env", True):
        return "it inherits the executor's environment (cron gives a minimal one)"
    if schedule.paused:
        return "the schedule is paused"
    return None


def _of_prefix(record: TaskRecord, prefix: str | None) -> bool:
    """Whether a task belongs to ``prefix``: imported under it, or named ``prefix-...``
    and not imported under another prefix (``web`` does not take ``web-db``'s tasks)."""
    if prefix is None or record.description == marker(prefix):
        return True
    imported = record.description.startswith(marker("")[:-1])
    return not imported and record.name.startswith(f"{prefix}-")


def export_crontab(app: Norc, *, prefix: str | None = None) -> str:
    """The command schedules (of ``prefix``'s tasks, see :func:`_of_prefix`) as crontab text.

    Cron-format schedules of cron-like CommandTasks become lines, with the settings
    lines (``SHELL``, ``CRON_TZ``, variables) they need above them. Everything else is a
    comment saying why it cannot be written. If any line has a user, the text is a
    system crontab (a user field on every line).
    """
    records = {r.name: r for r in app.tasks()}
    schedules = [s for s in app.schedules() if _of_prefix(records[s.task_name], prefix)]
    writable = []
    comments = []
    for schedule in schedules:
        record = records[schedule.task_name]
        reason = _why_not(record, schedule)
        if reason is None:
            writable.append((record, schedule))
        else:
            comments.append(f"# not exported: schedule {schedule.id} of {record.name}: {reason}")
    system = any(record.params.get("user") for record, _ in writable)
    # Variables can be set but never unset: write the entries with fewer first.
    writable.sort(key=lambda pair: (len(pair[0].params.get("env") or {}), pair[1].id))
    out = ["# written by norc crontab export"]
    env: dict[str, str] = {}
    shell, zone = DEFAULT_SHELL, None
    for record, schedule in writable:
        params = record.params
        wanted: dict[str, str] = dict(params.get("env") or {})
        gone = sorted(set(env) - set(wanted))
        if gone:
            comments.append(
                f"# not exported: schedule {schedule.id} of {record.name}: an entry above"
                f" sets {', '.join(gone)}, which a crontab cannot unset"
            )
            continue
        if system and not params.get("user"):
            comments.append(
                f"# not exported: schedule {schedule.id} of {record.name}: no user, and"
                " this is a system crontab (other entries have one)"
            )
            continue
        head = []
        if params.get("shell", DEFAULT_SHELL) != shell:
            shell = str(params.get("shell", DEFAULT_SHELL))
            head.append(f"SHELL={_quote(shell)}")
        if schedule.timezone != zone:
            zone = schedule.timezone
            head.append(f"CRON_TZ={_quote(zone)}")
        for key, value in wanted.items():
            if env.get(key) != value:
                head.append(f"{key}={_quote(value)}")
        env = wanted
        spec = _crontab_spec(schedule)
        command = _escape_command(str(params["command"]))
        stdin = params.get("stdin")
        tail = _escape_stdin(stdin) if stdin is not None else ""
        user = f"{params['user']} " if system else ""
        out.extend(head)
        out.append(f"{spec} {user}{command}{tail}")
    out.extend(comments)
    return "\n".join(out) + "\n"


def _quote(value: str) -> str:
    """A settings value cron reads back as written."""
    if value and value == value.strip() and value[0] not in "'\"":
        return value
    return f"'{value}'" if "'" not in value else f'"{value}"'


def summary(rows: Iterable[ImportRow]) -> dict[str, int]:
    """How many rows have each status."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts
