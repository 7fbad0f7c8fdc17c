"""The ``norc`` command line. Every failure Norc can name is one line on stderr, exit code 2."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click
from sqlalchemy.exc import SQLAlchemyError

from norc.errors import NorcError
from norc.status import statuses_for

if TYPE_CHECKING:
    from norc.daemon import LogFormat
    from norc.executor.executor import Isolation

EXIT_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print one line and exit with code 2."""
    click.echo(f"norc: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    click.echo(f"norc: warning: {message}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``norc`` script."""
    warnings.showwarning = _one_line_warning  # the program's own choice: one line each
    try:
        cli.main(args=argv, prog_name="norc", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted")
    except click.ClickException as exc:
        fail(exc.format_message())
    except NorcError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        fail(f"database error: {str(orig).strip().splitlines()[0]}")


# -- helpers ---------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> datetime:
    """``10m``, ``2h``, ``1d``, ``1w`` ago, or an ISO 8601 time (UTC if it has no zone)."""
    match = _DURATION.match(text)
    if match:
        return datetime.now(UTC) - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration like 10m/2h/1d nor an ISO time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_instance_id(text: str) -> int:
    """An instance id, accepting the seed's ``#42`` form."""
    try:
        value = int(text.strip().lstrip("#"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an instance id") from None
    if value < 1:
        raise click.BadParameter(f"{text!r} is not an instance id")
    return value


def fmt(value: Any) -> str:
    """A cell of a table."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """Columns aligned, a header, one row per line."""
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """Rows as a JSON list (every field) or as a table (the given columns)."""
    if as_json:
        from norc.reports import jsonable

        click.echo(json.dumps(jsonable(list(rows)), indent=2))
    else:
        print_table(rows, columns)


def parse_assignments(pairs: Sequence[str], what: str) -> dict[str, str]:
    """``key=value`` pairs, values as typed."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{what} {pair!r} is not key=value")
        out[key] = raw
    return out


def json_or_text(raw: str) -> Any:
    """A setting's value: JSON when it parses as JSON, else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class Ctx:
    """What every command gets: the options that make a Norc handle, opened lazily."""

    def __init__(self, database_url: str | None, log_dir: str | None) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from norc.app import Norc

            self._app = Norc(self.database_url, log_dir=self.log_dir)
        return self._app


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "database_url",
    metavar="URL",
    help="Database URL (default: $NORC_DATABASE_URL, else sqlite:///norc.db).",
)
@click.option(
    "--log-dir", metavar="DIR", help="Log directory (default: $NORC_LOG_DIR or ./norc-logs)."
)
@click.version_option(package_name="norc")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, log_dir: str | None) -> None:
    """Norc: tasks, jobs, schedules, queues and executors on one SQL database."""
    ctx.obj = Ctx(database_url, log_dir)
    ctx.call_on_close(lambda: ctx.obj._app.close() if ctx.obj._app else None)


# -- demo ------------------------------------------------------------------------------


@cli.command()
@pass_ctx
def demo(c: Ctx) -> None:
    """Run a CommandTask and a custom Python task through an embedded executor."""
    from norc.demo import run_demo

    app = c.app
    click.echo(f"database: {app.db.url.render_as_string(hide_password=True)}")
    records = run_demo(app)
    _instances_table(records)
    click.echo("\nlogs:")
    for r in records:
        click.echo(f"  #{r.id} {r.task_name}: {app.log_path(r)}")
    if any(r.status.value != "SUCCESS" for r in records):
        fail("some demo instances did not succeed (see their logs above)")


# -- executor --------------------------------------------------------------------------


_log_format_option = click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    help="How lines look on stderr: console on a terminal and JSON lines otherwise (auto).",
)


def _check_stop_timeout(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """``--stop-timeout``: seconds > 0, ``inf`` for no bound."""
    if not value > 0:  # also NaN, which FloatRange lets through
        raise click.BadParameter(f"{value!r} is not a number of seconds > 0 (or inf)")
    return value


_stop_timeout_option = click.option(
    "--stop-timeout",
    default=30.0,
    show_default=True,
    type=float,
    callback=_check_stop_timeout,
    metavar="SECONDS",
    help="After a SIGTERM or SIGINT, wait this long for running instances, then kill them"
    " (inf: wait for ever). A second signal, or SIGQUIT, kills at once.",
)


def _log_to_stderr(log_format: str) -> None:
    from norc.daemon import configure_stderr_logging

    configure_stderr_logging(None if log_format == "auto" else cast("LogFormat", log_format))


def _options(*options: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Several click options as one decorator, in the order given (shared by a daemon's
    command and ``norc service unit``, so that both take the same options)."""

    def apply(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


_executor_options = _options(
    click.option("-q", "--queue", default="default", show_default=True, help="Queue to consume."),
    click.option(
        "-c",
        "--concurrency",
        default=1,
        show_default=True,
        type=click.IntRange(1),
        help="Instances run at once.",
    ),
    click.option(
        "--isolation",
        type=click.Choice(["process", "thread"]),
        default="process",
        show_default=True,
        help="Run each instance in a worker process or in a thread.",
    ),
    click.option(
        "--claim-ahead",
        default=0.1,
        show_default=True,
        type=click.FloatRange(0),
        help="Also claim what was finished in this many seconds lately (0: idle slots only).",
    ),
    click.option(
        "--max-claim-wait",
        default=1.0,
        show_default=True,
        type=click.FloatRange(0, min_open=True),
        help="Give back instances claimed ahead that have not started after this many seconds.",
    ),
)


@cli.command()
@_executor_options
@_stop_timeout_option
@_log_format_option
@pass_ctx
def executor(
    c: Ctx,
    queue: str,
    concurrency: int,
    isolation: Isolation,
    claim_ahead: float,
    max_claim_wait: float,
    stop_timeout: float,
    log_format: str,
) -> None:
    """Run an executor until stopped.

    The first SIGTERM or SIGINT stops it gracefully: it takes nothing new, gives back
    what it claimed ahead and lets running instances finish, for at most --stop-timeout
    seconds, then kills them (INTERRUPTED, finally_ still runs). A second signal, or
    SIGQUIT, kills at once. Exit code 0 once it has ended so. Under systemd it notifies
    READY, STOPPING and WATCHDOG ($NOTIFY_SOCKET; see `norc service unit`).

    Its events go to stderr as well as to its log in the log store."""
    _log_to_stderr(log_format)
    ex = c.app.executor(
        queue=queue,
        concurrency=concurrency,
        isolation=isolation,
        install_signal_handlers=True,
        claim_ahead=claim_ahead,
        max_claim_wait=max_claim_wait,
        log_to_stderr=True,
    )
    ex.run(
        on_started=lambda: click.echo(
            f"executor {ex.id} on queue {queue!r} (concurrency {concurrency}, pid {os.getpid()})",
            err=True,
        ),
        stop_timeout=stop_timeout,
        notify=True,
    )
    if ex.settled is not None:  # a supervisor should start a fresh one
        fail(f"{ex.settled}; this executor ended, start a new one")


_scheduler_options = _options(
    click.option(
        "--misfire-grace",
        default=5.0,
        show_default=True,
        type=click.FloatRange(min=0),
        help="Seconds late after which a fire counts as missed (see make_up).",
    )
)


@cli.command()
@_scheduler_options
@_stop_timeout_option
@_log_format_option
@pass_ctx
def scheduler(c: Ctx, misfire_grace: float, stop_timeout: float, log_format: str) -> None:
    """Run a scheduler until stopped; any number may run at once.

    SIGTERM, SIGINT or SIGQUIT stop it: it gives its schedules back at once, for other
    schedulers to take, and exits with code 0 (--stop-timeout is accepted for symmetry
    with the executor; nothing runs inside a scheduler). Under systemd it notifies
    READY, STOPPING and WATCHDOG ($NOTIFY_SOCKET; see `norc service unit`).

    Its events go to stderr as well as to its log in the log store."""
    _log_to_stderr(log_format)
    sch = c.app.scheduler(
        misfire_grace=misfire_grace, install_signal_handlers=True, log_to_stderr=True
    )
    sch.run(
        on_started=lambda: click.echo(f"scheduler {sch.id} (pid {os.getpid()})", err=True),
        stop_timeout=stop_timeout,
        notify=True,
    )
    if sch.settled is not None:  # a supervisor should start a fresh one
        fail(f"{sch.settled}; this scheduler ended, start a new one")


# -- schedules ---------------------------------------------------------------------------


@cli.group()
def schedule() -> None:
    """Check specs and manage schedules."""


# Unknown options are taken as the SPEC, so that '-1 * * * *' is told what is wrong with it.
@schedule.command("next", context_settings={"ignore_unknown_options": True})
@click.argument("spec")
@click.option("-n", "--count", default=5, show_default=True, type=click.IntRange(1, 10000))
@click.option("--tz", default="UTC", show_default=True, help="IANA timezone of the spec.")
@click.option("--after", help="Start from this ISO time instead of now.")
def schedule_next(spec: str, count: int, tz: str, after: str | None) -> None:
    """Print the next fire times of SPEC (cron, seed encoding or predefined), one per line."""
    from norc.schedules.cron import next_fire_times, resolve_timezone

    start = None
    if after:
        try:
            start = datetime.fromisoformat(after)
        except ValueError:
            raise click.BadParameter(f"--after {after!r} is not an ISO 8601 time") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=resolve_timezone(tz))
    for fire in next_fire_times(spec, count=count, tz=tz, after=start):
        click.echo(fire.isoformat())


def _check_every(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--every``: seconds, checked like the API's ``every=`` (finite, 1 µs to 100 years)."""
    from norc.schedules.timing import check_period

    if value is None:
        return None
    shown = value if len(value) <= 20 else f"{value[:12]}... ({len(value)} characters)"
    try:
        seconds = float(value)
    except ValueError:
        raise click.BadParameter(f"{shown!r} is not a number of seconds") from None
    if seconds in (float("inf"), float("-inf")) and "inf" not in value.lower():
        # A number too large for a float (thousands of digits) is finite, just too long.
        seconds = math.copysign(sys.float_info.max, seconds)
    # An InvalidSpec is a NorcError: main() prints it as one line, exit code 2.
    return check_period(seconds, "--every", shown=shown)


@schedule.command("add")
@click.argument("task_ref", metavar="TASK")
@click.option("--cron", "cron_spec", help="A cron spec: crontab, 6-field, @daily, seed, DAILY...")
@click.option("--every", metavar="SECONDS", callback=_check_every, help="Period in seconds.")
@click.option("--start", help="First fire of a --every schedule: ISO time or delay (30s, 2h).")
@click.option("--tz", default="UTC", show_default=True)
@click.option("-q", "--queue", default="default", show_default=True)
@click.option("-p", "--priority", default=0, show_default=True, type=int)
@click.option(
    "-r",
    "--repetitions",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Fires to enqueue, 0 = forever.",
)
@click.option(
    "--make-up/--no-make-up",
    default=False,
    show_default=True,
    help="Enqueue fires missed while no scheduler ran, or record them as SKIPPED.",
)
@pass_ctx
def schedule_add(
    c: Ctx,
    task_ref: str,
    cron_spec: str | None,
    every: float | None,
    start: str | None,
    tz: str,
    queue: str,
    priority: int,
    repetitions: int,
    make_up: bool,
) -> None:
    """Schedule TASK with --cron SPEC or --every SECONDS."""
    ref: str | int = int(task_ref) if task_ref.isdigit() else task_ref
    record = c.app.add_schedule(
        ref,
        cron=cron_spec,
        every=every,
        start=_parse_start(start),
        tz=tz,
        queue=queue,
        priority=priority,
        repetitions=repetitions,
        make_up=make_up,
    )
    click.echo(f"schedule {record.id} ({record.label}), next fire {fmt(record.next_fire_at)} UTC")


def _parse_start(text: str | None) -> datetime | float | None:
    if text is None:
        return None
    match = _DURATION.match(text)
    if match:
        return float(match[1]) * _UNITS[match[2]]
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"--start {text!r} is neither an ISO time nor a delay") from None


@schedule.command("list")
@click.option("--task", "task_name", help="Only this task's schedules.")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted schedules.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def schedule_list(c: Ctx, task_name: str | None, include_deleted: bool, as_json: bool) -> None:
    """Schedules with their next fire times."""
    _report_schedules(c, task_name, include_deleted, as_json)


def _report_schedules(c: Ctx, task_name: str | None, include_deleted: bool, as_json: bool) -> None:
    from norc import reports

    emit(
        reports.schedules_(c.app, task=task_name, include_deleted=include_deleted),
        [
            "id",
            "task",
            "when",
            "timezone",
            "queue",
            "state",
            "remaining",
            "make_up",
            "next_fire",
            "scheduler",
            "error",
        ],
        as_json,
    )


def _schedule_action(name: str, help_text: str) -> None:
    @schedule.command(name, help=help_text)
    @click.argument("schedule_id", type=int)
    @pass_ctx
    def action(c: Ctx, schedule_id: int) -> None:
        getattr(c.app, f"{name}_schedule")(schedule_id)
        click.echo(f"schedule {schedule_id}: {name}d")


_schedule_action("pause", "Stop a schedule firing until resumed.")
_schedule_action("resume", "Fire a paused schedule again, from its next fire after now.")
_schedule_action("delete", "Soft-delete a schedule: it never fires again, its history stays.")


# -- tasks and queues --------------------------------------------------------------------


@cli.group()
def task() -> None:
    """Create and list tasks."""


@task.command("create")
@click.argument("name")
@click.argument("type_name", metavar="TYPE")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter (JSON value or plain string); repeatable.",
)
@click.option("--timeout", type=click.FloatRange(min=0), help="Seconds before TIMEDOUT.")
@click.option("--description", default="", help="What the task is for.")
@click.option("--replace", is_flag=True, help="Overwrite a task of the same name.")
@pass_ctx
def task_create(
    c: Ctx,
    name: str,
    type_name: str,
    params: tuple[str, ...],
    timeout: float | None,
    description: str,
    replace: bool,
) -> None:
    """Save a task of an installed TYPE: `norc task create bk CommandTask -p command=...`."""
    from norc.errors import UnknownTaskType

    cls = c.app.registry.task_type(type_name)
    if cls is None:
        known = ", ".join(sorted(c.app.registry.task_types.classes)) or "none"
        raise UnknownTaskType(type_name, f"installed types: {known}")
    from norc.abc import coerce_param

    values = {k: coerce_param(cls, k, v) for k, v in parse_assignments(params, "parameter").items()}
    task_obj = cls.from_params(name=name, params=values, timeout=timeout, description=description)
    c.app.save_task(task_obj, replace=replace)
    click.echo(f"task {task_obj.id} {name!r} saved")


@task.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_ctx
def task_list(c: Ctx, as_json: bool) -> None:
    """List saved tasks."""
    _report_tasks(c, as_json)


# -- jobs ------------------------------------------------------------------------------


@cli.group()
def job() -> None:
    """Build Jobs (graphs of tasks) and look at them."""


def _parse_node(text: str) -> tuple[str, str, list[str]]:
    head, _, parents = text.partition(":")
    node, _, task_name = head.partition("=")
    if not node.strip():
        raise click.BadParameter(f"node {text!r} is not NODE[=TASK][:PARENT,...]")
    after = [p.strip() for p in parents.split(",") if p.strip()]
    return node.strip(), (task_name or node).strip(), after


@job.command("create")
@click.argument("name")
@click.option(
    "-n",
    "--node",
    "nodes",
    multiple=True,
    required=True,
    metavar="NODE[=TASK][:PARENT,...]",
    help="A node running TASK (default: the task named NODE) after its parents.",
)
@click.option("--timeout", type=click.FloatRange(min=0), help="Seconds the whole Job may take.")
@click.option("--description", default="")
@click.option("--replace", is_flag=True, help="Overwrite a Job of the same name.")
@pass_ctx
def job_create(
    c: Ctx,
    name: str,
    nodes: tuple[str, ...],
    timeout: float | None,
    description: str,
    replace: bool,
) -> None:
    """Save a Job: `norc job create etl -n extract -n load:extract -n report=mail:load`."""
    from norc.jobs import Job

    graph = Job(name=name, timeout=timeout, description=description)
    for text in nodes:
        node, task_name, after = _parse_node(text)
        graph.add(task_name, name=node, after=after)
    c.app.save_task(graph, replace=replace)
    click.echo(f"job {graph.id} {name!r} saved with {len(graph.nodes)} nodes")


@job.command("show")
@click.argument("name")
@click.option("-i", "--instance", "instance_id", help="Show one run of the Job, node by node.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def job_show(c: Ctx, name: str, instance_id: str | None, as_json: bool) -> None:
    """A Job's graph as a table (node, task, parents), or one run's nodes with status."""
    from norc import reports

    ident = parse_instance_id(instance_id) if instance_id else None
    rows = reports.job_nodes(c.app, name, instance_id=ident)
    columns = ["node", "task", "after", "queue"]
    if ident is not None:
        columns += ["instance", "status", "attempt", "started_at", "ended_at", "error"]
    emit(rows, columns, as_json)


@cli.command()
@click.argument("task_ref", metavar="TASK")
@click.option("-q", "--queue", default="default", show_default=True)
@click.option("-p", "--priority", default=0, show_default=True, type=int)
@click.option("-n", "--count", default=1, show_default=True, type=click.IntRange(1))
@pass_ctx
def enqueue(c: Ctx, task_ref: str, queue: str, priority: int, count: int) -> None:
    """Enqueue COUNT instances of TASK (a name or id)."""
    ref: str | int = int(task_ref) if task_ref.isdigit() else task_ref
    ids = c.app.enqueue_many(ref, count, queue=queue, priority=priority)
    click.echo(" ".join(str(i) for i in ids))


@cli.group()
def queue() -> None:
    """Create and list queues."""


@queue.command("create")
@click.argument("name")
@click.option("-t", "--type", "type_name", default="dbqueue", show_default=True)
@click.option("-s", "--setting", "settings", multiple=True, metavar="KEY=VALUE")
@pass_ctx
def queue_create(c: Ctx, name: str, type_name: str, settings: tuple[str, ...]) -> None:
    """Create a queue of an installed type."""
    values = {k: json_or_text(v) for k, v in parse_assignments(settings, "setting").items()}
    c.app.create_queue(name, type_name, **values)
    click.echo(f"queue {name!r} ({type_name}) created")


@queue.command("group")
@click.argument("name")
@click.argument("members", nargs=-1, required=True)
@pass_ctx
def queue_group(c: Ctx, name: str, members: tuple[str, ...]) -> None:
    """Create a queue group: executors on NAME consume MEMBERS, first first."""
    c.app.create_queue_group(name, members)
    click.echo(f"queue group {name!r}: {', '.join(members)}")


@queue.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def queue_list(c: Ctx, as_json: bool) -> None:
    """List queues with their depth."""
    _report_queues(c, as_json)


# -- reports ---------------------------------------------------------------------------


@cli.group()
def report() -> None:
    """Tables of what happened (``--json`` for scripts)."""


def _common_report_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")(fn)
    fn = click.option(
        "-n",
        "limit",
        default=50,
        show_default=True,
        type=click.IntRange(1),
        help="At most this many rows.",
    )(fn)
    fn = click.option("--since", help="Only newer than 10m, 2h, 1d or an ISO time.")(fn)
    return fn


@report.command("instances")
@_common_report_options
@click.option(
    "--status",
    help="A status group (active, running, succeeded, failed, final, "
    "error) or a status (TIMEDOUT).",
)
@click.option("--task", "task_name", help="Only this task.")
@click.option("-q", "--queue", "queue_name", help="Only this queue.")
@pass_ctx
def report_instances(
    c: Ctx,
    as_json: bool,
    limit: int,
    since: str | None,
    status: str | None,
    task_name: str | None,
    queue_name: str | None,
) -> None:
    """Instances, newest first."""
    records = c.app.instances(
        status=statuses_for(status) if status else None,
        since=parse_since(since) if since else None,
        task=task_name,
        queue=queue_name,
        limit=limit,
    )
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
    else:
        _instances_table(records)


def _instances_table(records: Sequence[Any]) -> None:
    print_table(
        [
            {
                **r.to_json(),
                "status": r.status.value,
                "task": r.task_name,
                "started": r.started_at,
                "ended": r.ended_at,
                "exit": r.exit_code,
                "executor": r.executor_id,
            }
            for r in records
        ],
        [
            "id",
            "task",
            "queue",
            "status",
            "attempt",
            "started",
            "ended",
            "duration",
            "host",
            "executor",
            "exit",
            "error",
        ],
    )


@report.command("tasks")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def report_tasks(c: Ctx, as_json: bool) -> None:
    """Saved tasks."""
    _report_tasks(c, as_json)


def _report_tasks(c: Ctx, as_json: bool, since: datetime | None = None) -> None:
    from norc import reports

    rows = reports.tasks(c.app, since=since)
    if not as_json:
        rows = [{**r, "params": json.dumps(r["params"])} for r in rows]
    emit(
        rows,
        [
            "id",
            "name",
            "type",
            "plugin",
            "timeout",
            "succeeded",
            "failed",
            "running",
            "success_rate",
            "next_fire",
            "params",
        ],
        as_json,
    )


@report.command("queues")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def report_queues(c: Ctx, as_json: bool) -> None:
    """Queues and how many instances wait in each."""
    _report_queues(c, as_json)


def _report_queues(c: Ctx, as_json: bool) -> None:
    from norc import reports

    rows = reports.queues(c.app)
    if not as_json:
        rows = [{**r, "settings": json.dumps(r["settings"])} for r in rows]
    emit(rows, ["name", "type", "depth", "consumers", "settings"], as_json)


@report.command("schedules")
@click.option("--task", "task_name", help="Only this task's schedules.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def report_schedules(c: Ctx, task_name: str | None, as_json: bool) -> None:
    """Schedules with their next fire times."""
    _report_schedules(c, task_name, False, as_json)


@report.command("executors")
@_common_report_options
@pass_ctx
def report_executors(c: Ctx, as_json: bool, limit: int, since: str | None) -> None:
    """Executors: liveness, heartbeat age, running/succeeded/failed counts."""
    from norc import reports

    rows = reports.daemons(
        c.app, "executor", since=parse_since(since) if since else None, limit=limit
    )
    emit(
        rows,
        [
            "id",
            "host",
            "pid",
            "queue",
            "concurrency",
            "status",
            "alive",
            "heartbeat_age",
            "running",
            "succeeded",
            "failed",
            "error",
        ],
        as_json,
    )


@report.command("schedulers")
@_common_report_options
@pass_ctx
def report_schedulers(c: Ctx, as_json: bool, limit: int, since: str | None) -> None:
    """Schedulers: liveness, heartbeat age, schedules they lease."""
    from norc import reports

    rows = reports.daemons(
        c.app, "scheduler", since=parse_since(since) if since else None, limit=limit
    )
    emit(
        rows,
        ["id", "host", "pid", "status", "alive", "heartbeat_age", "schedules", "error"],
        as_json,
    )


@cli.command()
@click.option("--since", default="1h", show_default=True, help="Count instances since then.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(c: Ctx, since: str, as_json: bool) -> None:
    """One screen: live daemons, queues, instance counts, recent failures."""
    from norc import reports

    overview = reports.status(c.app, since=parse_since(since))
    if as_json:
        click.echo(json.dumps(reports.jsonable(overview), indent=2))
        return
    click.echo(f"Executors ({len(overview['executors'])} alive)")
    print_table(
        overview["executors"],
        ["id", "host", "pid", "queue", "status", "heartbeat_age", "running", "succeeded", "failed"],
    )
    click.echo(f"\nSchedulers ({len(overview['schedulers'])} alive)")
    print_table(
        overview["schedulers"], ["id", "host", "pid", "status", "heartbeat_age", "schedules"]
    )
    for kind in ("executors", "schedulers"):
        for d in overview[kind]:
            if d["status"] == "ERROR" and d["error"]:
                click.echo(f"{kind[:-1]} {d['id']} ERROR: {d['error']}")
    click.echo("\nQueues")
    print_table(overview["queues"], ["name", "type", "depth", "consumers"])
    counts = {k: v for k, v in overview["instances"].items() if v}
    click.echo(
        f"\nInstances since {since}: "
        + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none")
    )
    if overview["recent_failures"]:
        click.echo("\nRecent failures")
        print_table(overview["recent_failures"], ["id", "task_name", "status", "ended_at", "error"])


# -- control -----------------------------------------------------------------------------


_REQUEST_FLAGS = ("stop", "kill", "pause", "resume", "reload")


def _control_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for flag in reversed(_REQUEST_FLAGS):
        fn = click.option(f"--{flag}", flag, is_flag=True, help=f"Request {flag.upper()}.")(fn)
    return fn


def _one_request(flags: dict[str, bool], handle: bool = False) -> str | None:
    chosen = [name for name in _REQUEST_FLAGS if flags.get(name)]
    if len(chosen) + int(handle) != 1:
        raise click.UsageError(
            "choose exactly one of --stop, --kill, --pause, --resume, --reload, --handle"
        )
    return chosen[0].upper() if chosen else None


@cli.command()
@click.argument("kind", type=click.Choice(["executor", "scheduler", "instance", "host"]))
@click.argument("target")
@_control_options
@click.option("--handle", is_flag=True, help="Mark an ERROR daemon or failed instance HANDLED.")
@click.option("--wait", "wait_", is_flag=True, help="Return once the daemon has acted.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--force", is_flag=True, help="End a daemon that is not alive (STOP/KILL).")
@pass_ctx
def control(
    c: Ctx,
    /,
    kind: str,
    target: str,
    handle: bool,
    wait_: bool,
    timeout: float,
    force: bool,
    **flags: bool,
) -> None:
    """Steer a daemon: `norc control executor 3 --pause`, `norc control host web1 --stop`."""
    from norc import control as ctl

    request = _one_request(flags, handle)
    if kind == "host":
        if request is None:
            raise click.UsageError("--handle applies to one executor, scheduler or instance")
        ids = c.app.request_host(target, request)
        click.echo(
            f"{request} sent to {len(ids)} daemon(s) on {target}: "
            + (" ".join(map(str, ids)) or "none alive")
        )
        return
    ident = parse_instance_id(target)
    if kind == "instance":
        if request is not None:
            raise click.UsageError("instances take --handle only")
        ctl.handle_instance(c.app, ident)
        click.echo(f"instance {ident}: HANDLED")
        return
    if request is None:
        ctl.get_daemon(c.app, ident, kind)
        record = ctl.handle_daemon(c.app, ident)
        click.echo(f"{kind} {ident}: {record.status}")
        return
    record = c.app.request(ident, request, kind=kind, force=force, wait=wait_, timeout=timeout)
    click.echo(
        f"{kind} {ident}: {request} {'done' if wait_ or record.ended_at else 'sent'}"
        f" (status {record.status})"
    )


@cli.command()
@click.option("--older-than", required=True, help="Age like 30d, 12h; older history goes.")
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(1))
@pass_ctx
def prune(c: Ctx, older_than: str, batch: int) -> None:
    """Delete old history: final instances and their logs, ended daemons and theirs."""
    match = _DURATION.match(older_than)
    if not match:
        raise click.BadParameter(f"--older-than {older_than!r} is not a duration like 30d")
    counts = c.app.prune(timedelta(seconds=float(match[1]) * _UNITS[match[2]]), batch=batch)
    click.echo(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()) + " deleted")


# -- logs, plugins, database -------------------------------------------------------------


@cli.group()
def logs() -> None:
    """Read logs."""


@logs.command("instance")
@click.argument("instance_id")
@click.option("--remote", is_flag=True, help="Read the log store's copy, not the local file.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the instance ends.")
@pass_ctx
def logs_instance(c: Ctx, instance_id: str, remote: bool, follow: bool) -> None:
    """Print an instance's log (``42`` or ``#42``)."""
    ident = parse_instance_id(instance_id)
    if follow and not remote:
        record = c.app.instance(ident)
        _follow(c.app.log_path(record), lambda: c.app.instance(ident).status.is_final)
        return
    click.echo(c.app.logs(ident, remote=remote), nl=False)


def _daemon_logs_command(kind: str) -> None:
    @logs.command(kind, help=f"Print a {kind}'s own log.")
    @click.argument("daemon_id")
    @click.option("--remote", is_flag=True, help="Read the log store's copy.")
    @click.option("-f", "--follow", is_flag=True, help=f"Keep printing until the {kind} ends.")
    @pass_ctx
    def command(c: Ctx, daemon_id: str, remote: bool, follow: bool) -> None:
        from norc import control as ctl

        ident = parse_instance_id(daemon_id)
        daemon = ctl.get_daemon(c.app, ident, kind)
        if follow and not remote:
            path = c.app.daemon_log_path(kind, ident)
            _follow(path, lambda: ctl.get_daemon(c.app, ident).ended_at is not None)
            return
        click.echo(c.app.daemon_logs(daemon.id, remote=remote), nl=False)


_daemon_logs_command("executor")
_daemon_logs_command("scheduler")


def _follow(path: Any, finished: Callable[[], bool], poll: float = 0.25) -> None:
    """Print a growing file until ``finished()`` and nothing more is written (^C stops)."""
    import time

    offset = 0
    try:
        while True:
            done = finished()  # checked before reading, so the last lines are not missed
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            if done and not chunk:
                return
            time.sleep(poll)
    except KeyboardInterrupt:
        return


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def plugins(c: Ctx, as_json: bool) -> None:
    """Every plugin: what loaded (distribution, version, what it registered), what failed
    and why, what is blocked. Needs no database, and lists a broken plugin instead of
    failing on it, so it works when every other command cannot."""
    from norc.config import Settings
    from norc.pluginmanager import build_plugin_manager
    from norc.registry import Registry

    settings = Settings.load(database_url=c.database_url, log_dir=c.log_dir)
    manager = build_plugin_manager(disabled=settings.disable_plugins, strict=False)
    registry = Registry()
    manager.fill_registry(registry)
    provided: dict[str, list[str]] = {}
    for kind, kinds in (
        ("task", registry.task_types),
        ("queue", registry.queue_types),
        ("log store", registry.log_stores),
        ("alert channel", registry.channels),
    ):
        for name, owner in kinds.owners.items():
            provided.setdefault(owner, []).append(f"{kind} {name}")
    failed = {f.name: f for f in manager.failures}
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "module": p.module,
            "status": "failed" if p.name in failed else "loaded",
            "provides": ", ".join(provided.get(p.name, [])),
            "error": failed[p.name].reason if p.name in failed else None,
        }
        for p in manager.infos
    ]
    listed = {p.name for p in manager.infos}
    rows += [
        {
            "name": f.name,
            "distribution": f.distribution,
            "version": None,
            "module": None,
            "status": "failed",
            "provides": "",
            "error": f.reason,
        }
        for f in manager.failures
        if f.name not in listed
    ]
    rows += [
        {
            "name": name,
            "distribution": None,
            "version": None,
            "module": None,
            "status": "blocked" if name not in manager.unknown_disabled else "unknown",
            "provides": "",
            "error": None
            if name not in manager.unknown_disabled
            else "named in NORC_DISABLE_PLUGINS, but no such plugin is installed",
        }
        for name in manager.blocked
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(rows, ["name", "status", "distribution", "version", "module", "provides"])
    for row in rows:
        if row["error"]:
            click.echo(f"{row['name']}: {row['error']}", err=True)


@cli.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c: Ctx) -> None:
    """Create or migrate the schema to this Norc's revision (Alembic)."""
    from norc.store import migrate

    before, after = migrate.upgrade(c.app.db.engine)
    click.echo(f"schema revision: {before or 'none'} -> {after}")


