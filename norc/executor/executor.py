"""The Executor: claims instances from one queue and runs them, ``concurrency`` at a time.

Threads, all inside the embedding process:

- the *claim loop* takes as many instances as there are idle slots, plus a claim-ahead
  sized by the recent rate (see :mod:`norc.executor.dispatch`), in one claim;
- the *recorder* also records, in the same transaction, the starts of the claimed
  instances that idle slots are about to begin, before they begin: a survivor gives
  back to their queue the instances a dead executor claimed and never started, and
  interrupts the others;
- the *runners* take the next claimed instance as a slot frees up: with
  ``isolation="process"`` (the default) one thread drives ``concurrency`` reusable worker
  processes (:mod:`norc.executor.workerloop`); with ``"thread"`` each slot is a thread
  that runs the task itself (no hard timeout: for trusted, cooperative tasks);
- the *recorder* writes finished instances in batches (one transaction for everything
  that finished since its last write) and retries while the database is away, so no
  outcome is lost;
- the *heartbeat* keeps the daemon row fresh and delivers requests.

Embedded, nothing touches signal handlers unless ``install_signal_handlers=True``
(``norc executor`` asks for them). Then, as service managers expect, the first SIGTERM
or SIGINT is a graceful stop bounded by a stop timeout, and a second one, or SIGQUIT, a
kill (see :class:`norc.daemon.SignalStop`).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import queue as queuelib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy.exc import SQLAlchemyError

from norc.abc import Claimant, Queue, Task
from norc.alerts import events as alert_events
from norc.control import housekeeping
from norc.daemon import (
    DEFAULT_STOP_TIMEOUT,
    Heartbeat,
    SignalStop,
    daemon_logger,
    hostname,
    run_blocking,
)
from norc.errors import ConfigurationError, DaemonSettled, DatabaseError, NorcError
from norc.executor.dispatch import Dispatch
from norc.executor.running import (
    TaskLoadError,
    build_task,
    execute,
    load_class,
    run_finally,
)
from norc.executor.work import SlotState, Work, cannot_load, outcome, stamp
from norc.executor.workerloop import WorkerLoop
from norc.lifecycle import after_end, wants_retry
from norc.logs import open_new_log, resolve_key_text
from norc.records import InstanceRecord, TaskRecord
from norc.service import Notifier
from norc.status import DaemonStatus, InstanceStatus, Request

if TYPE_CHECKING:
    from norc.app import Norc

Isolation = Literal["process", "thread"]

log = structlog.get_logger("norc.executor")


class _Slot(SlotState):
    """Thread isolation: one unit of concurrency is a thread that runs instances in itself.

    (Process isolation runs every worker process from one thread instead: see
    :mod:`norc.executor.workerloop`.)
    """

    def __init__(self, executor: Executor, index: int) -> None:
        super().__init__()
        self.executor = executor
        self.thread = threading.Thread(target=self._loop, name=f"norc-slot-{index}", daemon=True)

    def _loop(self) -> None:
        executor = self.executor
        while (work := executor._dispatch.take()) is not None:
            self.busy_with = work.instance.id
            started = datetime.now(UTC)
            try:
                if executor._kill:  # claimed ahead, and the executor was killed meanwhile
                    result = outcome(
                        InstanceStatus.INTERRUPTED, "the executor was killed before it started"
                    )
                elif work.load_error is not None:
                    result = cannot_load(work)
                else:
                    result = self._run_in_thread(work)
            except Exception as exc:
                log.exception("slot failed", instance=work.instance.id)
                result = outcome(InstanceStatus.ERROR, f"executor failure: {exc!r}")
            self.ended()
            executor._record(work, stamp(result, started))

    def _run_in_thread(self, work: Work) -> dict[str, Any]:
        assert work.cls is not None
        # No hard timeout in a thread: the task sees its deadline (ctx) and may honour it.
        with open_new_log(work.log_path) as log_file:
            try:
                # Params are shared by every instance of the task (claimed_work caches
                # them): a task that mutates a list it was given must not change the next.
                job = {
                    **work.template,
                    **work.job,
                    "params": copy.deepcopy(work.template["params"]),
                }
                task = build_task(work.cls, job)
            except Exception as exc:  # noqa: BLE001 - invalid stored params: ERROR
                log_file.write(f"[norc] cannot load task: {exc}\n".encode())
                return outcome(InstanceStatus.ERROR, str(exc))
            # Thread isolation does not capture stdout/stderr: nothing to flush per run.
            result, ctx = execute(task, job, log_file, captured=False)
            run_finally(task, ctx, captured=False)
        result["pid"] = os.getpid()
        return result


def _by_queue(works: list[Work]) -> dict[str, list[int]]:
    by_queue: dict[str, list[int]] = {}
    for work in works:
        by_queue.setdefault(work.instance.queue, []).append(work.instance.id)
    return by_queue


class Executor:
    """Runs instances from one queue; embeddable (``with``, ``start``/``stop``) or blocking."""

    def __init__(
        self,
        app: Norc,
        *,
        queue: str = "default",
        concurrency: int = 1,
        isolation: Isolation = "process",
        install_signal_handlers: bool = False,
        python: str | None = None,
        claim_ahead: float = 0.1,
        max_claim_wait: float = 1.0,
        log_to_stderr: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        if isolation not in ("process", "thread"):
            raise ConfigurationError(f"isolation must be 'process' or 'thread', got {isolation!r}")
        if claim_ahead < 0 or max_claim_wait <= 0:
            raise ConfigurationError(
                "claim_ahead must be >= 0 and max_claim_wait > 0 (seconds),"
                f" got {claim_ahead!r} and {max_claim_wait!r}"
            )
        self.app = app
        self.queue_name = queue
        self.concurrency = concurrency
        self.isolation: Isolation = isolation
        self.install_signal_handlers = install_signal_handlers
        #: Also send its events through structlog (the ``norc executor`` command routes
        #: that to stderr); they always go to its log in the log store.
        self.log_to_stderr = log_to_stderr
        #: The interpreter worker processes run (default: this one).
        self.python = python
        #: Seconds of recent throughput claimed beyond the idle slots (0: claim for idle
        #: slots only), and how long such an instance may wait before it is given back.
        self.claim_ahead = claim_ahead
        self.max_claim_wait = max_claim_wait
        #: Round trips and instances, for the ``executor ended`` log line and benchmarks.
        self.stats = {
            "claims": 0,
            "claimed": 0,
            "writes": 0,
            "written": 0,
            "given_back": 0,
            "sent_ahead": 0,  # instances sent to a busy worker, to start when it is free
            # The window between a body's end (the worker's clock) and the commit of its
            # outcome, in which an executor's death loses the outcome (the survivor
            # records INTERRUPTED): the longest seen, and how many took over 10 ms.
            "end_to_durable_max_ms": 0,
            "end_to_durable_over_10ms": 0,
        }
        self.id: int | None = None
        self.status = DaemonStatus.CREATED
        self._taking = threading.Event()  # set while the executor takes new work
        self._held = threading.Event()  # set once the claim loop has seen a pause
        self._can_give_back = False
        self._stopping = threading.Event()
        self._finished = threading.Event()
        self._kill = False
        #: Set when another daemon settled this executor as dead (see _on_settled).
        self.settled: DaemonSettled | None = None
        self._results: queuelib.SimpleQueue[tuple[Work, dict[str, Any]] | None] = (
            queuelib.SimpleQueue()
        )
        #: What the executor sees of each unit of concurrency (busy_with, interrupt):
        #: slot threads (thread isolation) or the worker loop's lanes (process).
        self._slots: list[SlotState] = []
        self._slot_threads: list[threading.Thread] = []
        self._threads: list[threading.Thread] = []
        self._heartbeat: Heartbeat | None = None
        self._own_queues: dict[str, Queue] = {}  # by name: what start() opened
        #: task id -> (its record, class, template key, job template): see _task_template.
        self._templates: dict[int, tuple[TaskRecord, type[Task] | None, int, dict[str, Any]]] = {}
        self._template_keys = itertools.count(1)

    # -- public control --------------------------------------------------------------

    def start(self) -> Executor:
        """Register the executor and start its threads; returns at once."""
        app = self.app
        # A queue, or a queue group's members in priority order: objects of the
        # executor's own, so that nothing a queue keeps for its claimant is shared.
        self.queues = [app.open_queue(name) for name in app.queue_members(self.queue_name)]
        self._own_queues = {queue.name: queue for queue in self.queues}
        self.id = app.db.insert_daemon(
            kind="executor",
            host=hostname(),
            pid=os.getpid(),
            queue=self.queue_name,
            concurrency=self.concurrency,
            status=DaemonStatus.RUNNING.value,
        )
        self.status = DaemonStatus.RUNNING
        self.claimant = Claimant(executor_id=self.id, host=hostname(), pid=os.getpid())
        # Work claimed ahead must be returnable to its queue, or it could wait behind long
        # instances while other executors idle: queues that cannot take it back get none.
        self._can_give_back = all(q.can_give_back for q in self.queues)
        ahead = self.claim_ahead if self._can_give_back else 0.0
        workers = WorkerLoop(self, self.concurrency) if self.isolation == "process" else None
        self._dispatch: Dispatch[Work] = Dispatch(
            self.concurrency,
            ahead_seconds=ahead,
            max_wait=self.max_claim_wait,
            on_work=workers.wake if workers is not None else None,
        )
        self._log_file = open_new_log(str(app.daemon_log_path("executor", self.id)))
        self.log = daemon_logger(
            self._log_file, kind="executor", echo=self.log_to_stderr, executor=self.id
        )
        self.log.info(
            "executor started",
            queue=self.queue_name,
            concurrency=self.concurrency,
            isolation=self.isolation,
            claim_ahead=ahead,
            host=self.claimant.host,
            pid=self.claimant.pid,
        )
        if workers is not None:
            self._slots = list(workers.lanes)
            self._slot_threads = [workers.thread]
        else:
            slots = [_Slot(self, i) for i in range(self.concurrency)]
            self._slots = list(slots)
            self._slot_threads = [slot.thread for slot in slots]
        for thread in self._slot_threads:
            thread.start()
        # The heartbeat first: the claim loop's shutdown stops it, and a stop can come at
        # once (a signal while starting).
        self._heartbeat = Heartbeat(
            app.db,
            self.id,
            app.settings.heartbeat_interval,
            self._on_request,
            lambda: self.status.value,
            on_beat=lambda trusted: housekeeping(self.app, trusted=trusted),
            judge_after=self.app.settings.heartbeat_timeout,
            on_poll=self._check_stopped_elsewhere,
            on_settled=self._on_settled,
        )
        self._heartbeat.start()
        self._taking.set()
        for target, name in (
            (self._claim_loop, "claim"),
            (self._recorder, "recorder"),
        ):
            thread = threading.Thread(target=target, name=f"norc-executor-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, *, timeout: float | None = None) -> bool:
        """Take nothing new, let running instances finish, then end. True once ended."""
        self._begin_stop(kill=False)
        return self._finished.wait(timeout)

    def kill(self, *, timeout: float | None = None) -> bool:
        """End running instances now (INTERRUPTED, ``finally_`` still runs), then end."""
        self._begin_stop(kill=True)
        return self._finished.wait(timeout)

    def pause(self, *, timeout: float = 5.0) -> None:
        """Start nothing new; running instances continue.

        Returns once the claim loop has seen the pause (at most ``timeout`` seconds):
        a claim that was under way is over and work claimed ahead has gone back to its
        queue, so nothing enqueued from then on starts here until :meth:`resume`.
        """
        if not self._stopping.is_set():
            self._hold(DaemonStatus.PAUSED)
            if threading.current_thread() not in self._threads:
                self._held.wait(timeout)

    def resume(self) -> None:
        """Take new work again after :meth:`pause` or a suspension."""
        if not self._stopping.is_set():
            if self.status is DaemonStatus.SUSPENDED and self.id is not None:
                self.app.db.set_daemon(self.id, error=None)
            self.status = DaemonStatus.RUNNING
            self._taking.set()

    def suspend(self, reason: str) -> None:
        """Stop taking work because the host looks broken; shown until resumed."""
        if self._stopping.is_set():
            return
        self._hold(DaemonStatus.SUSPENDED)
        self.log.error("executor suspended", reason=reason)
        if self.id is not None:
            self.app.db.set_daemon(self.id, status=self.status.value, error=reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the executor has ended (by a request, :meth:`stop` or :meth:`kill`)."""
        return self._finished.wait(timeout)

    def run(
        self,
        *,
        on_started: Callable[[], object] | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        notify: bool = False,
    ) -> None:
        """Start, block until ended. ``on_started`` runs once it has started (its
        :attr:`id` is known then).

        With ``install_signal_handlers``, the first SIGTERM or SIGINT stops (as
        :meth:`stop`) and, if running instances have not finished ``stop_timeout``
        seconds later, kills them (as :meth:`kill`); a second one, or SIGQUIT, kills at
        once. With ``notify``, a service manager hears READY, STOPPING and WATCHDOG
        through ``$NOTIFY_SOCKET`` (see :mod:`norc.service`).
        """
        run_blocking(
            self.start if self.id is None else None,
            self._finished,
            SignalStop(
                lambda: self._begin_stop(kill=False),
                lambda: self._begin_stop(kill=True),
                stop_timeout,
            )
            if self.install_signal_handlers
            else None,
            on_started,
            notifier=Notifier.from_environment() if notify else None,
            alive=lambda: self._heartbeat.alive_at if self._heartbeat is not None else None,
        )

    def __enter__(self) -> Executor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        self.log.info("request received", request=request.value)
        if request is Request.STOP:
            self._begin_stop(kill=False)
        elif request is Request.KILL:
            self._begin_stop(kill=True)
        elif request is Request.PAUSE:
            self.pause()
        elif request is Request.RESUME:
            self.resume()

    def _begin_stop(self, *, kill: bool) -> None:
        if self.id is None:
            self._finished.set()
            return
        self._kill = self._kill or kill
        if self._kill:
            for slot in self._slots:
                slot.interrupt(None, "interrupted by a KILL request")
        if kill and hasattr(self, "_dispatch"):  # nothing more starts: see _shutdown
            self._dispatch.hold_marks()
        if not self._stopping.is_set():
            self._stopping.set()
            self.status = DaemonStatus.STOPPING
            self._taking.clear()
            self._wake_claim()

    def _on_settled(self, exc: DaemonSettled) -> None:
        """Another daemon ended this executor's row (it had stopped beating: a stall, a
        network partition) and settled its running work, which may run elsewhere now.
        Carrying on under that row would run it twice: end now, killing what still runs
        here; a supervisor starts a fresh executor (the CLI exits with code 2)."""
        self.settled = exc
        self.log.error("declared dead by another daemon; ending", error=str(exc))
        self._begin_stop(kill=True)

    def _check_stopped_elsewhere(self) -> None:
        """Interrupt slots whose instance was ended from outside (a stop request, a Job's
        end or timeout, a replacing run), and drop such instances claimed ahead before
        they start: checked twice a second while anything runs or waits."""
        busy = {slot.busy_with: slot for slot in self._slots if slot.busy_with is not None}
        busy.update((i, slot) for slot in self._slots for i in slot.ahead_ids)
        waiting = self._dispatch.waiting()
        if not busy and not waiting:
            return
        running = set(self.app.db.still_running([*busy, *(w.instance.id for w in waiting)]))
        for instance_id, slot in busy.items():
            if instance_id not in running:
                slot.interrupt(instance_id, "stopped from outside: the instance was ended")
        ended = self._dispatch.remove(w for w in waiting if w.instance.id not in running)
        if ended:
            self._forget(ended)

    def _hold(self, status: DaemonStatus) -> None:
        """Take no new work: the claim loop acknowledges through ``_held``."""
        self._held.clear()  # before _taking, so the acknowledgement is for this hold
        self._taking.clear()
        self.status = status
        self._wake_claim()

    def _wake_claim(self) -> None:
        with contextlib.suppress(Exception):
            for queue in self.queues:
                queue.wake()

    def _claim_loop(self) -> None:
        dispatch = self._dispatch
        try:
            while not self._stopping.is_set():
                if not self._taking.is_set():
                    # Paused or suspended: what was claimed ahead would start while the
                    # executor says it takes nothing new; other executors can run it.
                    unstarted = dispatch.unstarted() if self._can_give_back else []
                    if unstarted:
                        self._give_back(unstarted)
                    if any(slot.ahead_ids for slot in self._slots):
                        # Sent ahead to a worker (behind a short run): it starts within
                        # milliseconds, or comes back to the dispatch to be given back.
                        self._taking.wait(0.005)
                        continue
                    self._held.set()
                    self._taking.wait(0.2)
                    continue
                stale = dispatch.stale() if self._can_give_back else []
                if stale:
                    self._give_back(stale)
                want = dispatch.wanted()
                if want == 0:
                    dispatch.wait_for_room(0.2)
                    continue
                try:
                    works = self._claim(want)
                except (SQLAlchemyError, DatabaseError) as exc:
                    self.log.warning("claim failed; retrying", error=str(exc).splitlines()[0])
                    works = []
                    self._stopping.wait(1.0)
                except NorcError as exc:  # a queue plugin's failure (SQS down, queue missing)
                    self.log.error("claim failed; retrying", queue=self.queue_name, error=str(exc))
                    works = []
                    self._stopping.wait(5.0)
                if works and not self._taking.is_set() and self._can_give_back:
                    self._give_back(works)  # paused while the claim ran: start none of it
                else:
                    dispatch.put(works)
        finally:
            self._shutdown()

    def _give_back(self, works: list[Work], *, keep: bool = True) -> bool:
        """Return claimed, never started instances to their queues (QUEUED again); True
        once done. On failure, ``keep``: they go back to the buffer and run here."""
        try:
            with self.app.db.transaction() as tx:
                ids = [w.instance.id for w in works]
                returned = set(self.app.db.give_back(tx, ids, self.claimant.executor_id))
                # Not moved back: ended meanwhile (stopped from outside: only the item is
                # left, released here), or no longer this executor's (a survivor that
                # took it for dead gave it back, another executor may hold it: its item
                # is not ours to touch).
                ended = self.app.db.ended(tx, [i for i in ids if i not in returned])
                for name, group in _by_queue(works).items():
                    self._queue(name).give_back([i for i in group if i in returned], tx)
                    self._queue(name).release([i for i in group if i in ended], tx)
        except Exception as exc:  # noqa: BLE001 - a database error or a queue plugin's
            self.log.warning(
                "giving back failed", error=str(exc).splitlines()[0] if str(exc) else repr(exc)
            )
            if keep:  # not lost: they stay claimed here and run when a slot frees up
                self._dispatch.put(works)
            return False
        self.stats["given_back"] += len(returned)
        self.log.info("gave back instances claimed ahead", count=len(returned))
        return True

    def _claim(self, limit: int) -> list[Work]:
        ids = self._claim_ids(limit)
        if not ids:
            return []
        self.stats["claims"] += 1
        self.stats["claimed"] += len(ids)
        works = [self._prepare(i, t) for i, t in self.app.db.claimed_work(ids)]
        if self.app.plugins.has_hook_impls("norc_instance_started"):
            for work in works:
                self.app.plugins.notify("norc_instance_started", instance=work.instance)
        expanding = [w for w in works if w.cls is not None and w.cls.expands]
        if expanding:
            # Jobs are expanded here, at once, and take no slot: their nodes are the work.
            from norc import jobs

            with self.app.db.transaction() as tx:
                started = [w.instance.id for w in expanding]
                self._release(expanding, tx)
                jobs.start(self.app, tx, started)
            works = [w for w in works if w not in expanding]
        return works

    def _claim_ids(self, limit: int) -> list[int]:
        """Claim from the queue, or from a group's queues in priority order.

        Each round asks every member, highest priority first, without waiting, and
        waits only on the last: work on a higher-priority queue is always taken first.
        """
        if len(self.queues) == 1:
            return self.queues[0].claim(self.claimant, limit, timeout=0.5)
        ids: list[int] = []
        for k, queue in enumerate(self.queues):
            last = k == len(self.queues) - 1
            ids += queue.claim(
                self.claimant, limit - len(ids), timeout=0.1 if last and not ids else 0.0
            )
            if len(ids) >= limit:
                break
        return ids

    def _release(self, works: list[Work], tx: Any) -> None:
        for name, ids in _by_queue(works).items():
            self._queue(name).release(ids, tx)

    def _queue(self, name: str) -> Queue:
        """The executor's own object for a queue it claims from (the handle's otherwise)."""
        return self._own_queues.get(name) or self.app.queue(name)

    def _prepare(self, instance: InstanceRecord, task: TaskRecord) -> Work:
        key = self.app.log_keys.instance(task.type, task.name, instance.id)
        log_path = resolve_key_text(self.app.settings.log_dir, key)
        cls, template_key, template, error = self._task_template(task)
        job = {
            "op": "run",
            "instance_id": instance.id,
            "attempt": instance.attempt,
            "log_path": log_path,
            "fire_time": instance.fire_time.isoformat() if instance.fire_time else None,
        }
        return Work(
            instance,
            task,
            job,
            template,
            template_key,
            key,
            log_path,
            cls,
            error,
            time.monotonic(),
        )

    def _task_template(
        self, task: TaskRecord
    ) -> tuple[type[Task] | None, int, dict[str, Any], str | None]:
        """The task's class and the part of a job that is the same for all its instances,
        under a key that is new for each task revision (workers keep templates by key).

        Kept while ``claimed_work`` hands out the same record (until the task is edited);
        a class that failed to load is looked up again next time (it may be installed).
        """
        cached = self._templates.get(task.id)
        if cached is not None and cached[0] is task:
            return cached[1], cached[2], cached[3], None
        cls: type[Task] | None = self.app.registry.task_type(task.type)
        error = None
        type_path = task.type_path
        if cls is None:
            try:
                cls = load_class(task.type_path, task.type)
            except TaskLoadError as exc:
                error = f"{exc} (it was registered by plugin {task.plugin!r})"
        if cls is not None:
            type_path = f"{cls.__module__}:{cls.__qualname__}"
        template = {
            "task_id": task.id,
            "task_name": task.name,
            "task_type": task.type,
            "type_path": type_path,
            "params": task.params,
            "settings": {**task.settings, "retry_on": list(task.retry_on)},
            # The run's deadline counts from its real start, which only the runner sees.
            "timeout": task.timeout,
        }
        template_key = next(self._template_keys)
        if error is None:
            self._templates[task.id] = (task, cls, template_key, template)
        return cls, template_key, template, error

    def _unmark(self, works: list[Work]) -> None:
        """Take back the start marks of marked work no slot wants any more (see
        ``Dispatch.to_mark``): unstarted again, it goes back to a dead executor's queue."""
        assert self.id is not None
        # On failure perhaps done anyway: marked again before they start (harmless).
        with contextlib.suppress(SQLAlchemyError, DatabaseError):
            self.app.db.unmark_started([w.instance.id for w in works], self.id)
        self._dispatch.marked([], len(works), works)

    def _forget(self, works: list[Work]) -> None:
        """Claimed work that is no longer this executor's to start: it was ended from
        outside (its queue item is released through the recorder; the end recorded from
        outside stays, the write only touches RUNNING rows), or given back by a survivor
        that took this executor for dead (the item is the queue's again: left alone)."""
        try:
            with self.app.db.transaction() as tx:
                ended = self.app.db.ended(tx, [w.instance.id for w in works])
        except (SQLAlchemyError, DatabaseError):
            ended = set()  # unknown: leave the items alone
        for work in works:
            if work.instance.id in ended:
                self._results.put(
                    (work, outcome(InstanceStatus.INTERRUPTED, "ended before it started"))
                )
        self._dispatch.poke()

    def _record(self, work: Work, outcome: dict[str, Any]) -> None:
        """Called by a slot: queue the outcome for the recorder, free the slot."""
        self._results.put((work, outcome))
        self._dispatch.finished()

    def _recorder(self) -> None:
        """Write outcomes and record starts, both in one transaction per turn: what
        finished since the last write, and the starts of the claimed work that slots
        want now (see :mod:`norc.executor.dispatch`). Marking ends with
        ``stop_marking`` (shutdown); the ``None`` sentinel after it ends the recorder."""
        dispatch = self._dispatch
        pending: list[tuple[Work, dict[str, Any]]] = []
        closing = marking_done = False
        while True:
            starts: list[Work] = []
            if not marking_done:
                step = dispatch.to_mark(0.5, wake=self._has_results)
                if step is None:
                    marking_done = True
                else:
                    starts, surplus = step
                    if surplus:
                        self._unmark(surplus)
            elif not pending and not closing:
                item = self._results.get()
                if item is None:
                    closing = True
                else:
                    pending.append(item)
            with contextlib.suppress(queuelib.Empty):
                while True:
                    item = self._results.get_nowait()
                    if item is None:
                        closing = True
                    else:
                        pending.append(item)
            if not pending and not starts:
                if closing and marking_done:
                    return
                continue
            try:
                marked = self._write(pending, starts)
                pending = []
            except Exception as exc:  # noqa: BLE001 - a database error, or a plugin's
                # The outcomes stay in memory and are written when the database is back;
                # nothing starts while its start cannot be recorded (it waits, claimed).
                dispatch.marked([], len(starts), starts)
                self.log.warning(
                    "recording outcomes failed; retrying",
                    count=len(pending),
                    starts=len(starts),
                    error=str(exc).splitlines()[0],
                )
                time.sleep(0.5)
                continue
            if starts:
                ours = [w for w in starts if w.instance.id in marked]
                dispatch.marked(ours, len(starts))
                if len(ours) < len(starts):
                    self._forget([w for w in starts if w.instance.id not in marked])

    def _has_results(self) -> bool:
        return not self._results.empty()

    def _write(self, batch: list[tuple[Work, dict[str, Any]]], starts: list[Work]) -> set[int]:
        """Write ``batch``'s outcomes and record ``starts``; returns the ids of those
        whose start was recorded."""
        assert self.id is not None
        starting = [w.instance.id for w in starts]
        if not batch:  # only starts to record: on PostgreSQL, one round trip
            return self.app.db.mark_started_alone(starting, self.id)
        now = datetime.now(UTC)
        rows = [
            {
                "id": w.instance.id,
                "executor_id": self.id,
                "status": o["status"],
                "started_at": o.get("started_at"),
                "ended_at": o.get("ended_at") or now,
                "exit_code": o.get("exit_code"),
                "revision": o.get("revision"),
                "error": o.get("error"),
                "log_key": w.log_key,
                "pid": o.get("pid"),
            }
            for w, o in batch
        ]
        # Most outcomes are written in one executemany. Those that may lead somewhere (a
        # retry, the next nodes of a Job) are written one by one, so that what follows is
        # done only if this executor's write was the one that ended the instance.
        plain, special = [], []
        for row, (work, _) in zip(rows, batch, strict=True):
            status = InstanceStatus(row["status"])
            if work.instance.job_instance_id is not None or wants_retry(
                work.task, work.instance, status
            ):
                special.append((row, work, status))
            else:
                plain.append(row)
        with self.app.db.transaction() as tx:
            marked = self.app.db.mark_started(tx, starting, self.id)
            self.app.db.finish_instances(tx, plain)
            ended = [
                (w.instance, w.task, st)
                for row, w, st in special
                if self.app.db.finish_instance(tx, row)
            ]
            self._release([w for w, _ in batch], tx)
            if ended:
                after_end(self.app, tx, ended)
            alert_events.executor_wrote(self.app, tx, self.id, plain, batch)
        durable = datetime.now(UTC)
        slowest = (durable - min(r["ended_at"] for r in rows)).total_seconds() * 1000
        if slowest > self.stats["end_to_durable_max_ms"]:
            self.stats["end_to_durable_max_ms"] = round(slowest)
        if slowest > 10:  # rare: count them only then
            late = durable - timedelta(milliseconds=10)
            self.stats["end_to_durable_over_10ms"] += sum(1 for r in rows if r["ended_at"] < late)
        self.stats["writes"] += 1
        self.stats["written"] += len(batch)
        self.app.after_finish([r["id"] for r in rows], [w.log_path for w, _ in batch])
        return marked

    def _shutdown(self) -> None:
        """Runs on the claim thread once stopping: drain slots, flush, record the end."""
        given_back = True
        if not self._can_give_back and self._kill:
            self._dispatch.stop_marking()
            for work in self._dispatch.unstarted():  # a queue that cannot take it back
                reason = "the executor was killed before it started"
                self._results.put((work, outcome(InstanceStatus.INTERRUPTED, reason)))
        elif self._can_give_back:
            self._dispatch.stop_marking()  # returns once no start is being recorded
            unstarted = self._dispatch.unstarted()
            # Claimed, not started: not this executor's to run any more. Retried while
            # the database is away: if they cannot go back, the row is left unended,
            # so that a survivor settles it (and gives them back) once it goes stale.
            for attempt in range(30 if unstarted else 0):
                if self._give_back(unstarted, keep=False):
                    break
                time.sleep(min(2**attempt * 0.1, 5.0))
            else:
                given_back = not unstarted
        else:
            # A queue that cannot take work back (norc-sqs): run what was claimed.
            self._dispatch.drain_claimed()
            self._dispatch.stop_marking()
        self._dispatch.close()
        for thread in self._slot_threads:
            thread.join()
        self._results.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self.status = DaemonStatus.KILLED if self._kill else DaemonStatus.ENDED
        assert self.id is not None
        for attempt in range(30 if given_back else 0):
            try:
                self.app.db.end_daemon(self.id, self.status.value)  # a settled row stays so
                break
            except (SQLAlchemyError, DatabaseError):
                time.sleep(min(2**attempt * 0.1, 5.0))
        self.log.info("executor ended", status=self.status.value, **self.stats)
        for queue in self.queues:
            with contextlib.suppress(Exception):
                queue.close()
        self._log_file.close()
        self.app.keep_daemon_log("executor", self.id)
        self._finished.set()
