"""Steering daemons (requests, host-wide control, HANDLED) and settling dead ones.

The CLI and the web page both go through these functions: one implementation of each
request. A request is a column on the daemon's row; the daemon looks at it twice a
second (see :mod:`norc.daemon`) and acts.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from norc.alerts import events as alert_events
from norc.alerts.delivery import deliver_from_housekeeping
from norc.errors import NorcError, UnknownDaemon
from norc.lifecycle import after_end
from norc.records import DaemonRecord
from norc.status import DaemonStatus, InstanceStatus, Request

if TYPE_CHECKING:
    from norc.abc import Queue
    from norc.app import Norc

log = structlog.get_logger("norc.control")

#: What a daemon's row shows once it has carried out each request.
SETTLED_STATUS = {
    Request.STOP: {DaemonStatus.ENDED.value},
    Request.KILL: {DaemonStatus.KILLED.value, DaemonStatus.ENDED.value},
    Request.PAUSE: {DaemonStatus.PAUSED.value},
    Request.RESUME: {DaemonStatus.RUNNING.value},
    Request.RELOAD: None,  # nothing visible but the request being taken
}


class ControlError(NorcError, ValueError):
    """A request that cannot be delivered (the daemon ended, is not alive, wrong kind)."""


def is_alive(app: Norc, daemon: DaemonRecord, now: datetime | None = None) -> bool:
    """Whether a daemon has not ended and beat within the heartbeat timeout."""
    if daemon.ended_at is not None or daemon.heartbeat is None:
        return False
    age = ((now or datetime.now(UTC)) - daemon.heartbeat).total_seconds()
    return age < app.settings.heartbeat_timeout


def get_daemon(app: Norc, daemon_id: int, kind: str | None = None) -> DaemonRecord:
    """One daemon row; raises :class:`UnknownDaemon` (also for the wrong kind)."""
    found = app.db.daemons(daemon_id=daemon_id)
    if not found or (kind is not None and found[0].kind != kind):
        raise UnknownDaemon(kind or "daemon", daemon_id)
    return found[0]


def send(
    app: Norc, daemon_id: int, request: Request, *, kind: str | None = None, force: bool = False
) -> DaemonRecord:
    """Leave ``request`` for a live daemon.

    A daemon that is not alive cannot act: that is an error, unless ``force`` is given
    for STOP or KILL, which then ends its row and settles its work right here.
    """
    daemon = get_daemon(app, daemon_id, kind)
    if daemon.ended_at is not None:
        raise ControlError(f"{daemon.kind} {daemon_id} has already ended ({daemon.status})")
    if request is Request.RELOAD and daemon.kind != "scheduler":
        raise ControlError(f"RELOAD is for schedulers; {daemon_id} is an {daemon.kind}")
    if not is_alive(app, daemon):
        if force and request in (Request.STOP, Request.KILL):
            settle(
                app,
                daemon,
                threshold=None,
                reason=f"{daemon.kind} {daemon_id} on"
                f" {daemon.host} ended by a forced {request.value}",
            )
            return get_daemon(app, daemon_id)
        raise ControlError(
            f"{daemon.kind} {daemon_id} on {daemon.host} is not alive (last heartbeat"
            f" {_when(daemon.heartbeat)}); --force with --stop or --kill ends it here"
        )
    app.db.set_request([daemon_id], request.value)
    return get_daemon(app, daemon_id)


def send_to_host(app: Norc, host: str, request: Request) -> list[int]:
    """Leave ``request`` for every live daemon on ``host`` (RELOAD: its schedulers only)."""
    targets = [
        d.id
        for d in app.db.daemons()
        if d.host == host
        and is_alive(app, d)
        and (request is not Request.RELOAD or d.kind == "scheduler")
    ]
    return app.db.set_request(targets, request.value)


def wait(app: Norc, daemon_id: int, request: Request, timeout: float = 10.0) -> DaemonRecord:
    """Wait until a daemon has carried out ``request``; raises :class:`ControlError` on timeout."""
    wanted = SETTLED_STATUS[request]
    deadline = time.monotonic() + timeout
    while True:
        daemon = get_daemon(app, daemon_id)
        taken = daemon.request is None
        if taken and (wanted is None or daemon.status in wanted):
            return daemon
        if time.monotonic() > deadline:
            raise ControlError(
                f"{daemon.kind} {daemon_id} did not carry out {request.value} within"
                f" {timeout:g} s (status {daemon.status})"
            )
        time.sleep(0.05)


def handle_daemon(app: Norc, daemon_id: int) -> DaemonRecord:
    """Mark a daemon that ended in ERROR as HANDLED."""
    daemon = get_daemon(app, daemon_id)
    if daemon.status != DaemonStatus.ERROR.value:
        raise ControlError(f"{daemon.kind} {daemon_id} is {daemon.status}, not ERROR")
    app.db.set_daemon(daemon_id, status=DaemonStatus.HANDLED.value)
    return get_daemon(app, daemon_id)


def handle_instance(app: Norc, instance_id: int) -> None:
    """Mark a failed instance HANDLED."""
    record = app.instance(instance_id)
    if not app.db.mark_handled([instance_id]):
        raise ControlError(f"instance {instance_id} is {record.status.value}, not failed")


def settle(app: Norc, daemon: DaemonRecord, *, threshold: float | None, reason: str) -> list[int]:
    """End a dead daemon's row and interrupt the instances it had started; returns their ids.

    Interrupted instances are handed to the retry policy; their queue items are
    released in the same transaction, so nothing stays claimed by the dead. Instances
    it had claimed but never started (no start mark, see ``Database.mark_started``) go
    back to their queues as they were: QUEUED, no attempt used, no INTERRUPTED row.
    Where a queue cannot take work back, they are interrupted like the rest.
    """
    status = DaemonStatus.ERROR.value if threshold is not None else DaemonStatus.KILLED.value
    with app.db.transaction() as tx:
        interrupted, unstarted = app.db.end_dead_daemon(
            tx, daemon.id, threshold=threshold, status=status, reason=reason
        )
        alert_events.daemon_settled(app, tx, daemon, reason)
        given_back: list[int] = []
        for queue_name, ids in _by_queue(unstarted).items():
            queue = _queue_or_none(app, queue_name)
            back: list[int] = []
            if queue is not None and queue.can_give_back:
                back = app.db.give_back(tx, ids, daemon.id, unstarted_only=True)
                queue.give_back(back, tx)
                given_back += back
            # Where the queue cannot take them, or their start was recorded meanwhile.
            rest = [i for i in ids if i not in set(back)]
            app.db.interrupt(tx, rest, reason)
            interrupted += [(i, queue_name) for i in rest]
        for queue_name, ids in _by_queue(interrupted).items():
            queue = _queue_or_none(app, queue_name)
            if queue is not None:  # its plugin is not installed here: items stay
                queue.release(ids, tx)
        if interrupted:
            # Retries (as the task's policy allows) and Job progress, in this transaction.
            after_end(
                app,
                tx,
                [
                    (instance, task, InstanceStatus.INTERRUPTED)
                    for instance, task in app.db.claimed_work([i for i, _ in interrupted])
                ],
            )
    ids = [i for i, _ in interrupted]
    if ids or given_back:
        log.warning(
            "settled a dead daemon",
            daemon=daemon.id,
            instances=ids,
            given_back=given_back,
            reason=reason,
        )
    if ids:
        app.after_interrupt(ids)
    return ids


def _by_queue(pairs: list[tuple[int, str]]) -> dict[str, list[int]]:
    by_queue: dict[str, list[int]] = defaultdict(list)
    for instance_id, queue in pairs:
        by_queue[queue].append(instance_id)
    return by_queue


def _queue_or_none(app: Norc, name: str) -> Queue | None:
    try:
        return app.queue(name)
    except NorcError as exc:  # its plugin is not installed here
        log.warning("cannot reach queue", queue=name, error=str(exc))
        return None


def settle_dead(app: Norc) -> list[int]:
    """Find daemons whose heartbeat went stale and settle each (run by every live daemon)."""
    threshold = app.settings.heartbeat_timeout
    settled: list[int] = []
    for daemon in app.db.dead_daemons(threshold):
        reason = (
            f"{daemon.kind} {daemon.id} on {daemon.host} stopped beating at"
            f" {_when(daemon.heartbeat)}"
        )
        settled += settle(app, daemon, threshold=threshold, reason=reason)
    return settled


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "never"


def expire_jobs(app: Norc) -> list[int]:
    """End Job instances that ran past their timeout: nodes INTERRUPTED or SKIPPED."""
    from norc import jobs

    overdue = app.db.overdue_jobs(jobs.Job.type_name)
    for job_id, timeout in overdue:
        with app.db.transaction() as tx:
            jobs.cancel(app, tx, job_id, InstanceStatus.TIMEDOUT, f"timed out after {timeout:g} s")
    return [job_id for job_id, _ in overdue]


def housekeeping(app: Norc, *, trusted: bool) -> None:
    """What every live daemon does after a heartbeat: end overdue Jobs, once it is
    trusted (see :class:`norc.daemon.Heartbeat`) settle daemons that stopped beating,
    and look after alerts (late and silent events, sending the outbox)."""
    expire_jobs(app)
    if trusted:
        settle_dead(app)
    # Late fires and silent tasks are judged from the database, then the outbox is sent
    # from the handle's own thread: a slow mail server never holds up a heartbeat.
    deliver_from_housekeeping(app, app.alert_sender)
