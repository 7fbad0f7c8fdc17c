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
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from norc.executor.work import Runner, SlotState, Work, cannot_load, note, outcome, stamp
from norc.executor.worker import WorkerDied, WorkerProcess
from norc.status import InstanceStatus

log = structlog.get_logger("norc.executor")

#: How often interrupts (kill requests, instances ended from outside) are looked at.
INTERRUPT_CHECK = 0.1

_IDLE, _RUN, _FINALLY, _FRESH = "idle", "run", "finally", "fresh"


class _Lane(SlotState):
    """One worker process and the instance it runs."""

    def __init__(self, python: str | None) -> None:
        super().__init__()
        self.worker = WorkerProcess(python)
        self.work: Work | None = None
        self.phase = _IDLE
        self.deadline: float | None = None  # time.monotonic() by which the phase must end
        self.started = datetime.now(UTC)
        self.pid: int | None = None
        #: The outcome reported by ``run`` (or decided by Norc) while ``finally_`` runs.
        self.outcome: dict[str, Any] = {}
        self.fd: int | None = None  # the answer pipe the loop polls for this lane


class WorkerLoop:
    """Runs an executor's instances in ``size`` reusable worker processes, from one thread."""

    def __init__(self, executor: Runner, size: int) -> None:
        self.executor = executor
        self.lanes = [_Lane(executor.python) for _ in range(size)]
        self._poll = select.poll()
        self._lanes_by_fd: dict[int, _Lane] = {}
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
                        if lane.work is None:
                            work = dispatch.take_nowait()
                            if work is None:
                                break
                            self._guard(lane, self._start, lane, work)
                    busy = [lane for lane in self.lanes if lane.work is not None]
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
            elif answering.work is None:  # an idle worker died (killed from outside)
                self._retire(answering)
            else:
                self._guard(answering, self._readable, answering)

    def _check_deadlines(self, busy: list[_Lane]) -> None:
        now = time.monotonic()
        for lane in busy:
            overdue = lane.deadline is not None and now >= lane.deadline
            if lane.phase == _RUN and (overdue or lane.interrupted()):
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
                lane.worker.kill()
            self._retire(lane)
            if lane.work is not None:
                self._complete(lane, outcome(InstanceStatus.ERROR, f"executor failure: {exc!r}"))

    # -- steps of a lane ---------------------------------------------------------------

    def _start(self, lane: _Lane, work: Work) -> None:
        lane.work = work
        lane.busy_with = work.instance.id
        lane.started = datetime.now(UTC)
        timeout = work.task.timeout
        # The deadline counts from the real start, not the claim (it may be ahead).
        work.job["deadline"] = time.time() + timeout if timeout else None
        if self.executor._kill:  # claimed ahead, and the executor was killed meanwhile
            reason = "the executor was killed before it started"
            self._complete(lane, outcome(InstanceStatus.INTERRUPTED, reason))
            return
        if work.load_error is not None:
            self._complete(lane, cannot_load(work))
            return
        worker = lane.worker
        try:
            worker.ensure()
        except OSError as exc:
            self._complete(lane, self._host_broken(work, f"cannot start a worker process: {exc}"))
            return
        self._watch(lane)
        lane.pid = worker.pid
        try:
            worker.send(work.job, work.template_key, work.template)
        except WorkerDied as exc:
            self._died(lane, exc)
            return
        lane.phase = _RUN
        lane.deadline = time.monotonic() + timeout if timeout else None

    def _readable(self, lane: _Lane) -> None:
        try:
            messages = lane.worker.read_ready()
        except WorkerDied as exc:
            self._died(lane, exc)
            return
        for message in messages:
            if lane.work is None:
                break
            message.pop("event", None)
            if lane.phase == _RUN:
                result = {**message, "pid": lane.pid}
                if result.pop("done", False):  # finally_ is not overridden: one answer
                    self._complete(lane, result)
                else:
                    assert lane.work is not None
                    lane.outcome = result
                    lane.phase = _FINALLY
                    lane.deadline = time.monotonic() + lane.work.task.finally_timeout
            else:  # finally_ has returned
                self._complete(lane, lane.outcome)

    def _died(self, lane: _Lane, exc: WorkerDied) -> None:
        work = lane.work
        assert work is not None
        never_started = lane.worker.answered == 0
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
        lane.worker.kill()
        self._retire(lane)
        if lane.interrupted():
            status, reason = InstanceStatus.INTERRUPTED, lane.interrupt_reason
        else:
            status = InstanceStatus.TIMEDOUT
            reason = f"timed out after {work.task.timeout:g} s"
        note(work, f"{reason}; process group {lane.pid} killed")
        lane.outcome = {**outcome(status, reason), "pid": lane.pid}
        try:
            lane.worker.ensure()
            self._watch(lane)
            lane.worker.send({**work.job, "op": "finally"}, work.template_key, work.template)
        except (OSError, WorkerDied) as exc:
            note(work, f"worker died in finally_: {exc}")
            self._complete(lane, lane.outcome)
            return
        lane.phase = _FRESH
        lane.deadline = time.monotonic() + work.task.finally_timeout

    def _finally_overdue(self, lane: _Lane) -> None:
        work = lane.work
        assert work is not None
        lane.worker.kill()
        self._retire(lane)
        killed = "process group killed" if lane.phase == _FINALLY else "killed"
        note(work, f"finally_ exceeded {work.task.finally_timeout:g} s; {killed}")
        self._complete(lane, lane.outcome)

    def _complete(self, lane: _Lane, result: dict[str, Any]) -> None:
        work = lane.work
        assert work is not None
        lane.work = None
        lane.ended()
        lane.phase = _IDLE
        lane.deadline = None
        lane.outcome = {}
        self.executor._record(work, stamp(result, lane.started))

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
