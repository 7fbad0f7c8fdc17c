"""The JSON API under ``/api/``: one table of endpoints, used for routing and for OpenAPI.

Every handler is a plain function run in a worker thread (the database calls block);
it returns JSON-ready data or raises. A :class:`norc.errors.NorcError` becomes
``{"error": message}`` with 400, 404, 409 or 503, never a traceback. The overview data
comes from :mod:`norc.reports`, the same functions as ``norc status`` and ``norc report``.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from norc import control, reports
from norc.control import ControlError
from norc.errors import DatabaseError, LogNotFound, NorcError, UnknownName
from norc.status import STATUS_GROUPS, InstanceStatus, statuses_for
from norc.status import Request as DaemonRequest
from norc.web import queries
from norc.web.security import CSRF_HEADER, Guard, HTTPProblem
from norc.web.validation import (
    MAX_ID,
    MAX_INT32,
    MAX_NAME,
    MIN_INT32,
    NO_CONTROL,
    check_text,
    check_value,
    parse_integer,
)

if TYPE_CHECKING:
    from norc.app import Norc

log = structlog.get_logger("norc.web")

Handler = Callable[["Context"], Any]

_DURATION_PATTERN = r"^ *([0-9]+(?:\.[0-9]+)?) *([smhdwSMHDW]) *$"
_DURATION = re.compile(_DURATION_PATTERN)
_LEAP_SECOND = re.compile(r"(T\d\d:\d\d):60")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@attrs.frozen
class Param:
    """A query parameter: what OpenAPI says about it, and what the API accepts.

    An empty string value (``?since=``) is the same as leaving the parameter out; an
    integer parameter must be an integer.
    """

    name: str
    type: str = "string"
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 200
    #: A string's schema when more is known than its length (formats, choices).
    string_schema: dict[str, Any] | None = attrs.field(default=None, eq=False)

    def schema(self) -> dict[str, Any]:
        """Its JSON schema, as the OpenAPI document states it."""
        if self.string_schema is not None:
            return self.string_schema
        if self.type == "integer":
            out: dict[str, Any] = {"type": "integer", "format": "int64"}
            if self.minimum is not None:
                out["minimum"] = self.minimum
            if self.maximum is not None:
                out["maximum"] = self.maximum
            return out
        return {"type": "string", "maxLength": self.max_length, "pattern": NO_CONTROL}

    def check(self, text: str) -> None:
        """Refuse a value this parameter does not accept (a 400 naming it)."""
        check_text(self.name, text)
        if self.type == "integer":
            parse_integer(self.name, text, self.minimum, self.maximum)
        elif len(text) > self.max_length:
            raise HTTPProblem(400, f"{self.name} must be at most {self.max_length} characters")


@attrs.frozen
class Endpoint:
    """One API route: method, path, handler, and what OpenAPI says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    change: bool = False
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    #: Reachable without credentials even when reads need them (how to authenticate).
    public: bool = False

    @property
    def body_schema(self) -> dict[str, Any] | None:
        """The JSON schema of the body a change accepts (``{}`` when it takes none)."""
        if not self.change:
            return None
        return self.body if self.body is not None else NO_BODY


@attrs.frozen
class Context:
    """What a handler gets: the Norc handle, the request's parameters and JSON body."""

    app: Norc
    guard: Guard
    path: dict[str, Any]
    query: dict[str, str]
    body: dict[str, Any]

    def integer(self, name: str, default: int | None = None) -> int | None:
        """An integer query parameter (its range was checked against its :class:`Param`)."""
        text = self.query.get(name)
        if text is None or text == "":
            return default
        return parse_integer(name, text, None, None)

    def when(self, name: str, default: str | None) -> datetime | None:
        """A time parameter: ``10m``/``2h``/``1d``/``1w`` ago, or an ISO 8601 time."""
        text = self.query.get(name) or default
        if text is None:
            return None
        return parse_when(name, text)


