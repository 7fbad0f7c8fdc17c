"""Reusable worker processes: each runs instances one at a time, in its own process group.

The executor starts a worker (:data:`_BOOTSTRAP`, which runs this module) with two pipe
fds in a new session, so the worker and everything a task starts (a shell, its children) share one
process group. On a timeout or a kill request the executor kills that whole group with
SIGKILL (nothing a hung task does can block it) and starts a fresh worker, which then
runs the task's ``finally_``. Between instances the worker is reused, so a no-op costs a
pipe round trip, not an interpreter start.

Messages are JSON lines. A new worker first says ``{"event": "ready"}`` (a timeout
counts from then, not from the spawn); the executor sends a job (``op`` = ``run`` |
``finally``), the worker answers ``{"event": "ran", ...outcome}`` after ``run`` and
``{"event": "done"}`` after ``finally_``; a task that does not override ``finally_``
gets one answer, ``{"event": "ran", "done": true, ...}``, saving a write and a wake-up
per instance. Every message carries ``t``, the worker's clock as it was written.

A job carries only what is particular to its instance (id, attempt, log path, fire time;
for a ``finally`` after a kill, the killed run's deadline; ``batch`` when it is part of
a backlog, see :class:`_Scheduling`) and a ``template_key``: the
part every instance of a task revision shares (class path, name, params, settings,
timeout) travels once per worker, as ``template`` in the
first job that needs it, and the worker keeps it. The per-instance message stays small
whatever the task's params, and the worker loads and checks the task's class and
params once per revision instead of once per instance.

While running an instance, the worker's fds 1 and 2 point at the
instance's log file, so output from Python, C extensions and child processes all land
there.

**A worker does not outlive its executor.** The executor ends a worker by sending
``{"op": "exit"}`` and closing the job pipe; a worker that finds the pipe closed without
that message, or whose parent changes, takes its executor for dead (SIGKILL included)
and SIGKILLs its own process group: itself, the task and what the task started. A
thread of the worker (:func:`_watch_executor`) watches for that while an instance runs;
it sleeps in ``poll()`` on the job pipe asking for no event, so only the pipe's hang-up
wakes it, and every :data:`PARENT_CHECK` seconds for a look at ``getppid()``: nothing
per instance. ``PR_SET_PDEATHSIG`` is not used: its SIGKILL reaches the worker before
the thread can kill the group, leaving the task's processes behind.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from norc.abc import Task, check_params
from norc.errors import NorcError
from norc.executor.running import (
    TaskLoadError,
    build_task,
    execute,
    flush_std,
    load_class,
    run_finally,
)
from norc.logs import open_log, open_new_log
from norc.status import InstanceStatus

#: Seconds between a worker's looks at whether its parent is still the process that
#: started it, for the case that the executor's end of the job pipe outlives it (a
#: process forked from the executor without exec holds a copy).
PARENT_CHECK = 1.0
#: Seconds a worker whose job pipe was closed under a running instance waits for the
#: kernel to show its parent gone (it was just ended) before it ends its group anyway
#: (an executor that closed the pipe while alive abandoned the run; or a wrapper
#: process, not the executor, is the parent).
HANGUP_GRACE = 1.0
#: The job that tells a worker to exit (any other end of the job pipe: the executor died).
EXIT = {"op": "exit"}
#: How a worker process starts: on Linux it first asks the kernel to SIGKILL it when the
#: thread that started it ends (``PR_SET_PDEATHSIG``), then imports Norc, which on a busy
#: host takes seconds; its watchdog thread (:func:`_watch_executor`) takes over from
#: there and turns that off. So a worker whose executor dies while it is still starting
#: goes at once, not once its imports are done (it has no task yet: killing it alone is
#: enough); one that finds its job pipe already hung up (the executor died while the
#: interpreter started, before the signal was asked for) exits. ``ctypes`` and
#: ``select`` are all it imports before that.
_BOOTSTRAP = """\
import sys
if sys.platform.startswith("linux"):
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass
import os, select
_hangup = select.poll()
_hangup.register(int(sys.argv[1]), 0)
if _hangup.poll(0):  # the job pipe's writer is gone: the executor died as this started
    os._exit(1)
