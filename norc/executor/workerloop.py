"""Process isolation: one thread drives every worker process of an executor.

Each *lane* is one unit of concurrency: a reusable worker process
(:class:`~norc.executor.worker.WorkerProcess`) and the instance it runs. The loop
``poll()``\\ s the answer pipes of all lanes at once, and whenever a lane is free it takes
the next claimed instance from the dispatch and sends it at once; timeouts are deadlines
checked on every turn. A thread per lane, blocked on its own pipe, cost a thread switch
and a GIL hand-off per instance: on two cores a quarter of the executor's CPU went to
the scheduler (``perf``: ``finish_task_switch``).

A lane moves through these phases::

    idle --send job--> run --"ran", done--> idle
                        |  \\--"ran"--> finally --"done" or finally_timeout--> idle
                        \\--timeout or interrupt: kill the process group-->
                            fresh --"done" or finally_timeout--> idle

``fresh``: ``finally_`` runs in a new worker after the old one was killed. What is
recorded for each path is the same as with slot threads (thread isolation).

**Sending ahead.** When every lane is busy and claimed work is waiting, a lane whose
current run is short is sent its next instances too: the worker starts each the moment
it answers for the one before, instead of sleeping until this thread reads the answer
and replies (which, sharing the GIL with the claim and recorder threads, can take a
millisecond; and a process that sleeps and is woken per instance costs CPU in the
kernel). A job in a pipe cannot be taken back, so a lane is only sent one while the
work in front of it is *known to be short*: every run in the lane (the current one and
those already sent ahead) belongs to a task whose recent runs average a known time, has
no ``finally_`` (one answer per run), and together they are expected to take less than
:data:`SEND_AHEAD_WORK`; at most :data:`SEND_AHEAD_DEPTH` jobs wait in a pipe, and only
while the executor takes new work. A long task may be sent ahead behind a short one (it
starts as soon as that ends), but nothing is sent behind it. An instance sent ahead is
timed from its real start (the worker's clock, reported with each answer), and so is its
deadline. If the lane's worker is killed (a timeout, an interrupt, a KILL) or dies
before it started, it goes back to the front of the dispatch; if answers crossed the
kill, the instances that the worker may have begun are recorded INTERRUPTED rather than
risk running them twice. A worker runs what it is sent ahead, and what it is sent
while more work waits, as a batch process (``SCHED_BATCH``, see
:class:`norc.executor.worker._Scheduling`).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import structlog

from norc.abc import Task
from norc.executor.work import Runner, SlotState, Work, cannot_load, note, outcome, stamp
from norc.executor.worker import WorkerDied, WorkerProcess
from norc.status import InstanceStatus

log = structlog.get_logger("norc.executor")

#: How often interrupts (kill requests, instances ended from outside) are looked at.
INTERRUPT_CHECK = 0.1
#: Send a lane its next instance only while the runs in front of it (the current one and
#: those sent ahead, by their tasks' moving averages) are expected to take less than this
#: (seconds): no instance waits in a pipe longer than about this, nor does a pause.
SEND_AHEAD_WORK = 0.005
#: At most this many instances wait in one worker's pipe. A worker that finds its next
#: jobs there runs them without sleeping: 2 ahead cost ~200 µs of CPU per no-op
#: (executor and worker together, 2 cores), 6 ahead ~175 (docs/performance.md).
SEND_AHEAD_DEPTH = 8
#: Seconds a new worker process may take to start (say "ready") on top of a deadline.
START_GRACE = 30.0
#: Weight of the newest run in a task's moving average of run times.
_LEARN = 0.2

_IDLE, _RUN, _FINALLY, _FRESH = "idle", "run", "finally", "fresh"


class _Lane(SlotState):
    """One worker process and the instance it runs."""

    def __init__(self, python: str | None) -> None:
        super().__init__()
        self.worker = WorkerProcess(python)
        self.work: Work | None = None
        self.ahead: deque[Work] = deque()  # sent behind ``work``, in order; not started
        self.phase = _IDLE
        self.deadline: float | None = None  # time.monotonic() by which the phase must end
        self.t0 = time.time()  # the current run's start (stored as its started_at)
        self.pid: int | None = None
        #: The outcome reported by ``run`` (or decided by Norc) while ``finally_`` runs.
        self.outcome: dict[str, Any] = {}
        self.fd: int | None = None  # the answer pipe the loop polls for this lane
        #: A worker started with no work, not "ready" yet (see WorkerLoop._spawn_idle).
        self.spawning = False
        #: Its worker failed to start (repeatedly): the next instance is sent anyway and
        #: fails as the host's fault (ERROR, the executor SUSPENDED), as without spawning.
        self.broken = False
        self.failed_spawns = 0


class WorkerLoop:
    """Runs an executor's instances in ``size`` reusable worker processes, from one thread."""

    def __init__(self, executor: Runner, size: int) -> None:
        self.executor = executor
        self.lanes = [_Lane(executor.python) for _ in range(size)]
        self._poll = select.poll()
        self._lanes_by_fd: dict[int, _Lane] = {}
        self._typical: dict[int, float] = {}  # task id -> moving average of run seconds
        # A byte on this pipe wakes the poll: new work, or the dispatch closing.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe: a wake-up is pending anyway
        self._wake_lock = threading.Lock()  # no write to the fd once closed (and reused)
        self._poll.register(self._wake_r, select.POLLIN)
        self.thread = threading.Thread(target=self._run, name="norc-workers", daemon=True)

    def wake(self) -> None:
        """Make the loop look at the dispatch now (called by whoever puts work there)."""
        with self._wake_lock, contextlib.suppress(OSError):
            if self._wake_w >= 0:
                os.write(self._wake_w, b"w")

    # -- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        dispatch = self.executor._dispatch
        try:
            while True:
                try:
                    for lane in self.lanes:
                        # A lane takes work once its worker is up (see _spawn_idle);
                        # once the dispatch is closed, any idle lane takes what was put
                        # back (no worker is started ahead any more: _start starts one).
                        if lane.work is None and (
                            lane.broken
                            or lane.worker.ready
                            or (dispatch.closed and not lane.spawning)
                        ):
                            work = dispatch.take_nowait()
                            if work is None:
                                break
                            self._guard(lane, self._start, lane, work)
                    # Busy lanes with short runs may take more (idle ones took first):
                    # what they could not for want of marked work is asked for below.
                    openings = self._send_ahead()
                    busy = [lane for lane in self.lanes if lane.work is not None]
                    # What the loop could begin now: the recorder records the starts of
                    # that many claimed instances, and the poll wakes when it has.
                    dispatch.want(self._spawn_idle() + openings)
                    if not busy and dispatch.closed:
                        return
                    self._wait(busy)
                    self._check_deadlines(busy)
                except Exception:
                    # Each lane's steps are guarded; this is the loop's own plumbing. It
                    # must not end while lanes hold instances: log, and go round again.
                    log.exception("worker loop error")
                    time.sleep(INTERRUPT_CHECK)
        finally:
            for lane in self.lanes:
                with contextlib.suppress(Exception):
                    lane.worker.close()
            with self._wake_lock:
                os.close(self._wake_w)
                self._wake_w = -1
            os.close(self._wake_r)

    def _wait(self, busy: list[_Lane]) -> None:
        """Block until a worker answers, work arrives, or the next deadline or check."""
        timeout = INTERRUPT_CHECK
        if busy:
            now = time.monotonic()
            for lane in busy:
                if lane.deadline is not None:
                    timeout = min(timeout, max(0.0, lane.deadline - now))
        for fd, _event in self._poll.poll(timeout * 1000):
            if fd == self._wake_r:
                os.read(self._wake_r, 4096)
                continue
            answering = self._lanes_by_fd.get(fd)
            if answering is None:  # a pipe of a worker that is gone
                self._poll.unregister(fd)
            elif answering.work is None and answering.spawning:
                self._spawned(answering)
            elif answering.work is None:  # an idle worker died (killed from outside)
                self._retire(answering)
            else:
                self._guard(answering, self._readable, answering)

    def _spawn_idle(self) -> int:
        """Start a worker in each idle lane that has none; returns how many idle lanes
        can start an instance at once (their worker said "ready").

        Only those are given work: an instance is marked started (see
        :mod:`norc.executor.dispatch`) when its lane takes it, and a worker takes a
        second or more to start on a busy host, so an executor killed while its workers
        start must hold no instance it has marked and not begun.
        """
        ready = 0
        # Not while stopping or paused: a worker started then would only be told to exit.
        spawn = self.executor._taking.is_set() and not self.executor._dispatch.closed
        for lane in self.lanes:
            if lane.work is not None:
                continue
            if lane.broken or lane.worker.ready:
                ready += 1
            elif spawn and not lane.spawning:
                try:
                    lane.worker.ensure()
                except OSError as exc:
                    log.warning("cannot start a worker process", error=str(exc))
                    lane.broken = True
                    ready += 1
                    continue
                lane.spawning = True
                self._watch(lane)
        return ready

    def _spawned(self, lane: _Lane) -> None:
        """A worker started with no work answered: "ready", or it died starting."""
        try:
            lane.worker.read_ready()
        except WorkerDied as exc:
            lane.spawning = False
            self._retire(lane)
            lane.failed_spawns += 1
            if lane.failed_spawns >= 3:
                log.warning("worker processes fail to start", error=str(exc))
                lane.broken = True
            return
        if lane.worker.answered:
            lane.spawning, lane.failed_spawns = False, 0

    def _check_deadlines(self, busy: list[_Lane]) -> None:
        now = time.monotonic()
        for lane in busy:
            overdue = lane.deadline is not None and now >= lane.deadline
            if lane.phase == _RUN and (overdue or lane.interrupted() is not None):
                self._guard(lane, self._stop_run, lane)
            elif lane.phase in (_FINALLY, _FRESH) and overdue:
                # finally_ is not interrupted, only bounded by its own timeout.
                self._guard(lane, self._finally_overdue, lane)

    def _guard(self, lane: _Lane, step: Any, *args: Any) -> None:
        """Run one step of a lane; a bug in it costs that instance, never the loop."""
        try:
            step(*args)
        except Exception as exc:
            log.exception("worker loop failed", instance=lane.busy_with)
            with contextlib.suppress(Exception):
                self._kill_worker(lane)
            self._retire(lane)
            self._put_back_ahead(lane)
            if lane.work is not None:
                self._complete(lane, outcome(InstanceStatus.ERROR, f"executor failure: {exc!r}"))

    # -- steps of a lane ---------------------------------------------------------------

    def _start(self, lane: _Lane, work: Work) -> None:
        lane.work = work
        lane.busy_with = work.instance.id
        lane.t0 = time.time()
        lane.spawning = False
        timeout = work.task.timeout
        if self.executor._kill:  # claimed ahead, and the executor was killed meanwhile
            reason = "the executor was killed before it started"
            self._complete(lane, outcome(InstanceStatus.INTERRUPTED, reason))
            return
        if work.load_error is not None:
            self._complete(lane, cannot_load(work))
            return
        worker = lane.worker
        try:
            fresh = worker.ensure()
        except OSError as exc:
            self._complete(lane, self._host_broken(work, f"cannot start a worker process: {exc}"))
            return
        lane.broken = False
        self._watch(lane)
        lane.pid = worker.pid
        try:
            # More claimed work waiting behind this one: the executor drains a backlog.
            backlog = self.executor._dispatch.any_ready()
            worker.send(work.job, work.template_key, work.template, batch=backlog)
        except WorkerDied as exc:
            self._died(lane, exc)
            return
        lane.phase = _RUN
        # A new worker's "ready" restarts the clock (_rebase); until then, some grace for
        # an interpreter that is slow to start.
        grace = START_GRACE if fresh else 0.0
        lane.deadline = time.monotonic() + grace + timeout if timeout else None

    def _readable(self, lane: _Lane) -> None:
        try:
            messages = lane.worker.read_ready()
        except WorkerDied as exc:
            self._died(lane, exc)
            return
        for message in messages:
            if lane.work is None:
                break
            event = message.pop("event", None)
            ended: float = message.pop("t")
            if event == "ready":  # a new worker is up: it starts what it was sent now
                self._rebase(lane, ended)
                continue
            if lane.phase == _RUN:
                result = {**message, "pid": lane.pid}
                if result.pop("done", False):  # finally_ is not overridden: one answer
                    self._complete(lane, result, ended)
                else:
                    assert lane.work is not None
                    lane.outcome = result
                    lane.phase = _FINALLY
                    lane.deadline = time.monotonic() + lane.work.task.finally_timeout
            else:  # finally_ has returned
                self._complete(lane, lane.outcome, ended)
            if lane.work is None and lane.ahead:
                self._promote(lane, ended)  # the worker went straight on to it

    def _rebase(self, lane: _Lane, began: float) -> None:
        """Count the lane's run (or ``finally_`` in a fresh worker) from ``began``: an
        interpreter that took long to start must not eat into the task's timeout."""
        work = lane.work
        assert work is not None
        if lane.phase == _RUN:
            lane.t0 = began
            limit = work.task.timeout
        elif lane.phase == _FRESH:
            limit = work.task.finally_timeout
        else:
            return
        lane.deadline = time.monotonic() + (began - time.time()) + limit if limit else None

    def _send_ahead(self) -> int:
        """Send waiting work to lanes whose runs in front are known to be short (see the
        module doc): one more to each such lane in turn, while it stays short. Returns
        how many more the lanes still open could take, had their starts been recorded
        (marked): a lane's room in its pipe, at most :data:`SEND_AHEAD_DEPTH`."""
        executor = self.executor
        if executor._kill or not executor._taking.is_set() or not executor._dispatch.any_ready():
            return 0
        now = time.time()
        # Each lane with the seconds its next job would wait behind the runs in front.
        fronts = [(lane, self._front(lane, now)) for lane in self.lanes]
        open_lanes = [(lane, wait) for lane, wait in fronts if wait is not None]
        while open_lanes:
            still_open = []
            for lane, wait in open_lanes:
                if lane.work is None:  # its worker failed just now (see _guard)
                    continue
                work = executor._dispatch.take_nowait()
                if work is None:  # have starts recorded for what these lanes could take
                    return sum(SEND_AHEAD_DEPTH - len(lane.ahead) for lane, _ in open_lanes)
                if work.load_error is not None:  # nothing to send: an idle lane records it
                    executor._dispatch.put_back(work)
                    return 0
                self._guard(lane, self._send, lane, work)
                if not lane.ahead or lane.ahead[-1] is not work:
                    continue  # not delivered (the worker is gone): it went back
                typical = self._typical_run(work)
                if (
                    typical is not None
                    and wait + typical < SEND_AHEAD_WORK
                    and len(lane.ahead) < SEND_AHEAD_DEPTH
                ):
                    still_open.append((lane, wait + typical))
            open_lanes = still_open
        return 0

    def _front(self, lane: _Lane, now: float) -> float | None:
        """The seconds a job sent to ``lane`` now is expected to wait before it starts,
        if that is known and under :data:`SEND_AHEAD_WORK` and the lane has room; else
        None."""
        if lane.phase != _RUN or lane.work is None or now - lane.t0 >= SEND_AHEAD_WORK:
            return None  # idle, in finally_, or the current run is already not short
        if len(lane.ahead) >= SEND_AHEAD_DEPTH:
            return None
        wait = 0.0
        for work in (lane.work, *lane.ahead):
            typical = self._typical_run(work)
            if typical is None:
                return None
            wait += typical
        return wait if wait < SEND_AHEAD_WORK else None

    def _typical_run(self, work: Work) -> float | None:
        """How long runs of the work's task recently took (moving average), or None when
        unknown or when it has a ``finally_`` (two answers: not worth the care)."""
        if work.cls is None or work.cls.finally_ is not Task.finally_:
            return None
        return self._typical.get(work.task.id)

    @staticmethod
    def _answered(lane: _Lane) -> bool:
        """Whether the lane's worker has written something not yet read."""
        return lane.fd is not None and bool(select.select([lane.fd], [], [], 0)[0])

    def _send(self, lane: _Lane, work: Work) -> None:
        lane.ahead.append(work)
        lane.ahead_ids = (*lane.ahead_ids, work.instance.id)
        try:
            lane.worker.send(work.job, work.template_key, work.template, batch=True)
        except WorkerDied:  # not delivered; the poll reports the worker's end
            lane.ahead.pop()
            lane.ahead_ids = lane.ahead_ids[:-1]
            self.executor._dispatch.put_back(work)
        else:
            self.executor.stats["sent_ahead"] += 1

    def _promote(self, lane: _Lane, began: float) -> None:
        """The first instance sent ahead is the lane's current one, since ``began``."""
        work = lane.ahead.popleft()
        lane.ahead_ids = lane.ahead_ids[1:]
        lane.work = work
        lane.busy_with = work.instance.id
        lane.phase = _RUN
        self._rebase(lane, began)

    def _put_back_ahead(self, lane: _Lane) -> None:
        """The instances sent ahead never started: the next free lanes take them, first."""
        while lane.ahead:
            work = lane.ahead.pop()  # the last first, so that they keep their order
            lane.forget(work.instance.id)
            self.executor._dispatch.put_back(work)
        lane.ahead_ids = ()

    def _kill_worker(self, lane: _Lane) -> None:
        """SIGKILL the lane's worker, and settle the instances sent ahead to it, if any."""
        finished = lane.worker.kill()
        # Each job finished unseen means the worker went on to the next one: so many of
        # those sent ahead may have begun (the last one cut short). They are recorded
        # INTERRUPTED rather than run twice; the others go back.
        for _ in range(min(finished, len(lane.ahead))):
            work = lane.ahead.popleft()
            lane.ahead_ids = lane.ahead_ids[1:]
            lane.forget(work.instance.id)
            reason = "its worker was killed just as it started (the instance before it was stopped)"
            note(work, reason)
            now = datetime.now(UTC)
            self.executor._record(work, stamp(outcome(InstanceStatus.INTERRUPTED, reason), now))
        self._put_back_ahead(lane)

    def _died(self, lane: _Lane, exc: WorkerDied) -> None:
        work = lane.work
        assert work is not None
        never_started = lane.worker.answered == 0
        self._put_back_ahead(lane)  # every answer was read before the end of file: none began
        self._retire(lane)
        lane.worker.close()
        if lane.phase in (_FINALLY, _FRESH):
            note(work, f"worker died in finally_: {exc}")
            self._complete(lane, lane.outcome)
        elif never_started:  # it never got going: the host, not the task
            self._complete(lane, self._host_broken(work, f"worker process failed to start: {exc}"))
        else:
            note(work, f"worker died: {exc}")
            self._complete(lane, outcome(InstanceStatus.ERROR, str(exc)))

    def _stop_run(self, lane: _Lane) -> None:
        """Timed out or interrupted: the whole process group goes, finally_ runs afresh."""
        work = lane.work
        assert work is not None
        if lane.ahead and self._answered(lane):
            self._readable(lane)  # an answer came meanwhile: decide on the lane as it is now
            return
        interrupted = lane.interrupted()
        self._kill_worker(lane)
        self._retire(lane)
        if interrupted is not None:
            status, reason = InstanceStatus.INTERRUPTED, interrupted
        else:
            status = InstanceStatus.TIMEDOUT
            reason = f"timed out after {work.task.timeout:g} s"
        note(work, f"{reason}; process group {lane.pid} killed")
        lane.outcome = {**outcome(status, reason), "pid": lane.pid}
        try:
            lane.worker.ensure()
            self._watch(lane)
            timeout = work.task.timeout
            deadline = lane.t0 + timeout if timeout else None  # the run's, for finally_'s ctx
            job = {**work.job, "op": "finally", "deadline": deadline}
            lane.worker.send(job, work.template_key, work.template)
        except (OSError, WorkerDied) as exc:
            note(work, f"worker died in finally_: {exc}")
            self._complete(lane, lane.outcome)
            return
        lane.phase = _FRESH
        lane.deadline = time.monotonic() + START_GRACE + work.task.finally_timeout  # see _rebase

    def _finally_overdue(self, lane: _Lane) -> None:
        work = lane.work
        assert work is not None
        self._kill_worker(lane)
        self._retire(lane)
        killed = "process group killed" if lane.phase == _FINALLY else "killed"
        note(work, f"finally_ exceeded {work.task.finally_timeout:g} s; {killed}")
        self._complete(lane, lane.outcome)

    def _complete(self, lane: _Lane, result: dict[str, Any], ended: float | None = None) -> None:
        """The lane's instance is over: ``ended`` by the worker's clock if it answered."""
        work = lane.work
        assert work is not None
        end = time.time() if ended is None else ended
        if lane.phase != _IDLE:  # it was sent to a worker: learn how long its runs take
            seconds = end - lane.t0
            typical = self._typical.get(work.task.id)
            self._typical[work.task.id] = (
                seconds if typical is None else typical + _LEARN * (seconds - typical)
            )
        lane.work = None
        lane.ended()
        lane.phase = _IDLE
        lane.deadline = None
        lane.outcome = {}
        started = datetime.fromtimestamp(lane.t0, UTC)
        if not lane.ahead and lane.worker.ready:
            self.executor._dispatch.want_one_more()
        self.executor._record(work, stamp(result, started, datetime.fromtimestamp(end, UTC)))

    def _host_broken(self, work: Work, reason: str) -> dict[str, Any]:
        """An instance failed while initialising: a sign the host is broken (seed: SUSPENDED)."""
        note(work, reason)
        self.executor.suspend(reason)
        return outcome(InstanceStatus.ERROR, reason)

    # -- which pipes are polled ----------------------------------------------------------

    def _watch(self, lane: _Lane) -> None:
        """Poll the lane's current worker (a new one after a restart)."""
        fd = lane.worker.result_fd
        if fd != lane.fd:
            self._retire(lane)
            if fd is not None:
                self._poll.register(fd, select.POLLIN)
                self._lanes_by_fd[fd] = lane
                lane.fd = fd

    def _retire(self, lane: _Lane) -> None:
        """Stop polling the lane's worker pipe (the worker is gone or going)."""
        if lane.fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poll.unregister(lane.fd)
            self._lanes_by_fd.pop(lane.fd, None)
            lane.fd = None
            if lane.work is None:
                # An idle worker that died: reap it; the next instance starts a new one.
                with contextlib.suppress(Exception):
                    lane.worker.kill()