#: Times in queries are clamped to this range, which every database stores.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def parse_when(name: str, text: str) -> datetime:
    """``10m``, ``2h``, ``1d``, ``1w`` ago, or an ISO 8601 time (UTC if it has no zone),
    in UTC and clamped to ``[EARLIEST, LATEST]`` (no instance is older or newer)."""
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        try:
            ago = timedelta(seconds=float(match[1]) * _UNITS[match[2].lower()])
            return max(datetime.now(UTC) - ago, EARLIEST)
        except OverflowError:
            return EARLIEST
    # RFC 3339 as well: a lowercase t or z, a leap second (read as :59), year 0000.
    iso = _LEAP_SECOND.sub(r"\1:59", text.upper().replace("Z", "+00:00"))
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        if iso.startswith("0000-"):
            return EARLIEST
        raise HTTPProblem(
            400, f"{name}={text!r} is neither a duration like 10m/1h/1d nor an ISO time"
        ) from None
    try:
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:  # beyond year 1 or 9999 once in UTC
        return LATEST if moment.year > 5000 else EARLIEST
    return min(max(moment, EARLIEST), LATEST)


def status_for(exc: NorcError) -> int:
    """The HTTP status a Norc error maps to."""
    if isinstance(exc, UnknownName | LogNotFound):
        return 404
    if isinstance(exc, ControlError):
        return 409
    if isinstance(exc, DatabaseError):
        return 503
    return 400


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one shape of every error: ``{"error": message}``."""
    return JSONResponse(
        {"error": message},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("norc")
    except PackageNotFoundError:
        return "unknown"


def _find(rows: list[dict[str, Any]], ident: int, what: str) -> dict[str, Any]:
    for row in rows:
        if row["id"] == ident:
            return row
    raise HTTPProblem(404, f"unknown {what} {ident}")


# -- handlers ------------------------------------------------------------------------------


def session(c: Context) -> dict[str, Any]:
    """What the page needs to talk to the API."""
    return {
        "csrf_token": c.guard.csrf_token,
        "csrf_header": CSRF_HEADER,
        "read_only": c.guard.read_only,
        "require_auth": c.guard.require_auth,
        "auth": {"token": c.guard.token is not None, "basic": c.guard.user is not None},
        "version": _version(),
    }


def status(c: Context) -> dict[str, Any]:
    """``norc status``: live daemons, queues, instance counts and failures since ``since``."""
    since = c.when("since", "1h")
    assert since is not None
    data: dict[str, Any] = reports.status(c.app, since=since)
    return data


def executors(c: Context) -> list[dict[str, Any]]:
    """``norc report executors``."""
    return reports.daemons(
        c.app, "executor", since=c.when("since", None), limit=c.integer("limit", 50)
    )


def schedulers(c: Context) -> list[dict[str, Any]]:
    """``norc report schedulers``."""
    return reports.daemons(
        c.app, "scheduler", since=c.when("since", None), limit=c.integer("limit", 50)
    )


def queues_(c: Context) -> list[dict[str, Any]]:
    """``norc report queues``."""
    return reports.queues(c.app)


def alerts_(c: Context) -> list[dict[str, Any]]:
    """``norc alert list --json``: the rules, destinations without their secrets."""
    from norc.alerts.manage import describe

    return [describe(c.app, rule) for rule in c.app.alerts()]


def alert_history(c: Context) -> list[dict[str, Any]]:
    """``norc alert history --json``: notifications, newest first."""
    return [r.to_json() for r in c.app.alert_history(limit=c.integer("limit", 100) or 100)]


def tasks_(c: Context) -> list[dict[str, Any]]:
    """``norc report tasks``, counting instances since ``since`` (default 1d)."""
    return reports.tasks(c.app, since=c.when("since", "1d"))


def task(c: Context) -> dict[str, Any]:
    """One task: its report row, its record, its schedules with their next fires."""
    task_id = int(c.path["task_id"])
    record = c.app.task_record(task_id)
    row = _find(
        reports.tasks(c.app, since=c.when("since", "1d"), task=record.name), task_id, "task"
    )
    schedules = reports.schedules_(c.app, task=record.name)
    for s in schedules:
        s["next_fires"] = queries.next_fires(c.app, s["id"], 3)
    return {"task": row, "record": record.to_json(), "schedules": schedules}


def task_runs(c: Context) -> dict[str, Any]:
    """A task's latest runs, for its duration and lateness charts."""
    task_id = int(c.path["task_id"])
    c.app.task_record(task_id)
    since = c.when("since", "1d")
    assert since is not None
    runs = queries.task_runs(
        c.app,
        task_id,
        since=since,
        until=c.when("until", None),
        limit=c.integer("limit", 200) or 200,
    )
    return {"task_id": task_id, "runs": runs}


