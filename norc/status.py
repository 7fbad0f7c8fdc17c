"""Statuses of instances and daemons (the seed's names) and the groups reports filter by."""

from __future__ import annotations

import enum

from norc.errors import NorcError


class InstanceStatus(enum.StrEnum):
    """Where an instance (one execution of a task) is in its life."""

    CREATED = "CREATED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    #: The task's own failure: it returned False, raised, or its command exited non-zero.
    FAILURE = "FAILURE"
    #: Norc itself failed to run the task (missing task type, broken worker, ...).
    ERROR = "ERROR"
    TIMEDOUT = "TIMEDOUT"
    INTERRUPTED = "INTERRUPTED"
    #: Not run: a Job node whose parent failed, or a fire skipped by a schedule's rules.
    SKIPPED = "SKIPPED"
    #: An error somebody marked as dealt with.
    HANDLED = "HANDLED"

    @property
    def is_final(self) -> bool:
        """True once the instance will not change status by itself any more."""
        return self in FINAL_INSTANCE_STATUSES


FINAL_INSTANCE_STATUSES = frozenset(
    {
        InstanceStatus.SUCCESS,
        InstanceStatus.FAILURE,
        InstanceStatus.ERROR,
        InstanceStatus.TIMEDOUT,
        InstanceStatus.INTERRUPTED,
        InstanceStatus.SKIPPED,
        InstanceStatus.HANDLED,
    }
)


class DaemonStatus(enum.StrEnum):
    """Where an executor or scheduler is in its life."""

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    STOPPING = "STOPPING"
    #: An executor that saw a sign its host is broken; it takes no work until resumed.
    SUSPENDED = "SUSPENDED"
    ENDED = "ENDED"
    KILLED = "KILLED"
    ERROR = "ERROR"
    HANDLED = "HANDLED"


class Request(enum.StrEnum):
    """What the CLI or web page asks a running daemon to do."""

    STOP = "STOP"
    KILL = "KILL"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    RELOAD = "RELOAD"


#: Status groups used by ``--status`` filters in reports, as in the seed.
STATUS_GROUPS: dict[str, frozenset[InstanceStatus]] = {
    "active": frozenset({InstanceStatus.CREATED, InstanceStatus.QUEUED, InstanceStatus.RUNNING}),
    "running": frozenset({InstanceStatus.RUNNING}),
    "succeeded": frozenset({InstanceStatus.SUCCESS}),
    "failed": frozenset(
        {
            InstanceStatus.FAILURE,
            InstanceStatus.ERROR,
            InstanceStatus.TIMEDOUT,
            InstanceStatus.INTERRUPTED,
        }
    ),
    "final": FINAL_INSTANCE_STATUSES,
    "error": frozenset({InstanceStatus.ERROR}),
}


class UnknownStatus(NorcError, ValueError):
    """A ``--status`` filter names neither a status nor a group."""


def statuses_for(group_or_status: str) -> frozenset[InstanceStatus]:
    """Resolve a group name (``failed``) or a single status (``TIMEDOUT``), case-insensitively."""
    key = group_or_status.strip()
    if key.lower() in STATUS_GROUPS:
        return STATUS_GROUPS[key.lower()]
    try:
        return frozenset({InstanceStatus(key.upper())})
    except ValueError:
        choices = ", ".join([*STATUS_GROUPS, *(s.value for s in InstanceStatus)])
        raise UnknownStatus(
            f"unknown status or group {group_or_status!r} (choose from {choices})"
        ) from None
