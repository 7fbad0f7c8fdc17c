"""What an executor's slots run and hand back: a claimed instance with its job, and outcomes.

Shared by the two ways an executor runs instances: slot threads (thread isolation,
:mod:`norc.executor.executor`) and the one loop that drives every worker process
(process isolation, :mod:`norc.executor.workerloop`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from norc.abc import Task
from norc.logs import event_logger, open_log, open_new_log
from norc.records import InstanceRecord, TaskRecord
from norc.status import InstanceStatus

if TYPE_CHECKING:
    from norc.executor.dispatch import Dispatch


@attrs.define
class Work:
    """A claimed instance, ready to run: its records, its job and where it logs."""

    instance: InstanceRecord
    task: TaskRecord
    job: dict[str, Any]  # the instance's own part of the job
    template: dict[str, Any]  # the part all instances of the task revision share
    template_key: int
    log_key: str
    log_path: str  # a str, not a Path: building Paths per instance costs on the hot path
    cls: type[Task] | None
    load_error: str | None
    claimed_at: float  # time.monotonic() of the claim: for the claim-ahead's max wait


class Runner(Protocol):
    """What a slot or worker loop needs from its executor."""

    python: str | None
    _kill: bool
    _taking: threading.Event  # clear while paused, suspended or stopping
    _dispatch: Dispatch[Work]
    stats: dict[str, int]

    def suspend(self, reason: str) -> None:
        """Stop taking work: the host looks broken."""

    def _record(self, work: Work, outcome: dict[str, Any]) -> None:
        """Hand an outcome to the recorder and free the slot."""


class SlotState:
    """What the executor sees of one unit of concurrency, whichever runs it: the instance
    it is busy with, those sent ahead to start next (process isolation), and requests to
    interrupt them."""

    def __init__(self) -> None:
        self.busy_with: int | None = None
        #: Instances already handed to the slot's worker, to start in this order when the
        #: current one ends (see :mod:`norc.executor.workerloop`). Replaced, never mutated,
        #: so other threads can read it at any time.
        self.ahead_ids: tuple[int, ...] = ()
        self._interrupts: dict[int, str] = {}  # instance id -> why
        self._interrupt_all: str | None = None

    def interrupt(self, instance_id: int | None, reason: str) -> None:
        """Interrupt ``instance_id`` when (or while) the slot runs it; None: whatever it
        runs, from now on (a KILL).

        By id, because whoever decides it read ``busy_with`` a little earlier: by now
        the slot may run its next instance, which must not pay for the previous one.
        An instance sent ahead is interrupted as soon as it starts.
        """
        if instance_id is None:
            self._interrupt_all = reason
        else:
            self._interrupts[instance_id] = reason

    def interrupted(self) -> str | None:
        """Why what the slot runs now is to be interrupted, or None if it is not."""
        if self._interrupt_all is not None:
            return self._interrupt_all
        return None if self.busy_with is None else self._interrupts.get(self.busy_with)

    def ended(self) -> None:
        """The slot's instance is over (a pending interrupt for it is moot)."""
        if self.busy_with is not None:
            self._interrupts.pop(self.busy_with, None)
        self.busy_with = None

    def forget(self, instance_id: int) -> None:
        """An instance sent ahead went elsewhere: drop what was asked for it here."""
        self._interrupts.pop(instance_id, None)


def outcome(status: InstanceStatus, error: str | None) -> dict[str, Any]:
    """An outcome Norc decides itself (the task did not report one)."""
    return {
        "status": status.value,
        "error": error,
        "exit_code": None,
        "revision": None,
        "pid": None,
    }


def note(work: Work, message: str) -> None:
    """A warning from Norc in the instance's log (a kill, a timeout, a dead worker)."""
    with open_log(work.log_path) as f:
        event_logger(f, instance=work.instance.id).warning(message)


def stamp(
    outcome: dict[str, Any], started: datetime, ended: datetime | None = None
) -> dict[str, Any]:
    """Both times of a run, stamped as it ends (``ended``, else now), not when the recorder
    writes it: a write that waits (a batch, a database outage) must not lengthen the run."""
    outcome["started_at"] = started
    outcome["ended_at"] = ended or datetime.now(UTC)
    return outcome


def cannot_load(work: Work) -> dict[str, Any]:
    """The outcome of an instance whose task class could not be loaded (ERROR, logged)."""
    with open_new_log(work.log_path) as f:
        f.write(f"[norc] cannot run instance: {work.load_error}\n".encode())
    return outcome(InstanceStatus.ERROR, work.load_error)