def run_task(c: Context) -> dict[str, Any]:
    """Enqueue one instance of a task now."""
    task_id = int(c.path["task_id"])
    queue = c.body.get("queue") or "default"  # types and ranges checked against the schema
    priority = c.body.get("priority", 0)
    instance_id = c.app.enqueue(task_id, queue=queue, priority=priority)
    return {
        "instance_id": instance_id,
        "instance": queries.instance_json(c.app.instance(instance_id)),
    }


def schedules_(c: Context) -> list[dict[str, Any]]:
    """``norc report schedules`` (of one task with ``task=NAME``)."""
    return reports.schedules_(c.app, task=c.query.get("task") or None)


def schedule(c: Context) -> dict[str, Any]:
    """One schedule: its report row, its record, its next ten fires."""
    schedule_id = int(c.path["schedule_id"])
    record = c.app.schedule(schedule_id)
    row = _find(
        reports.schedules_(c.app, task=record.task_name, include_deleted=True),
        schedule_id,
        "schedule",
    )
    return {
        "schedule": row,
        "record": record.to_json(),
        "next_fires": queries.next_fires(c.app, schedule_id, 10),
    }


def pause_schedule(c: Context) -> dict[str, Any]:
    """Pause a schedule."""
    schedule_id = int(c.path["schedule_id"])
    c.app.pause_schedule(schedule_id)
    return {"schedule": c.app.schedule(schedule_id).to_json()}


def resume_schedule(c: Context) -> dict[str, Any]:
    """Resume a schedule from its next fire after now."""
    schedule_id = int(c.path["schedule_id"])
    c.app.resume_schedule(schedule_id)
    return {"schedule": c.app.schedule(schedule_id).to_json()}


def instances(c: Context) -> dict[str, Any]:
    """A page of instances, newest first, with the ``before_id`` of the next page."""
    since = c.when("since", "1h")
    assert since is not None
    status_text = c.query.get("status")
    task_ids: list[int] | None = None
    if c.query.get("task_id"):
        task_ids = [c.integer("task_id") or 0]
    elif c.query.get("task"):
        task_ids = queries.matching_task_ids(c.app, c.query["task"])
    records, next_before = queries.page_of_instances(
        c.app,
        since=since,
        until=c.when("until", None),
        statuses=statuses_for(status_text) if status_text else None,
        task_ids=task_ids,
        queue=c.query.get("queue") or None,
        executor_id=c.integer("executor"),
        schedule_id=c.integer("schedule"),
        before_id=c.integer("before_id"),
        limit=c.integer("limit", 50) or 50,
    )
    return {
        "instances": [queries.instance_json(r) for r in records],
        "next_before_id": next_before,
    }


def instance(c: Context) -> dict[str, Any]:
    """One instance."""
    record = c.app.instance(int(c.path["instance_id"]))
    return {"instance": queries.instance_json(record)}


def instance_log(c: Context) -> dict[str, Any]:
    """A chunk of an instance's log, from ``offset`` (negative: from the end)."""
    return queries.instance_log(
        c.app,
        int(c.path["instance_id"]),
        offset=_offset(c),
        limit=c.integer("limit", 256 * 1024) or 1,
    )


