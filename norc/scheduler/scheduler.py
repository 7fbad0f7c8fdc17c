"""The Scheduler: holds leases on a share of the schedules and fires them on time.

- **Leases.** A schedule is leased by the scheduler in its ``claimed_by`` for as long as
  that scheduler's daemon row is alive (not ended, heartbeat within
  ``heartbeat_timeout``): the heartbeat renews every lease at once, and no held row is
  written to keep it. Every ``heartbeat_interval`` the scheduler counts the schedules per
  holder and the live schedulers (two reads), gives back what exceeds its fair share
  and leases unowned schedules, and those of dead schedulers, up to it. A scheduler
  killed with ``kill -9`` stops beating; once its heartbeat is stale the others take
  its schedules over. A scheduler learns that it lost schedules (its own heartbeat went
  stale and another took them) when the count of rows it holds changes or when a fire
  finds the row claimed by another; it then forgets them.
- **Timing.** Next fire times sit in a heap; the scheduler sleeps until the earliest
  (or until the next lease round or change poll), never polling the database per tick.
  Twice a second it reads the (id, revision) of the schedules it holds that were edited
  since its last look, and re-reads only those whose revision it has not seen (paused,
  resumed, edited, deleted); it also checks whether a new unowned schedule appeared,
  and leases it. A change takes effect within a second.
- **Firing, exactly once.** All schedules due at a moment are fired in ONE transaction:
  their rows are locked (``FOR UPDATE``; ``BEGIN IMMEDIATE`` on SQLite) and re-checked
  (still leased by this scheduler, not paused, next fire unchanged), the instances
  inserted (a unique key on schedule and fire time makes a second insert impossible),
  ``next_fire_at``/``remaining`` advanced, and the instances pushed to their queues.
- **Faults.** A database outage (a refused or lost connection, a lock wait, a
  deadlock: :func:`norc.store.connections.is_outage`) is retried with a backoff of at
  most ``RETRY_CAP`` seconds, so fires resume within moments of the database's return.
  Anything else that fails a fire (a statement the database refuses, a bad row, a
  plugin's queue raising, a bug) is not retried as an outage: the fires due together
  are fired again one schedule per transaction, and a schedule that still fails is set
  aside (``error`` on its row, shown by ``norc report schedules`` and the web page)
  while every other schedule keeps firing. Editing or resuming it clears the error.
  While it holds a schedule set aside, or while its loop fails, the scheduler's status
  is ERROR and its daemon row's ``error`` says why; it goes back to RUNNING by itself.
- **Missed fires.** Fires that fell due while no scheduler ran them are handled by the
  schedule's ``make_up``: True enqueues each, in order; False records each as a SKIPPED
  instance with the reason and goes on with the next future fire. A fire counts as
  missed when it is more than ``misfire_grace`` seconds late (default 5). At most
  ``MAX_CATCH_UP`` (1,000) missed fires are recorded per schedule per catch-up; older
  ones are only counted in a warning.
"""

from __future__ import annotations

import heapq
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from norc.control import housekeeping
from norc.daemon import (
    DEFAULT_STOP_TIMEOUT,
    Heartbeat,
    SignalStop,
    daemon_logger,
    hostname,
    run_blocking,
)
from norc.enqueue import enqueue_rows
from norc.errors import DaemonSettled, DatabaseError, NorcError
from norc.lifecycle import overlap_verdict
from norc.logs import open_new_log
from norc.schedules.timing import Timing, timing_for
from norc.service import Notifier
from norc.status import DaemonStatus, InstanceStatus, Request
from norc.store.connections import is_outage
from norc.store.schema import utcnow

if TYPE_CHECKING:
    from norc.app import Norc

MAX_CATCH_UP = 1000
CHANGE_POLL = 0.5
ACQUIRE_BATCH = 5000
#: The longest wait between two tries while the loop fails (also kept under a third of
#: the heartbeat timeout): after an outage, fires resume well within the misfire grace.
RETRY_CAP = 2.0

