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
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from norc.abc import QueueItem
from norc.control import housekeeping
from norc.daemon import Heartbeat, hostname, run_blocking
from norc.errors import DatabaseError, NorcError
from norc.lifecycle import overlap_verdict
from norc.logs import event_logger, open_new_log
from norc.schedules.timing import Timing, timing_for
from norc.status import DaemonStatus, InstanceStatus, Request
from norc.store.schema import utcnow

if TYPE_CHECKING:
    from norc.app import Norc

MAX_CATCH_UP = 1000
CHANGE_POLL = 0.5
ACQUIRE_BATCH = 5000

log = structlog.get_logger("norc.scheduler")


class Scheduler:
    """Fires the schedules it leases; embeddable (``with``, ``start``/``stop``) or blocking."""

    def __init__(
        self, app: Norc, *, misfire_grace: float = 5.0, install_signal_handlers: bool = False
    ) -> None:
        self.app = app
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
        self._finished = threading.Event()
        self._paused = False
        self._reload = False
        self._thread: threading.Thread | None = None
        self._heartbeat: Heartbeat | None = None
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
        self.log = event_logger(self._log_file, scheduler=self.id)
        self.log.info("scheduler started", host=hostname(), pid=os.getpid())
        self._heartbeat = Heartbeat(
            db,
            self.id,
            self.app.settings.heartbeat_interval,
            self._on_request,
            lambda: self.status.value,
            on_beat=lambda trusted: housekeeping(self.app, trusted=trusted),
            judge_after=self.app.settings.heartbeat_timeout,
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

    def run(self) -> None:
        """Start and block until ended; with ``install_signal_handlers`` SIGINT/SIGTERM stop."""

        def _on_signal(_signum: int) -> None:
            self._stopping.set()
            self._wake.set()

        run_blocking(
            self.start if self.id is None else None,
            self._finished,
            _on_signal if self.install_signal_handlers else None,
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
                except (SQLAlchemyError, DatabaseError) as exc:
                    self.log.warning(
                        "database error; retrying", error=str(exc).splitlines()[0], retry_in=backoff
                    )
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
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
        self._held.discard(schedule_id)

    def _load(self, ids: set[int] | list[int]) -> None:
        if ids:
            for row in self.app.db.schedules.rows(list(ids)):
                self._track(row)

    def _track(self, row: dict[str, Any]) -> None:
        """Put a schedule row's next fire in the heap (or take it out)."""
        schedule_id = int(row["id"])
        revision = int(row["revision"])
        self._seen[schedule_id] = revision
        if row["deleted"] or row["paused"] or row["next_fire_at"] is None:
            self._forget(schedule_id)
            return
        if self._current.get(schedule_id) == revision and schedule_id in self._timings:
            return  # already tracked at this revision
        try:
            timing = timing_for(
                row["kind"], row["spec"], row["timezone"], row["start_at"], row["period"]
            )
        except NorcError as exc:
            self.log.error("schedule cannot be timed", schedule=schedule_id, error=str(exc))
            self._forget(schedule_id)
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
        except IntegrityError as exc:
            # Another scheduler fired one of these (its lease and ours overlapped):
            # the unique key refused the duplicate. Re-read and carry on.
            self.log.warning(
                "duplicate fire refused by the database", error=str(exc.orig).splitlines()[0]
            )
            for schedule_id in due:
                self._forget(schedule_id)
            self._load([i for i in due if i in self._held])  # not those found lost
        except Exception:
            # Put them back so a transient failure delays the fires instead of losing them.
            for schedule_id, (fire_at, revision) in due.items():
                heapq.heappush(self._heap, (fire_at, schedule_id, revision))
            raise

    def _fire(self, due: dict[int, tuple[datetime, int]], now: datetime) -> None:
        assert self.id is not None
        db = self.app.db
        follow_ups: list[tuple[datetime, int, int]] = []
        pushes: dict[str, list[QueueItem]] = defaultdict(list)
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
            for row in rows:
                schedule_id = int(row["id"])
                fire_at, revision = due[schedule_id]
                if row["next_fire_at"] != fire_at or int(row["revision"]) != revision:
                    continue  # edited meanwhile: the change poll brings the new state
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
            ids = db.insert_instance_rows(tx, instance_rows)
            for instance_id, instance, task_type in zip(
                ids, instance_rows, task_types, strict=True
            ):
                if instance["status"] == InstanceStatus.QUEUED.value:
                    pushes[instance["queue"]].append(
                        QueueItem(
                            instance_id=instance_id,
                            task_type=task_type,
                            priority=instance["priority"],
                        )
                    )
            for queue_name, items in pushes.items():
                self.app.queue(queue_name).push(items, tx)
            db.schedules.advance(tx, changes)
        for entry in follow_ups:
            heapq.heappush(self._heap, entry)
        enqueued = sum(len(v) for v in pushes.values())
        self.fired += enqueued
        if self.app.plugins.has_hook_impls("norc_instance_queued"):
            queued = [item.instance_id for items in pushes.values() for item in items]
            for record in db.instances_by_id(queued):
                self.app.plugins.notify("norc_instance_queued", instance=record)

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
                if not self._dead:  # a settled row keeps the verdict it was given
                    self.app.db.set_daemon(
                        self.id, status=DaemonStatus.ENDED.value, ended_at=utcnow(), request=None
                    )
                break
            except (SQLAlchemyError, DatabaseError):
                time.sleep(min(2**attempt * 0.1, 5.0))
        self.status = DaemonStatus.ENDED
        self.log.info("scheduler ended", fired=self.fired)
        self._log_file.close()
        self.app.keep_daemon_log("scheduler", self.id)
        self._finished.set()