def handle_instance(c: Context) -> dict[str, Any]:
    """Mark a failed instance HANDLED."""
    instance_id = int(c.path["instance_id"])
    control.handle_instance(c.app, instance_id)
    return {"instance": queries.instance_json(c.app.instance(instance_id))}


def stop_instance(c: Context) -> dict[str, Any]:
    """Stop an instance: QUEUED becomes SKIPPED, RUNNING INTERRUPTED, a Job with its nodes."""
    stopped = c.app.stop_instance(int(c.path["instance_id"]), reason="stopped from the web page")
    return {"stopped": stopped}


def job_run(c: Context) -> dict[str, Any]:
    """A Job run: its instance and its nodes in dependency order, as ``norc job show``."""
    instance_id = int(c.path["instance_id"])
    record = c.app.instance(instance_id)
    try:
        nodes = reports.job_nodes(c.app, record.task_name, instance_id=instance_id)
    except NorcError as exc:
        if status_for(exc) != 400:
            raise
        # Not a Job, or not a run of it: no such Job run behind this address.
        raise HTTPProblem(404, f"instance {instance_id} is not a Job run: {exc}") from None
    return {"instance": record.to_json(), "job": record.task_name, "nodes": nodes}


def daemon(c: Context) -> dict[str, Any]:
    """One executor or scheduler, as ``norc report executors/schedulers`` shows it."""
    daemon_id = int(c.path["daemon_id"])
    record = control.get_daemon(c.app, daemon_id)
    rows = reports.daemons(c.app, record.kind, limit=None)
    return {"daemon": _find(rows, daemon_id, record.kind)}


def daemon_log(c: Context) -> dict[str, Any]:
    """A chunk of a daemon's own log."""
    return queries.daemon_log(
        c.app,
        int(c.path["daemon_id"]),
        offset=_offset(c),
        limit=c.integer("limit", 256 * 1024) or 1,
    )


def _request_from_body(c: Context) -> DaemonRequest:
    value = c.body.get("request")
    try:
        return DaemonRequest(str(value).upper())
    except ValueError:
        choices = ", ".join(r.value for r in DaemonRequest)
        raise HTTPProblem(400, f"request must be one of {choices}, got {value!r}") from None


def daemon_request(c: Context) -> dict[str, Any]:
    """Send STOP, KILL, PAUSE, RESUME or RELOAD to a live daemon."""
    daemon_id = int(c.path["daemon_id"])
    record = c.app.request(
        daemon_id,
        _request_from_body(c),
        force=c.body.get("force", False),
        wait=c.body.get("wait", False),
        timeout=float(c.body.get("timeout", 10.0)),
    )
    return {"daemon": record.to_json()}


def handle_daemon(c: Context) -> dict[str, Any]:
    """Mark a daemon that ended in ERROR as HANDLED."""
    return {"daemon": control.handle_daemon(c.app, int(c.path["daemon_id"])).to_json()}


def host_request(c: Context) -> dict[str, Any]:
    """Send a request to every live daemon on one host."""
    ids = c.app.request_host(str(c.path["host"]), _request_from_body(c))
    return {"host": c.path["host"], "daemons": ids}


def chart_instances(c: Context) -> dict[str, Any]:
    """Instances created per status and time bucket, over ``[since, until)``; ``until``
    must be after ``since`` (a 400 otherwise)."""
    since = c.when("since", "1h")
    assert since is not None
    until = c.when("until", None) or datetime.now(UTC)
    if until <= since:
        raise HTTPProblem(400, "until must be after since")
    return queries.instances_over_time(
        c.app, since=since, until=until, buckets=c.integer("buckets", 30) or 30
    )


def _offset(c: Context) -> int:
    return c.integer("offset", 0) or 0


# -- the table -----------------------------------------------------------------------------