import runpy
runpy.run_module("norc.executor.worker", run_name="__main__", alter_sys=True)
"""


class WorkerDied(Exception):
    """The worker process ended while it had an instance (crash, os._exit, OOM kill)."""


class WorkerProcess:
    """The executor's handle on one worker process."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.proc: subprocess.Popen[bytes] | None = None
        #: How many lines this process wrote ("ready" first); 0: it never got going.
        self.answered = 0
        self._to: int | None = None
        self._from: int | None = None
        self._buffer = b""
        #: Template keys this process has received (a fresh process has none).
        self._templates: set[int] = set()

    @property
    def ready(self) -> bool:
        """Whether the worker is running and has said "ready" (it can start a job now)."""
        return self.answered > 0 and self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The worker's pid (also its process group id), if it is running."""
        return self.proc.pid if self.proc else None

    def ensure(self) -> bool:
        """Start the worker if it is not running; True if it was started now.

        Raises ``OSError`` when no process can be started (a broken host).
        """
        if self.proc is not None and self.proc.poll() is None:
            return False
        self.close()
        self.answered = 0
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        env = dict(os.environ)
        # The worker imports task classes by module path: give it our import path.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [self.python, "-c", _BOOTSTRAP, str(job_r), str(res_w)],
            pass_fds=(job_r, res_w),
            start_new_session=True,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        os.close(job_r)
        os.close(res_w)
        self._to, self._from, self._buffer = job_w, res_r, b""
        self._templates = set()
        return True

    def send(
        self,
        job: dict[str, Any],
        template_key: int,
        template: dict[str, Any],
        *,
        batch: bool = False,
    ) -> None:
        """Hand the worker a job (its instance's part), with its task's ``template`` if
        this process has not had that key yet; raises :class:`WorkerDied` if it is gone.

        ``batch``: the job is part of a backlog (sent behind a run in progress, or more
        claimed work waits): the worker runs it as a batch process (see :class:`_Scheduling`).
        """
        assert self._to is not None
        message = {**job, "template_key": template_key}
        if template_key not in self._templates:
            message["template"] = template
        if batch:
            message["batch"] = True
        try:
            os.write(self._to, json.dumps(message).encode() + b"\n")
        except BrokenPipeError:
            raise WorkerDied(self._exit_description()) from None
        self._templates.add(template_key)

    @property
    def result_fd(self) -> int | None:
        """The pipe the worker answers on, for a caller that polls many workers at once."""
        return self._from

    def read_ready(self) -> list[dict[str, Any]]:
        """The messages that have arrived, once a poll said :attr:`result_fd` is readable
        (the worker loop polls every worker at once): one read, complete lines only.
        Raises :class:`WorkerDied` at end of file."""
        assert self._from is not None
        chunk = os.read(self._from, 65536)
        if not chunk:
            raise WorkerDied(self._exit_description())
        self._buffer += chunk
        messages = []
        while b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            self.answered += 1
            messages.append(json.loads(line))
        return messages

    def kill(self) -> int:
        """SIGKILL the worker's whole process group and reap the worker; returns how many
        jobs it had finished that nobody had read yet (answers that crossed the kill)."""
        unread = b""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            unread = self._buffer + self._drain()
        self.close()
        finished = 0
        for line in unread.split(b"\n")[:-1]:  # complete lines only
            try:
                message = json.loads(line)
            except ValueError:  # not ours: assume the worst, that it went on
                finished += 1
                continue
            finished += bool(message.get("done") or message.get("event") == "done")
        return finished

    def _drain(self) -> bytes:
        """Everything in the answer pipe now, without waiting (a task's escaped child
        could hold its write end open)."""
        if self._from is None:
            return b""
        os.set_blocking(self._from, False)
        chunks = []
        with contextlib.suppress(OSError):  # BlockingIOError: nothing more for now
            while chunk := os.read(self._from, 65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Ask an idle worker to exit and close the pipes."""
        if self._to is not None:
            # Said before the pipe closes: an end of the pipe without it is an executor
            # that died, and the worker would end its process group. Never blocks (a
            # worker that is gone, or a full pipe: an error, and the wait below decides).
            with contextlib.suppress(OSError):
                os.set_blocking(self._to, False)
                os.write(self._to, json.dumps(EXIT).encode() + b"\n")
            with contextlib.suppress(OSError):
                os.close(self._to)
        if self._from is not None:
            with contextlib.suppress(OSError):
                os.close(self._from)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._to = self._from = None
        self.proc = None

    def _exit_description(self) -> str:
        if self.proc is None:
            return "worker process is not running"
        code = self.proc.wait()
        if code < 0:
            return (
                f"worker process {self.proc.pid} was killed by signal {signal.Signals(-code).name}"
            )
        return f"worker process {self.proc.pid} exited with code {code}"


# -- the worker side ---------------------------------------------------------------------


class _Template:
    """One task revision as a worker keeps it: the job fields all its instances share,
    the task's class (or why it cannot be loaded) and its params as checked JSON."""

    __slots__ = ("cls", "error", "fields", "params_json")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.cls: type[Task] | None = None
        self.error: str | None = None
        # Each instance gets its own copy of the params (decoded from this text), so a
        # task that mutates a list it was given cannot change the next instance's.
        self.params_json = json.dumps(fields["params"])

    def load(self) -> None:
        """Load the class and check the params; on failure, ``error`` says why. Tried
        again for each instance until it works: the class may be installed meanwhile."""
        if self.error is not None:
            importlib.invalidate_caches()  # a module file that appeared since
        try:
            cls = load_class(self.fields["type_path"], self.fields["task_type"])
            check_params(cls, self.fields["params"], stored=True)
        except Exception as exc:  # noqa: BLE001 - reported as each instance's ERROR
            self.error = str(exc) if isinstance(exc, NorcError) else f"{type(exc).__name__}: {exc}"
        else:
            self.cls, self.error = cls, None


class _Scheduling:
    """The worker's CPU scheduling policy: batch while it works through a backlog.

    A job that is part of a backlog (sent *ahead*, behind a run in progress, or started
    while more claimed work waits: ``"batch"`` in the job) is run with Linux's
    ``SCHED_BATCH``; any other job with the policy the worker started with. A batch
    process that is woken (by the executor writing its next job) does not preempt the
    process running on that core. On two cores that process was often one of the
    executor's threads holding its GIL, which then stalled the executor's claim and
    recorder threads too; batch halved the executor's involuntary context switches and
    drained no-ops up to 8% faster (docs/performance.md). A lone job into an idle executor
    (the latency case) keeps the normal policy, so that it starts at once. The policy
    changes only where the executor passes from one case to the other (each change is
    a system call that may let another process run). Child processes a task starts
    inherit it. A worker started with any policy but the normal one (``SCHED_IDLE``,
    real-time: the embedding application's choice) is left alone, as is every platform
    without ``sched_setscheduler``.
    """

    def __init__(self) -> None:
        self.batch = False
        try:
            self.enabled = os.sched_getscheduler(0) == os.SCHED_OTHER
        except (AttributeError, OSError):  # not Linux, or a sandbox that refuses to say
            self.enabled = False

    def set(self, batch: bool) -> None:
        """Switch to (or back from) batch if the job asks for what the worker is not."""
        if batch == self.batch or not self.enabled:
            return
        try:
            policy = os.SCHED_BATCH if batch else os.SCHED_OTHER
            os.sched_setscheduler(0, policy, os.sched_param(0))
        except OSError:  # refused (a sandbox's seccomp filter): keep the policy as it is
            self.enabled = False
        else:
            self.batch = batch


def _serve(job_fd: int, result_fd: int) -> bool:
    """Run the jobs read from ``job_fd``; True if told to exit, False at end of file."""
    # Up: the job waiting in the pipe starts now, and its timeout counts from now, not
    # from when the executor spawned this interpreter.
    _reply(result_fd, {"event": "ready"})
    # Between instances fds 1 and 2 go nowhere; during one they go to its log file.
    devnull = os.open(os.devnull, os.O_WRONLY)
    templates: dict[int, _Template] = {}
    scheduling = _Scheduling()
    with os.fdopen(job_fd, "rb") as jobs:
        for line in jobs:
            message = json.loads(line)
            if message == EXIT:
                return True
            scheduling.set(message.pop("batch", False))
            key = message["template_key"]
            if "template" in message:
                templates[key] = _Template(message.pop("template"))
            template = templates[key]
            job = {**template.fields, **message}
            # A run's log is new (a finally_ after a kill appends to it).
            log_file = (open_new_log if job["op"] == "run" else open_log)(job["log_path"])
            os.dup2(log_file.fileno(), 1)
            os.dup2(log_file.fileno(), 2)
            try:
                _handle(job, template, log_file, result_fd)
            finally:
                flush_std()
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                log_file.close()
    return False


def _reply(fd: int, message: dict[str, Any]) -> None:
    # "t": when the step ended by this worker's clock: the end of a run as it happened,
    # not as the executor got round to it, and the start of the job sent ahead, if any.
    message["t"] = time.time()
    os.write(fd, json.dumps(message).encode() + b"\n")


def _handle(job: dict[str, Any], template: _Template, log_file: Any, fd: int) -> None:
    try:
        if template.cls is None:
            template.load()
        if template.error is not None:
            raise TaskLoadError(template.error)
        assert template.cls is not None
        job["params"] = json.loads(template.params_json)
        task = build_task(template.cls, job, checked=True)
    except Exception as exc:  # noqa: BLE001 - reported as the instance's ERROR
        message = str(exc) if isinstance(exc, TaskLoadError) else f"{type(exc).__name__}: {exc}"
        log_file.write(f"[norc] cannot load task: {message}\n".encode())
        _reply(
            fd,
            {
                "event": "ran",
                "status": InstanceStatus.ERROR.value,
                "error": message,
                "exit_code": None,
                "revision": None,
            },
        )
        _reply(fd, {"event": "done"})
        return
    outcome, ctx = execute(task, job, log_file, with_run=job["op"] == "run")
    if job["op"] == "run":
        if type(task).finally_ is Task.finally_:  # nothing left to run: answer once
            _reply(fd, {"event": "ran", "done": True, **outcome})
            return
        _reply(fd, {"event": "ran", **outcome})
    run_finally(task, ctx)
    _reply(fd, {"event": "done"})


def _end_group(why: str) -> None:
    """The executor is gone: SIGKILL this worker's process group (the worker, the task and
    every process it started that kept the group), so no run goes on that nobody records
    and a retry elsewhere does not run beside it."""
    with contextlib.suppress(OSError):  # fd 2 is the running instance's log, or /dev/null
        os.write(2, f"[norc] {why}: killing the worker's process group\n".encode())
    pid = os.getpid()
    if os.getpgrp() == pid:  # as the executor starts it: in a session of its own
        os.killpg(pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)  # started some other way: this process only


def _no_death_signal() -> None:
    """Turn off the ``PR_SET_PDEATHSIG`` that :data:`_BOOTSTRAP` set: from now on the
    watchdog kills the worker's whole process group, task included, when the executor
    dies; the kernel's signal would kill the worker alone, first."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)


def _watch_executor(job_fd: int) -> None:
    """Start the thread that ends this worker's process group once its executor is gone,
    whatever the worker is doing (see the module doc)."""
    _no_death_signal()  # this thread ends the whole group instead (see _BOOTSTRAP)
    parent = os.getppid()
    hangup = select.poll()
    # No event asked for: poll() still reports POLLHUP, once every write end of the pipe
    # is closed (the executor's, when it exits), and not the jobs that arrive. A copy of
    # the fd, so that the main thread closing its own on the way out changes nothing.
    hangup.register(os.dup(job_fd), 0)

    def watch() -> None:
        while not hangup.poll(PARENT_CHECK * 1000):
            if os.getppid() != parent:
                _end_group("the executor is gone (this worker has another parent)")
        # Closed. By an executor that asked this worker to exit: it is idle, and the main
        # thread is on its way out. By the kernel, as the executor ended: the kernel
        # reparents this worker a moment later.
        deadline = time.monotonic() + HANGUP_GRACE
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.005)
        _end_group("the executor is gone (the job pipe closed)")

    threading.Thread(target=watch, name="norc-executor-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    """Entry point of a worker process."""
    # No signal set-up on purpose: the worker runs in its own session, so a terminal's
    # ^C reaches only the executor, and dispositions set here would leak into commands.
    # Line buffering keeps a task's prints in order with Norc's own log lines.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    job_fd = int(argv[1])
    _watch_executor(job_fd)
    if not _serve(job_fd, int(argv[2])):
        # The job pipe ended without the executor asking: it died while this worker was
        # idle. What earlier instances left running in the group goes with it.
        _end_group("the executor is gone (the job pipe closed)")


if __name__ == "__main__":
    main(sys.argv)