@db.command("current")
@pass_ctx
def db_current(c: Ctx) -> None:
    """Print the schema revision of the database and the one this Norc needs."""
    from norc.store import migrate

    with c.app.db.engine.connect() as conn:
        current = migrate.current_revision(conn)
    click.echo(f"database: {current or 'none'}  needed: {migrate.head_revision()}")


# -- web ---------------------------------------------------------------------------------


# Secrets (--token, --password) are not among them: a unit gets them from its
# environment file, never on a command line that `ps` shows.
_web_options = _options(
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
    click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535)),
    click.option("--read-only", is_flag=True, help="Serve reports only; refuse every control."),
)


@cli.command()
@_web_options
@click.option(
    "--token", envvar="NORC_WEB_TOKEN", help="Bearer token for changes ($NORC_WEB_TOKEN)."
)
@click.option("--user", envvar="NORC_WEB_USER", help="User for changes ($NORC_WEB_USER).")
@click.option("--password", envvar="NORC_WEB_PASSWORD", help="Password ($NORC_WEB_PASSWORD).")
@pass_ctx
def web(
    c: Ctx,
    host: str,
    port: int,
    read_only: bool,
    token: str | None,
    user: str | None,
    password: str | None,
) -> None:
    """Serve the web page and JSON API (loopback only unless authentication is set)."""
    from norc.web import serve

    serve(
        c.app, host=host, port=port, read_only=read_only, token=token, user=user, password=password
    )