log = structlog.get_logger("norc.scheduler")


class Scheduler:
    """Fires the schedules it leases; embeddable (``with``, ``start``/``stop``) or blocking."""

    def __init__(
        self,
        app: Norc,
        *,
        misfire_grace: float = 5.0,
        install_signal_handlers: bool = False,
        log_to_stderr: bool = False,
    ) -> None:
        self.app = app
        #: Also send its events through structlog (the ``norc scheduler`` command routes
        #: that to stderr); they always go to its log in the log store.
        self.log_to_stderr = log_to_stderr
        self.misfire_grace = timedelta(seconds=misfire_grace)
        self.install_signal_handlers = install_signal_handlers
        self.id: int | None = None
        self.status = DaemonStatus.CREATED
        self._heap: list[tuple[datetime, int, int]] = []  # (fire time, schedule id, revision)
        self._current: dict[int, int] = {}  # schedule id -> revision in the heap
        self._timings: dict[int, Timing] = {}  # schedule id -> its timing at _current's revision
        self._seen: dict[int, int] = {}  # schedule id -> last revision read (paused ones too)
        self._held: set[int] = set()  # ids claimed_by this scheduler, as far as it knows
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._dead = False  # settled as dead by another daemon while it was stalled
        #: The verdict, when another daemon settled this scheduler as dead.
        self.settled: DaemonSettled | None = None
        self._finished = threading.Event()
        self._paused = False
        self._reload = False
        self._thread: threading.Thread | None = None
        self._heartbeat: Heartbeat | None = None
        self._faults: dict[int, str] = {}  # schedule id -> why it is set aside (held ones)
        self._loop_error: str | None = None  # why the last round of the loop failed
        self.fired = 0  # instances enqueued by this scheduler (for benchmarks and tests)

    # -- public control --------------------------------------------------------------

    def start(self) -> Scheduler:
        """Register the scheduler and start firing; returns at once."""
        db = self.app.db
        self.id = db.insert_daemon(
            kind="scheduler",
            host=hostname(),
            pid=os.getpid(),
            queue=None,
            concurrency=None,
            status=DaemonStatus.RUNNING.value,
        )
        self.status = DaemonStatus.RUNNING
        self._log_file = open_new_log(str(self.app.daemon_log_path("scheduler", self.id)))
        self.log = daemon_logger(
            self._log_file, kind="scheduler", echo=self.log_to_stderr, scheduler=self.id
        )
        self.log.info("scheduler started", host=hostname(), pid=os.getpid())
        self._heartbeat = Heartbeat(
            db,
            self.id,
            self.app.settings.heartbeat_interval,
            self._on_request,
            lambda: self.shown_status.value,
            on_beat=lambda trusted: housekeeping(self.app, trusted=trusted),
            judge_after=self.app.settings.heartbeat_timeout,
            error=lambda: self.error,
            on_settled=self._on_settled,
        )
        self._heartbeat.start()
        self._thread = threading.Thread(target=self._loop, name="norc-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, timeout: float | None = None) -> bool:
        """Stop firing, give the leases back, end. True once ended."""
        self._stopping.set()
        self._wake.set()
        if self.id is None:
            return True
        return self._finished.wait(timeout)

    kill = stop  # nothing runs inside a scheduler, so KILL and STOP end it the same way

    def pause(self) -> None:
        """Stop firing (fires falling due meanwhile are missed); leases are kept."""
        self._paused = True
        self.status = DaemonStatus.PAUSED

    def resume(self) -> None:
        """Fire again after :meth:`pause`."""
        self._paused = False
        self.status = DaemonStatus.RUNNING
        self._wake.set()

    def reload(self) -> None:
        """Re-read every leased schedule from the database."""
        self._reload = True
        self._wake.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the scheduler has ended."""
        return self._finished.wait(timeout)

    def run(
        self,
        *,
        on_started: Callable[[], object] | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        notify: bool = False,
    ) -> None:
        """Start and block until ended. ``on_started`` runs once it has started (its
        :attr:`id` is known then).

        With ``install_signal_handlers``, SIGTERM, SIGINT and SIGQUIT stop it: nothing
        runs inside a scheduler, so it gives its leases back at once and ends (the
        ``stop_timeout`` of :class:`norc.daemon.SignalStop` never has to act). With
        ``notify``, a service manager hears READY, STOPPING and WATCHDOG (see
        :mod:`norc.service`).
        """

        def _stop() -> None:
            self._stopping.set()
            self._wake.set()

        run_blocking(
            self.start if self.id is None else None,
            self._finished,
            SignalStop(_stop, _stop, stop_timeout, stopping="giving the schedules back")
            if self.install_signal_handlers
            else None,
            on_started,
            notifier=Notifier.from_environment() if notify else None,
            alive=lambda: self._heartbeat.alive_at if self._heartbeat is not None else None,
        )

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def held(self) -> frozenset[int]:
        """Ids of the schedules this scheduler leases right now."""
        return frozenset(self._held)

    @property
    def set_aside(self) -> dict[int, str]:
        """The schedules it holds but does not fire, each with the error that set it aside."""
        return dict(self._faults)

    @property
    def shown_status(self) -> DaemonStatus:
        """The status the daemon row shows: ERROR while the scheduler cannot do all its
        work (its loop fails, or it holds a schedule set aside), else :attr:`status`."""
        if self.status is DaemonStatus.RUNNING and (self._loop_error or self._faults):
            return DaemonStatus.ERROR
        return self.status

    @property
    def error(self) -> str | None:
        """Why :attr:`shown_status` is ERROR (None when it is not)."""
        if self._loop_error:
            return self._loop_error
        if self._faults:
            first = min(self._faults)
            more = f" (and {len(self._faults) - 1} more)" if len(self._faults) > 1 else ""
            return f"schedule {first} set aside: {self._faults[first]}{more}"
        return None

    # -- the loop --------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        self.log.info("request received", request=request.value)
        if request in (Request.STOP, Request.KILL):
            self.stop(timeout=0)
        elif request is Request.PAUSE:
            self.pause()
        elif request is Request.RESUME:
            self.resume()
        elif request is Request.RELOAD:
            self.reload()

    def _loop(self) -> None:
        next_lease = 0.0
        next_poll = time.monotonic() + CHANGE_POLL
        last_poll = utcnow()
        backoff = 0.5
        cap = max(0.5, min(RETRY_CAP, self.app.settings.heartbeat_timeout / 3))
        try:
            while not self._stopping.is_set():
                try:
                    now = time.monotonic()
                    if now >= next_lease:
                        self._lease_round()
                        next_lease = now + self.app.settings.heartbeat_interval
                    if now >= next_poll:
                        polled_at = utcnow()
                        # The overlap tolerates clock skew between the hosts that edit.
                        self._apply_changes(last_poll - timedelta(seconds=5))
                        last_poll, next_poll = polled_at, now + CHANGE_POLL
                    if self._reload:
                        assert self.id is not None
                        self._reload = False
                        self._resync(self.app.db.schedules.held_ids(self.id))
                        self._load(self._held)
                    if not self._paused:
                        self._fire_due()
                    backoff = 0.5
                    if self._loop_error is not None:
                        self.log.info("scheduler recovered", after=self._loop_error)
                        self._loop_error = None
                except Exception as exc:  # the loop must outlive any fault
                    reason = _reason(exc)
                    if is_outage(exc):
                        self._loop_error = f"database unreachable: {reason}"
                        self.log.warning("database error; retrying", error=reason, retry_in=backoff)
                    else:
                        # Not an outage, so retrying may well fail the same way: say so
                        # loudly, with the traceback, and show ERROR until it recovers.
                        self._loop_error = reason
                        self.log.exception("scheduler loop failed; retrying", retry_in=backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, cap)
                    continue
                self._sleep(next_lease, next_poll)
        finally:
            self._shutdown()

    def _sleep(self, next_lease: float, next_poll: float) -> None:
        wake_at = min(next_lease, next_poll)
        if self._heap and not self._paused:
            due_in = (self._heap[0][0] - datetime.now(UTC)).total_seconds()
            wake_at = min(wake_at, time.monotonic() + due_in)
        timeout = wake_at - time.monotonic()
        if timeout > 0:
            self._wake.wait(timeout)
        self._wake.clear()

    # -- leases ----------------------------------------------------------------------

    def _lease_round(self) -> None:
        """Count, give back a surplus, lease up to a fair share: O(1) statements, no
        per-held-row writes (the heartbeat is what keeps the leases)."""
        assert self.id is not None
        store = self.app.db.schedules
        timeout = self.app.settings.heartbeat_timeout
        holders = store.holders()
        mine_total, mine_active = holders.get(self.id, (0, 0))
        if mine_total != len(self._held):
            # Schedules were taken over (our heartbeat went stale) or something else
            # changed hands: re-read which ones are ours.
            self._resync(store.held_ids(self.id))
        live = store.live_schedulers(timeout)
        if self.id not in live:
            if self._declared_dead():
                # Another daemon settled us as dead while we were stalled (a paused VM,
                # a stopped process). Our row is history now; carrying on under it would
                # only fight the others for schedules. End, so a supervisor starts afresh.
                self.log.error("declared dead by another daemon while stalled; ending")
                self._dead = True
                self._stopping.set()
                return
            # Our own heartbeat is stale: the others may take our schedules at any
            # moment, so leasing more now would only make them change hands again.
            self.log.warning("own heartbeat is stale; not leasing this round")
            return
        active = sum(busy for _, busy in holders.values())
        fair = math.ceil(active / len(live))
        surplus = mine_active - fair
        if len(live) > 1 and surplus > max(10, fair // 5):
            # Give back the schedules due last: the others can take them at leisure.
            released = store.release_latest(self.id, surplus)
            for schedule_id in released:
                self._drop(schedule_id)
            mine_active -= len(released)
            self.log.info("released schedules to rebalance", count=len(released), fair=fair)
        dead = [h for h in holders if h is not None and h != self.id and h not in live]
        takeable = holders.get(None, (0, 0))[1] + sum(holders[h][1] for h in dead)
        while mine_active < fair and takeable > 0:
            got = store.acquire(self.id, min(ACQUIRE_BATCH, fair - mine_active), timeout, dead)
            if not got:
                break
            if dead:
                self.log.info("took over schedules of dead schedulers", count=len(got))
            mine_active += len(got)
            takeable -= len(got)
            self._held |= set(got)
            self._load(got)

    def _resync(self, held: set[int]) -> None:
        """Make ``_held`` what the database says: forget lost schedules, load new ones."""
        lost = self._held - held
        for schedule_id in lost:
            self._drop(schedule_id)
        if lost:
            self.log.warning("schedules taken over by another scheduler", count=len(lost))
        gained = held - self._held
        self._held |= gained
        self._load(gained)

    def _forget(self, schedule_id: int) -> None:
        """Stop timing a schedule (its heap entry becomes stale and is skipped)."""
        self._current.pop(schedule_id, None)
        self._timings.pop(schedule_id, None)

    def _drop(self, schedule_id: int) -> None:
        """A schedule no longer ours (given back or taken over): forget it entirely."""
        self._forget(schedule_id)
        self._seen.pop(schedule_id, None)
        self._faults.pop(schedule_id, None)
        self._held.discard(schedule_id)

    def _set_aside(self, schedule_id: int, error: str) -> None:
        """Stop firing one schedule whose fire fails for a reason other than an outage,
        and record why on its row, so the others keep firing and a person can see it."""
        assert self.id is not None
        self.log.error("schedule set aside", schedule=schedule_id, error=error)
        self.app.db.schedules.set_aside(schedule_id, self.id, error)  # first: it may fail
        self._forget(schedule_id)
        self._faults[schedule_id] = error

    def _load(self, ids: set[int] | list[int]) -> None:
        if ids:
            for row in self.app.db.schedules.rows(list(ids)):
                self._track(row)

    def _track(self, row: dict[str, Any]) -> None:
        """Put a schedule row's next fire in the heap (or take it out)."""
        schedule_id = int(row["id"])
        revision = int(row["revision"])
        self._seen[schedule_id] = revision
        self._faults.pop(schedule_id, None)
        if row["deleted"] or row["paused"] or row["next_fire_at"] is None:
            self._forget(schedule_id)
            return
        if row["error"]:
            self._forget(schedule_id)
            self._faults[schedule_id] = str(row["error"])
            return
        if self._current.get(schedule_id) == revision and schedule_id in self._timings:
            return  # already tracked at this revision
        try:
            timing = timing_for(
                row["kind"], row["spec"], row["timezone"], row["start_at"], row["period"]
            )
        except NorcError as exc:
            self._set_aside(schedule_id, f"cannot be timed: {exc}")
            return
        self._timings[schedule_id] = timing
        self._current[schedule_id] = revision
        heapq.heappush(self._heap, (row["next_fire_at"], schedule_id, revision))

    def _apply_changes(self, since: datetime) -> None:
        """Take in edits to held schedules and lease new unowned ones (the change poll)."""
        assert self.id is not None
        store = self.app.db.schedules
        # Only (id, revision) pairs come back; full rows are read for revisions not
        # seen yet, so a bulk edit is read once, not at every poll of the overlap.
        unseen = [i for i, rev in store.edited_since(self.id, since) if self._seen.get(i) != rev]
        for row in store.rows(unseen):
            if row["claimed_by"] == self.id:
                self._held.add(int(row["id"]))
                self._track(row)
            else:  # taken over between the two reads
                self._drop(int(row["id"]))
        fresh = store.unowned_since(since, ACQUIRE_BATCH)
        if fresh:
            # New schedules: lease as many now rather than at the next lease round (which
            # evens out the shares). At most one batch per poll, so a bulk creation never
            # stalls the loop for long.
            got = store.acquire(self.id, fresh, self.app.settings.heartbeat_timeout)
            self._held |= set(got)
            self._load(got)

    # -- firing ----------------------------------------------------------------------

    def _fire_due(self) -> None:
        now = datetime.now(UTC)
        due: dict[int, tuple[datetime, int]] = {}
        while self._heap and self._heap[0][0] <= now:
            fire_at, schedule_id, revision = heapq.heappop(self._heap)
            if self._current.get(schedule_id) == revision:
                due[schedule_id] = (fire_at, revision)
        if not due:
            return
        try:
            self._fire(due, now)
            return
        except Exception as exc:  # noqa: BLE001 - sorted below: outage, or whose fault
            if is_outage(exc) or len(due) == 1:
                self._settle_failed(due, exc)
                return
            # One schedule's fault must not stop the others: fire each on its own.
            self.log.warning("firing together failed; firing one by one", error=_reason(exc))
        items = list(due.items())
        for index, (schedule_id, entry) in enumerate(items):
            try:
                self._fire({schedule_id: entry}, now)
            except Exception as exc:  # noqa: BLE001 - as above
                try:
                    self._settle_failed({schedule_id: entry}, exc)
                except Exception:
                    self._put_back(dict(items[index + 1 :]))  # the rest wait with it
                    raise

    def _settle_failed(self, due: dict[int, tuple[datetime, int]], exc: Exception) -> None:
        """After ``due`` failed to fire: for an outage, put it back and raise (the fires
        are delayed, never lost); else handle the one schedule's fault. Should handling
        it fail too, the fire is put back and the loop retries it, showing ERROR."""
        if not is_outage(exc):
            ((schedule_id, (fire_at, _)),) = due.items()
            try:
                self._fire_failed(schedule_id, fire_at, exc)
                return
            except Exception as again:  # noqa: BLE001 - re-raised below
                exc = again
        self._put_back(due)
        raise exc

    def _put_back(self, due: dict[int, tuple[datetime, int]]) -> None:
        for schedule_id, (fire_at, revision) in due.items():
            heapq.heappush(self._heap, (fire_at, schedule_id, revision))

    def _fire_failed(self, schedule_id: int, fire_at: datetime, exc: Exception) -> None:
        """One schedule's fire failed for a reason that is not an outage."""
        if isinstance(exc, IntegrityError) and self.app.db.schedules.fired(schedule_id, fire_at):
            # Another scheduler fired it (its lease and ours overlapped): the unique key
            # refused the duplicate. Re-read the schedule and carry on.
            self.log.warning("duplicate fire refused by the database", schedule=schedule_id)
            self._forget(schedule_id)
            if schedule_id in self._held:
                self._load([schedule_id])
            return
        self._set_aside(schedule_id, _reason(exc))

    def _fire(self, due: dict[int, tuple[datetime, int]], now: datetime) -> None:
        assert self.id is not None
        db = self.app.db
        follow_ups: list[tuple[datetime, int, int]] = []
        # Many schedules share a spec and fall due together: each next fire is computed once.
        next_fires: dict[tuple[Any, ...], datetime | None] = {}
        with db.transaction() as tx:
            rows = db.schedules.lock_for_fire(tx, self.id, list(due))
            if len(rows) < len(due):
                # A row missing is paused or deleted (the change poll brings that), or
                # claimed by another scheduler now: that one is no longer ours.
                missing = set(due) - {int(row["id"]) for row in rows}
                lost = missing - db.schedules.still_held(tx, self.id, missing)
                for schedule_id in lost:
                    self._drop(schedule_id)
                if lost:
                    self.log.warning("schedules taken over by another scheduler", count=len(lost))
            instance_rows: list[dict[str, Any]] = []
            task_types: list[str] = []
            changes = []
            orphans: list[tuple[int, int]] = []
            for row in rows:
                schedule_id = int(row["id"])
                fire_at, revision = due[schedule_id]
                if row["next_fire_at"] != fire_at or int(row["revision"]) != revision:
                    continue  # edited meanwhile: the change poll brings the new state
                if row["task_type"] is None:
                    orphans.append((schedule_id, int(row["task_id"])))
                    continue
                timing = self._timings[schedule_id]
                made, next_fire, remaining = self._plan(row, timing, now, next_fires)
                self._apply_overlap(tx, row, made)
                instance_rows.extend(made)
                task_types.extend([row["task_type"]] * len(made))
                changes.append(
                    {"id": schedule_id, "next_fire_at": next_fire, "remaining": remaining}
                )
                if next_fire is not None:
                    follow_ups.append((next_fire, schedule_id, revision))
            enqueue_rows(self.app, tx, instance_rows, task_types)
            db.schedules.advance(tx, changes)
        for schedule_id, task_id in orphans:
            self._set_aside(schedule_id, f"its task (id {task_id}) no longer exists")
        for entry in follow_ups:
            heapq.heappush(self._heap, entry)
        self.fired += sum(r["status"] == InstanceStatus.QUEUED.value for r in instance_rows)

    def _apply_overlap(self, tx: Any, row: dict[str, Any], made: list[dict[str, Any]]) -> None:
        """A run falling due while an earlier one is active: the overlap policy decides."""
        policy = row["overlap"] or row["task_overlap"]
        if policy in ("allow", "queue") or not made:
            return
        verdict = overlap_verdict(
            self.app, tx, int(row["task_id"]), policy, new_label=f"schedule {row['id']}"
        )
        if verdict is None:
            return
        for instance in made:
            if instance["status"] == InstanceStatus.QUEUED.value:
                instance.update(
                    status=InstanceStatus.SKIPPED.value,
                    error=verdict,
                    ended_at=instance["created_at"],
                    enqueued_at=None,
                )

    def _plan(
        self,
        row: dict[str, Any],
        timing: Timing,
        now: datetime,
        next_fires: dict[tuple[Any, ...], datetime | None] | None = None,
    ) -> tuple[list[dict[str, Any]], datetime | None, int | None]:
        """The instances for one due schedule, its next fire and remaining count.

        ``next_fires`` memoises ``timing.next_after`` by what determines it (kind, spec,
        timezone, start, period, fire time), shared by the schedules of one fire.
        """
        memo = {} if next_fires is None else next_fires
        shape = (row["kind"], row["spec"], row["timezone"], row["start_at"], row["period"])
        fires: list[datetime] = []
        fire: datetime | None = row["next_fire_at"]
        dropped = 0
        while fire is not None and fire <= now:
            fires.append(fire)
            if len(fires) > MAX_CATCH_UP:
                fires.pop(0)
                dropped += 1
            key = (*shape, fire)
            if key not in memo:
                memo[key] = timing.next_after(fire)
            fire = memo[key]
        if dropped:
            self.log.warning(
                "too many missed fires; older ones not recorded",
                schedule=row["id"],
                dropped=dropped,
                bound=MAX_CATCH_UP,
            )
        remaining: int | None = row["remaining"]
        made: list[dict[str, Any]] = []
        base = {
            "task_id": row["task_id"],
            "queue": row["queue"],
            "priority": row["priority"],
            "schedule_id": row["id"],
            "attempt": 1,
            "created_at": now,
        }
        for fire_time in fires:
            if remaining is not None and remaining <= 0:
                break
            late = now - fire_time > self.misfire_grace
            if late and not row["make_up"]:
                made.append(
                    {
                        **base,
                        "fire_time": fire_time,
                        "status": InstanceStatus.SKIPPED.value,
                        "ended_at": now,
                        "error": f"missed: due at {fire_time.isoformat()}, no scheduler ran"
                        f" it until {now.isoformat(timespec='seconds')}"
                        " (make_up is off)",
                    }
                )
                continue
            made.append(
                {
                    **base,
                    "fire_time": fire_time,
                    "status": InstanceStatus.QUEUED.value,
                    "enqueued_at": now,
                }
            )
            if remaining is not None:
                remaining -= 1
        if remaining is not None and remaining <= 0:
            fire = None  # ran out of repetitions
        return made, fire, remaining

    # -- ending ----------------------------------------------------------------------

    def _on_settled(self, exc: DaemonSettled) -> None:
        """Another daemon ended this scheduler's row while it could not beat: its leases
        are gone with it. End, so that a supervisor starts afresh (the CLI exits 2)."""
        self.log.error("declared dead by another daemon while stalled; ending", error=str(exc))
        self.settled = exc
        self._dead = True
        self._stopping.set()
        self._wake.set()

    def _declared_dead(self) -> bool:
        assert self.id is not None
        rows = self.app.db.daemons(daemon_id=self.id)
        return not rows or rows[0].ended_at is not None

    def _shutdown(self) -> None:
        assert self.id is not None
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for attempt in range(20):
            try:
                self.app.db.schedules.release(self.id)
                # A settled row keeps the verdict it was given.
                self.app.db.end_daemon(self.id, DaemonStatus.ENDED.value)
                break
            except (SQLAlchemyError, DatabaseError):
                time.sleep(min(2**attempt * 0.1, 5.0))
        self.status = DaemonStatus.ENDED
        self.log.info("scheduler ended", fired=self.fired)
        self._log_file.close()
        self.app.keep_daemon_log("scheduler", self.id)
        self._finished.set()


def _reason(exc: BaseException) -> str:
    """One line naming what failed: the driver's message for a database error."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
