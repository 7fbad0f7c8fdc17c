"""Read-only snapshots of rows, as the API, reports and hooks hand them out, and the
vocabulary of their columns that every layer shares (task settings, the claimant)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from norc.status import InstanceStatus

#: Outcomes retried unless a task says otherwise.
DEFAULT_RETRY_ON = ("FAILURE", "TIMEDOUT", "INTERRUPTED")

#: The common settings every task has (its own columns), as opposed to its params.
TASK_SETTINGS = (
    "description",
    "timeout",
    "finally_timeout",
    "max_retries",
    "retry_delay",
    "retry_backoff",
    "retry_max_delay",
    "retry_jitter",
    "retry_on",
    "overlap",
    "concurrency_limit",
)


@attrs.frozen(kw_only=True)
class Claimant:
    """The executor that claims instances: recorded on each instance it takes."""

    executor_id: int
    host: str
    pid: int


@attrs.frozen(kw_only=True)
class InstanceRecord:
    """One execution of a task, as stored."""

    id: int
    task_id: int
    task_name: str
    task_type: str
    queue: str
    status: InstanceStatus
    priority: int = 0
    attempt: int = 1
    schedule_id: int | None = None
    fire_time: datetime | None = None
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    executor_id: int | None = None
    host: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    revision: str | None = None
    log_key: str | None = None
    log_location: str | None = None
    error: str | None = None
    first_attempt_id: int | None = None
    job_instance_id: int | None = None
    job_node: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, once both are known."""
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO 8601 times), as ``--json`` reports print it."""
        out: dict[str, Any] = {}
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            out[field.name] = (
                value.isoformat()
                if isinstance(value, datetime)
                else (str(value) if isinstance(value, InstanceStatus) else value)
            )
        out["duration"] = self.duration
        return out


@attrs.frozen(kw_only=True)
class TaskRecord:
    """A saved task: what it is, without loading its class."""

    id: int
    name: str
    type: str
    type_path: str
    plugin: str
    params: dict[str, Any]
    description: str
    timeout: float | None
    finally_timeout: float
    max_retries: int = 0
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    retry_max_delay: float = 3600.0
    retry_jitter: float = 0.1
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    overlap: str = "allow"
    concurrency_limit: int | None = None
    created_at: datetime | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """The common settings, as keyword arguments for ``Task.from_params``."""
        return {name: getattr(self, name) for name in TASK_SETTINGS}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = attrs.asdict(self)
        out["retry_on"] = list(self.retry_on)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


@attrs.frozen(kw_only=True)
class DaemonRecord:
    """An executor or scheduler process, as stored."""

    id: int
    kind: str
    host: str
    pid: int
    queue: str | None
    concurrency: int | None
    status: str
    request: str | None
    heartbeat: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = attrs.asdict(self)
        for key in ("heartbeat", "started_at", "ended_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


@attrs.frozen(kw_only=True)
class ScheduleRecord:
    """A schedule: when a task fires, onto which queue."""

    id: int
    task_id: int
    task_name: str
    queue: str
    priority: int
    kind: str
    spec: str
    #: The predefined name (``DAILY``) for predefined cron specs, else the spec.
    label: str
    timezone: str
    start_at: datetime | None
    period: float | None
    repetitions: int
    remaining: int | None
    make_up: bool
    next_fire_at: datetime | None
    #: The scheduler leasing it (valid while that scheduler's heartbeat is fresh).
    claimed_by: int | None
    #: No longer written (a lease lasts while its holder beats): None.
    lease_until: datetime | None
    paused: bool
    deleted: bool
    revision: int
    created_at: datetime | None = None
    #: Why a scheduler set it aside (firing failed, not for an outage); None while it fires.
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = attrs.asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out