#: A time: empty (the default), a duration ago, or an ISO 8601 / RFC 3339 time.
_WHEN = {
    "anyOf": [
        {"type": "string", "maxLength": 0},
        {"type": "string", "pattern": _DURATION_PATTERN, "maxLength": 64},
        {"type": "string", "format": "date-time", "maxLength": 64},
        {"type": "string", "format": "date"},
    ]
}
_SINCE = Param(
    "since",
    description="10m, 1h, 1d, 1w ago, or an ISO 8601 time (clamped to 1970-01-01..9999-01-01)",
    max_length=64,
    string_schema=_WHEN,
)
_UNTIL = Param(
    "until",
    description="10m, 1h, 1d, 1w ago, or an ISO 8601 time (default: now; clamped to"
    " 1970-01-01..9999-01-01)",
    max_length=64,
    string_schema=_WHEN,
)
_ROWS = Param("limit", "integer", "at most this many rows", minimum=1, maximum=queries.MAX_PAGE)
_DAEMON_ROWS = Param("limit", "integer", "at most this many rows", minimum=1, maximum=1000)
_LOG_LIMIT = Param(
    "limit",
    "integer",
    "at most this many bytes (default 256 KiB)",
    minimum=1,
    maximum=queries.MAX_LOG_CHUNK,
)
_OFFSET = Param(
    "offset",
    "integer",
    "first byte to return; negative counts from the end",
    minimum=-MAX_ID,
    maximum=MAX_ID,
)


def _id_param(name: str, description: str = "") -> Param:
    return Param(name, "integer", description, minimum=1, maximum=MAX_ID)