# -- crontab -----------------------------------------------------------------------------


@cli.group()
def crontab() -> None:
    """Import crontab files as CommandTasks with schedules; export them back."""


@crontab.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--system",
    is_flag=True,
    help="A system crontab (a user field after the times); automatic for /etc/crontab"
    " and /etc/cron.d/*.",
)
@click.option("--prefix", default="crontab", show_default=True, help="Start of the tasks' names.")
@click.option("--tz", help="Zone of entries without CRON_TZ (default: this host's, as cron).")
@click.option("-q", "--queue", default="default", show_default=True)
@click.option("--dry-run", is_flag=True, help="Show what would happen; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option(
    "--replace",
    is_flag=True,
    help="Update entries that changed; retire (delete the schedules of) those gone.",
)
@pass_ctx
def crontab_import(
    c: Ctx,
    file: str,
    system: bool,
    prefix: str,
    tz: str | None,
    queue: str,
    dry_run: bool,
    as_json: bool,
    replace: bool,
) -> None:
    """Import FILE ('-': stdin). Exit code 0 if every line was taken, 2 if some were not."""
    from norc.crontab import import_crontab, summary

    try:
        from pathlib import Path

        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{file} is not UTF-8 text: {exc}")
    rows = import_crontab(
        c.app,
        text,
        path=None if file == "-" else file,
        system=True if system else None,
        prefix=prefix,
        tz=tz,
        queue=queue,
        dry_run=dry_run,
        replace=replace,
    )
    if as_json:
        click.echo(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        for row in rows:
            where = f"line {row.line}" if row.line is not None else "gone"
            if row.status == "error":
                click.echo(f"{where}: error: {row.reason}: {(row.text or '').strip()}")
            else:
                zone = f" [{row.tz}]" if row.tz else ""
                user = f" as {row.user}" if row.user else ""
                what = f"{row.spec}{zone}{user} {row.command}"
                click.echo(f"{where}: {row.status} {row.name}: {what}")
                if row.status == "updated" and row.reason:
                    click.echo(f"  {row.reason}")
            for note in row.notes:
                click.echo(f"  note: {note}")
        counts = summary(rows)
        done = ", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing to import"
        click.echo(("dry run, nothing written: " if dry_run else "") + done)
    if any(row.status == "error" for row in rows):
        sys.exit(EXIT_ERROR)


@crontab.command("export")
@click.option("--prefix", help="Only the tasks imported with this --prefix (or named PREFIX-...).")
@pass_ctx
def crontab_export(c: Ctx, prefix: str | None) -> None:
    """Print the command schedules as a crontab; what cron cannot express is a comment."""
    from norc.crontab import export_crontab

    click.echo(export_crontab(c.app, prefix=prefix), nl=False)


# -- service ---------------------------------------------------------------------------


@cli.group()
def service() -> None:
    """Run Norc's daemons as system services (see docs/deploy.md)."""


@service.group("unit")
def service_unit() -> None:
    """Print a systemd unit for a daemon: norc service unit executor|scheduler|web [options].

    The unit runs this installation's norc script with the options given (the database
    URL and other secrets belong in the environment file, never on the command line)."""


_unit_options = _options(
    click.option(
        "--environment-file",
        default="/etc/norc/norc.env",
        show_default=True,
        metavar="PATH",
        help="EnvironmentFile= with NORC_DATABASE_URL (and NORC_LOG_DIR, ...).",
    ),
    click.option(
        "--run-as",
        default="norc",
        show_default=True,
        metavar="USER",
        help="User= of the service (root to run system crontabs' users' commands).",
    ),
)

_watchdog_option = click.option(
    "--watchdog",
    default=120.0,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="WatchdogSec=: restart the daemon if its heartbeat thread is stuck this long (0: off).",
)

#: Options of `norc service unit KIND` that shape the unit, not the daemon's command line.
_UNIT_ONLY = {"environment_file", "run_as", "watchdog"}


def _daemon_arguments(ctx: click.Context) -> list[str]:
    """The daemon options given to `norc service unit KIND`, as its ExecStart arguments:
    those set on the command line, and --stop-timeout always (TimeoutStopSec follows it)."""
    from click.core import ParameterSource

    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in _UNIT_ONLY:
            continue
        assert param.name is not None
        value = ctx.params[param.name]
        given = ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT
        if not given and param.name != "stop_timeout":
            continue
        flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if param.is_flag:
            if value:
                args.append(flag)
        else:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args


def _print_unit(ctx: click.Context, kind: str, stop_timeout: float | None) -> None:
    from norc.service import norc_executable, render_unit

    params = ctx.params
    try:
        executable = norc_executable()
    except FileNotFoundError as exc:
        fail(str(exc))
    click.echo(
        render_unit(
            cast("Any", kind),
            _daemon_arguments(ctx),
            stop_timeout=stop_timeout,
            environment_file=params["environment_file"],
            user=params["run_as"],
            watchdog=params.get("watchdog", 0.0),
            executable=executable,
        ),
        nl=False,
    )


@service_unit.command("executor")
@_executor_options
@_stop_timeout_option
@_log_format_option
@_watchdog_option
@_unit_options
@click.pass_context
def service_unit_executor(ctx: click.Context, /, **_: Any) -> None:
    """Print a unit running `norc executor` with these options: Type=notify, a graceful
    stop on SIGTERM, TimeoutStopSec = --stop-timeout + 15 s."""
    _print_unit(ctx, "executor", ctx.params["stop_timeout"])


@service_unit.command("scheduler")
@_scheduler_options
@_stop_timeout_option
@_log_format_option
@_watchdog_option
@_unit_options
@click.pass_context
def service_unit_scheduler(ctx: click.Context, /, **_: Any) -> None:
    """Print a unit running `norc scheduler` with these options (Type=notify)."""
    _print_unit(ctx, "scheduler", ctx.params["stop_timeout"])


@service_unit.command("web")
@_web_options
@_unit_options
@click.pass_context
def service_unit_web(ctx: click.Context, /, **_: Any) -> None:
    """Print a unit running `norc web` with these options (Type=simple: the web server
    does not notify). Put NORC_WEB_TOKEN (or NORC_WEB_USER and NORC_WEB_PASSWORD) in the
    environment file to listen beyond loopback."""
    _print_unit(ctx, "web", None)


# -- alerts ------------------------------------------------------------------------------


@cli.group()
def alert() -> None:
    """Alert rules: tell someone when tasks fail, recover, run late or go silent."""


@alert.command("add")
@click.argument("name")
@click.option(
    "--on",
    "events",
    required=True,
    help="Events, comma-separated: failure, success, recovered, output, late, missed, silent,"
    " daemon.",
)
@click.option("--task", "task_glob", metavar="GLOB", help="Only tasks whose name matches.")
@click.option("--schedule", "schedule_id", type=int, metavar="ID", help="Only this schedule.")
@click.option("--email", metavar="ADDRESS", help="Mail to this address (commas for several).")
@click.option(
    "--smtp", metavar="URL", help="smtp://host:port, smtps://..., ?starttls=1 (email only)."
)
@click.option("--webhook", metavar="URL", help="POST a JSON body to this URL.")
@click.option(
    "--format", "body_format", type=click.Choice(["json", "slack"]), help="Webhook body shape."
)
@click.option("--channel", metavar="NAME", help="A plugin's channel type (with --target).")
@click.option("--target", metavar="TEXT", help="Where --channel sends (its address, key...).")
@click.option("--late-after", metavar="DURATION", help="late: seconds (or 5m) after a fire time.")
@click.option("--within", metavar="DURATION", help="silent: the window for a SUCCESS, e.g. 26h.")
@click.option(
    "--rate-limit", type=int, metavar="N", help="At most N notifications a minute (default 10)."
)
@click.option("--replace", is_flag=True, help="Overwrite the rule of that name.")
@pass_ctx
def alert_add(
    c: Ctx,
    name: str,
    events: str,
    task_glob: str | None,
    schedule_id: int | None,
    email: str | None,
    smtp: str | None,
    webhook: str | None,
    body_format: str | None,
    channel: str | None,
    target: str | None,
    late_after: str | None,
    within: str | None,
    rate_limit: int | None,
    replace: bool,
) -> None:
    """Save an alert rule NAME (see docs/alerts.md)."""
    from norc.alerts.manage import describe

    rule = c.app.add_alert(
        name,
        on=events,
        task=task_glob,
        schedule=schedule_id,
        email=email,
        smtp=smtp,
        webhook=webhook,
        format=body_format,
        channel=channel,
        target=target,
        late_after=late_after,
        within=within,
        rate_limit=rate_limit,
        replace=replace,
    )
    shown = describe(c.app, rule)
    click.echo(f"alert {rule.name}: {','.join(shown['events'])} -> {shown['destination']}")


@alert.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_ctx
def alert_list(c: Ctx, as_json: bool) -> None:
    """The alert rules (destinations without passwords or webhook paths)."""
    from norc.alerts.manage import describe

    rows = [describe(c.app, rule) for rule in c.app.alerts()]
    for row in rows:
        if not as_json:
            row["events"] = ",".join(row["events"])
            row["options"] = " ".join(f"{k}={v:g}" for k, v in row["options"].items())
    emit(rows, ["name", "events", "task", "schedule", "destination", "options"], as_json)


@alert.command("remove")
@click.argument("name")
@pass_ctx
def alert_remove(c: Ctx, name: str) -> None:
    """Delete the rule NAME and its unsent notifications."""
    c.app.remove_alert(name)
    click.echo(f"removed alert {name}")


@alert.command("test")
@click.argument("name")
@pass_ctx
def alert_test(c: Ctx, name: str) -> None:
    """Send a test notification through NAME now; exit 2 if it fails."""
    record = c.app.test_alert(name)
    click.echo(f"alert {name}: test notification {record.id} sent")


@alert.command("history")
@click.option("--rule", "rule_name", metavar="NAME", help="Only this rule's notifications.")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_ctx
def alert_history(c: Ctx, rule_name: str | None, limit: int, as_json: bool) -> None:
    """Notifications, newest first, with their attempts and last error."""
    rows = [r.to_json() for r in c.app.alert_history(rule=rule_name, limit=limit)]
    emit(
        rows,
        [
            "id",
            "rule",
            "event",
            "subject",
            "status",
            "attempts",
            "created_at",
            "sent_at",
            "last_error",
        ],
        as_json,
    )
