"""Reusable worker processes: each runs instances one at a time, in its own process group.

The executor starts a worker with ``python -m norc.executor.worker RFD WFD`` in a new
session, so the worker and everything a task starts (a shell, its children) share one
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
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
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
            [self.python, "-m", "norc.executor.worker", str(job_r), str(res_w)],
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
            with contextlib.suppress(OSError):
                os.close(self._to)  # EOF on its job pipe: the worker exits
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


def _serve(job_fd: int, result_fd: int) -> None:
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


def main(argv: list[str]) -> None:
    """Entry point of a worker process."""
    # No signal set-up on purpose: the worker runs in its own session, so a terminal's
    # ^C reaches only the executor, and dispositions set here would leak into commands.
    # Line buffering keeps a task's prints in order with Norc's own log lines.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    _serve(int(argv[1]), int(argv[2]))


if __name__ == "__main__":
    main(sys.argv)