#: A change without parameters takes no body, or ``{}``.
NO_BODY: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}
_REQUEST_BODY = {
    "type": "object",
    "required": ["request"],
    "additionalProperties": False,
    "properties": {
        "request": {
            "type": "string",
            "enum": [r.value for r in DaemonRequest] + [r.value.lower() for r in DaemonRequest],
        },
        "force": {"type": "boolean", "description": "end a daemon that is no longer alive"},
        "wait": {"type": "boolean", "description": "return once carried out"},
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 15,
            "description": "with wait: seconds to wait at most (default 10)",
        },
    },
}
_RUN_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "queue": {
            "type": "string",
            "maxLength": MAX_NAME,
            "pattern": NO_CONTROL,
            "description": "the queue (default: default; an empty string is the default)",
        },
        "priority": {
            "type": "integer",
            "format": "int32",
            "minimum": MIN_INT32,
            "maximum": MAX_INT32,
            "description": "higher is claimed first (default 0)",
        },
    },
}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/session", session, "CSRF token and authentication modes", public=True),
    Endpoint(
        "GET", "/api/status", status, "Overview: live daemons, queues, counts", params=(_SINCE,)
    ),
    Endpoint("GET", "/api/executors", executors, "Executors", params=(_SINCE, _DAEMON_ROWS)),
    Endpoint("GET", "/api/schedulers", schedulers, "Schedulers", params=(_SINCE, _DAEMON_ROWS)),
    Endpoint("GET", "/api/queues", queues_, "Queues with depth and consumers"),
    Endpoint("GET", "/api/alerts", alerts_, "Alert rules (no secrets)"),
    Endpoint(
        "GET",
        "/api/alerts/history",
        alert_history,
        "Alert notifications, newest first",
        params=(Param("limit", "integer", "at most this many rows", minimum=1, maximum=1000),),
    ),
    Endpoint("GET", "/api/tasks", tasks_, "Tasks with counts since `since`", params=(_SINCE,)),
    Endpoint("GET", "/api/tasks/{task_id:id}", task, "One task", params=(_SINCE,)),
    Endpoint(
        "GET",
        "/api/tasks/{task_id:id}/runs",
        task_runs,
        "A task's latest runs: duration and lateness",
        params=(_SINCE, _UNTIL, _ROWS),
    ),
    Endpoint(
        "POST",
        "/api/tasks/{task_id:id}/run",
        run_task,
        "Enqueue one instance now",
        change=True,
        body=_RUN_BODY,
    ),
    Endpoint(
        "GET",
        "/api/schedules",
        schedules_,
        "Schedules",
        params=(Param("task", description="only this task's (its name)", max_length=MAX_NAME),),
    ),
    Endpoint("GET", "/api/schedules/{schedule_id:id}", schedule, "One schedule and next fires"),
    Endpoint("POST", "/api/schedules/{schedule_id:id}/pause", pause_schedule, "Pause", change=True),
    Endpoint(
        "POST", "/api/schedules/{schedule_id:id}/resume", resume_schedule, "Resume", change=True
    ),
    Endpoint(
        "GET",
        "/api/instances",
        instances,
        "A page of instances, newest first",
        params=(
            _SINCE,
            _UNTIL,
            Param(
                "status",
                description="a group (active, running, succeeded, failed, final,"
                " error) or a status, case-insensitive",
                string_schema={
                    "type": "string",
                    "enum": ["", *STATUS_GROUPS, *(s.value for s in InstanceStatus)],
                },
            ),
            Param("task", description="task names containing this", max_length=MAX_NAME),
            _id_param("task_id", "task id"),
            Param("queue", max_length=MAX_NAME),
            _id_param("executor", "executor id"),
            _id_param("schedule", "schedule id"),
            _id_param("before_id", "the next page: `next_before_id` of the last"),
            _ROWS,
        ),
    ),
    Endpoint("GET", "/api/instances/{instance_id:id}", instance, "One instance"),
    Endpoint(
        "GET",
        "/api/instances/{instance_id:id}/log",
        instance_log,
        "A chunk of an instance's log",
        params=(_OFFSET, _LOG_LIMIT),
    ),
    Endpoint(
        "POST",
        "/api/instances/{instance_id:id}/handle",
        handle_instance,
        "Mark a failed instance HANDLED",
        change=True,
    ),
    Endpoint(
        "POST",
        "/api/instances/{instance_id:id}/stop",
        stop_instance,
        "Stop a queued or running instance (a Job run with all its nodes)",
        change=True,
    ),
    Endpoint(
        "GET",
        "/api/jobs/{instance_id:id}",
        job_run,
        "A Job run: its instance and its nodes in dependency order",
    ),
    Endpoint("GET", "/api/daemons/{daemon_id:id}", daemon, "One executor or scheduler"),
    Endpoint(
        "GET",
        "/api/daemons/{daemon_id:id}/log",
        daemon_log,
        "A chunk of a daemon's own log",
        params=(_OFFSET, _LOG_LIMIT),
    ),
    Endpoint(
        "POST",
        "/api/daemons/{daemon_id:id}/request",
        daemon_request,
        "STOP, KILL, PAUSE, RESUME or RELOAD a daemon",
        change=True,
        body=_REQUEST_BODY,
    ),
    Endpoint(
        "POST",
        "/api/daemons/{daemon_id:id}/handle",
        handle_daemon,
        "Mark a daemon that ended in ERROR as HANDLED",
        change=True,
    ),
    Endpoint(
        "POST",
        "/api/hosts/{host}/request",
        host_request,
        "Send a request to every live daemon on a host",
        change=True,
        body=_REQUEST_BODY,
    ),
    Endpoint(
        "GET",
        "/api/charts/instances",
        chart_instances,
        "Instances per status and time bucket (until must be after since)",
        params=(
            _SINCE,
            _UNTIL,
            Param(
                "buckets",
                "integer",
                "how many buckets (default 30)",
                minimum=1,
                maximum=queries.MAX_BUCKETS,
            ),
        ),
    ),
)


def make_endpoint(
    endpoint: Endpoint, app: Norc, guard: Guard
) -> Callable[[Request], Awaitable[Response]]:
    """The ASGI endpoint of one table row: checks, body, handler in a thread, errors."""

    async def run(request: Request) -> Response:
        try:
            if endpoint.change:
                guard.check_change(request)
            elif endpoint.public:
                guard.check_host(request)  # the CSRF token goes to this server's names only
            else:
                guard.check_read(request)
            path = _checked_path(endpoint, dict(request.path_params))
            query = _checked_query(endpoint, dict(request.query_params))
            body: dict[str, Any] = {}
            schema = endpoint.body_schema
            if schema is not None:
                body = _parse_body(await _read_body(request))
                check_value("the request body", body, schema)
            ctx = Context(app=app, guard=guard, path=path, query=query, body=body)
            result = await run_in_threadpool(endpoint.handler, ctx)
            return JSONResponse(reports.jsonable(result), headers={"Cache-Control": "no-store"})
        except HTTPProblem as problem:
            return error_response(problem.status, problem.message, problem.headers)
        except NorcError as exc:
            return error_response(status_for(exc), _public_message(app, guard, exc))
        except Exception as exc:  # noqa: BLE001 (logged by log_crash)
            log_crash(guard, request, exc)
            return error_response(500, "internal error (details are in the server's log)")

    run.__name__ = endpoint.handler.__name__
    return run


#: The largest request body a change accepts.
MAX_BODY = 64 * 1024
#: What a path's id is named in a 404 (``task_id`` → ``task``).
_ID_NAMES = {"task_id": "task", "schedule_id": "schedule", "daemon_id": "daemon"}


class IdConvertor(Convertor[int]):
    """``{name:id}``: a positive decimal id of at most 19 digits (longer ones are a 404)."""

    regex = "[0-9]{1,19}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


def _checked_path(endpoint: Endpoint, path: dict[str, Any]) -> dict[str, Any]:
    for name, value in path.items():
        if isinstance(value, int) and not 1 <= value <= MAX_ID:
            what = _ID_NAMES.get(name, "instance")
            raise HTTPProblem(404, f"unknown {what} {value}")
        if isinstance(value, str):
            check_text(name, value)
            if len(value) > MAX_NAME:
                raise HTTPProblem(400, f"{name} must be at most {MAX_NAME} characters")
    return path


def _checked_query(endpoint: Endpoint, query: dict[str, str]) -> dict[str, str]:
    declared = {p.name: p for p in endpoint.params}
    for name, text in query.items():
        check_text("a query parameter's name", name)
        if name in declared:
            param = declared[name]
            if text != "" or param.type == "integer":
                param.check(text)
        else:
            check_text(name[:40], text)
    return query


async def _read_body(request: Request) -> bytes:
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > MAX_BODY:
        raise HTTPProblem(413, f"the request body is larger than {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise HTTPProblem(413, f"the request body is larger than {MAX_BODY} bytes")
    return raw


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise HTTPProblem(400, "the request body is not JSON") from None
    if not isinstance(parsed, dict):
        raise HTTPProblem(400, "the request body must be a JSON object")
    return parsed


def _public_message(app: Norc, guard: Guard, exc: NorcError) -> str:
    """A Norc error's message for a client: no secrets, no absolute log directory."""
    text = guard.scrub(str(exc))
    log_dir = app.settings.log_dir
    for place in sorted({str(log_dir.resolve()), str(log_dir)}, key=len, reverse=True):
        text = text.replace(place, "<log dir>")
    return text


def log_crash(guard: Guard, request: Request, exc: BaseException) -> None:
    """Log an unexpected failure: its traceback as text, without any frame's locals
    (structlog's ``dict_tracebacks`` and rich tracebacks would print them, and with them
    the guard's secrets), and with the guard's secrets and URL passwords scrubbed."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.error(
        "web API request failed",
        path=request.url.path,
        error=guard.scrub(f"{type(exc).__name__}: {exc}"),
        exception=guard.scrub(text),
    )


def routes(app: Norc, guard: Guard) -> list[Route]:
    """The API's routes."""
    return [Route(e.path, make_endpoint(e, app, guard), methods=[e.method]) for e in ENDPOINTS]
