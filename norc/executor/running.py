"""Running one task instance: the part shared by worker processes and in-thread execution.

A *job* is a plain JSON-ready dict the executor builds for each instance (so it can
cross a pipe to a worker): ids, the task's class path, name, params and settings, the
log file path and the deadline.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from datetime import datetime
from typing import IO, Any

from norc.abc import RunContext, Task
from norc.errors import InvalidTaskParams, NorcError
from norc.logs import lazy_event_logger, logfmt_fields, write_event
from norc.status import InstanceStatus


class TaskLoadError(NorcError):
    """The task's class could not be imported or its params did not fit."""


def load_class(type_path: str, type_name: str) -> type[Task]:
    """Import ``module:QualName``; raises :class:`TaskLoadError` naming the type."""
    module_name, _, qualname = type_path.partition(":")
    if module_name == "__main__":
        raise TaskLoadError(
            f"task type {type_name!r} is defined in __main__, which a worker process cannot"
            " import: move it into a module, or run the executor with isolation='thread'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise TaskLoadError(
            f"task type {type_name!r} ({type_path}) is not installed here: {exc}"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise TaskLoadError(f"{type_path} is not a norc.Task subclass")
    return obj


def build_task(cls: type[Task], job: dict[str, Any], *, checked: bool = False) -> Task:
    """The task object for a job (its params come from the database: JSON already).

    ``checked``: the params were already checked against ``cls`` (a worker does it once
    per task revision), so only the class's own ``__init__`` runs.
    """
    if not checked:
        return cls.from_params(
            name=job["task_name"],
            params=job["params"],
            stored=True,
            id=job["task_id"],
            **job["settings"],
        )
    try:
        return cls(name=job["task_name"], id=job["task_id"], **job["settings"], **job["params"])
    except TypeError as exc:
        raise InvalidTaskParams(cls.type_name, str(exc)) from None


def execute(
    task: Task,
    job: dict[str, Any],
    log_file: IO[bytes],
    *,
    with_run: bool = True,
    captured: bool = True,
) -> tuple[dict[str, Any], RunContext]:
    """Run ``task.run`` (unless ``with_run`` is False), returning the outcome dict and context.

    The outcome has ``status``, ``error``, ``exit_code`` and ``revision``. Exceptions
    from the task are FAILURE with their traceback in the log; ``finally_`` is not run
    here (callers bound it separately). ``captured``: the process's stdout and stderr
    point at the log (a worker), so they are flushed before Norc writes its next line.
    """
    logger = lazy_event_logger(log_file, instance=job["instance_id"], task=job["task_name"])
    context = logfmt_fields({"instance": job["instance_id"], "task": job["task_name"]})
    fire = job.get("fire_time")
    timeout = job.get("timeout")
    ctx = RunContext(
        instance_id=job["instance_id"],
        attempt=job["attempt"],
        task_name=job["task_name"],
        fire_time=datetime.fromisoformat(fire) if fire else None,
        # A run's deadline counts from now, its real start; a finally_ run in a fresh
        # worker after a kill is given the deadline of the run it follows.
        deadline=time.time() + timeout if with_run and timeout else job.get("deadline"),
        log=logger,
        log_file=log_file,
    )
    outcome: dict[str, Any] = {"status": None, "error": None, "exit_code": None}
    try:
        outcome["revision"] = task.revision()
    except Exception as exc:  # noqa: BLE001 - a broken revision hook must not fail the run
        logger.warning("revision() failed", error=repr(exc))
        outcome["revision"] = None
    if not with_run:
        return outcome, ctx
    write_event(
        log_file,
        "instance started",
        context,
        {"attempt": job["attempt"], "type": job["task_type"], "revision": outcome["revision"]},
    )
    started = time.monotonic()
    try:
        result = task.run(ctx)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if captured:
            flush_std()
        log_file.write(traceback.format_exc().encode("utf-8", "replace"))
        outcome["status"] = InstanceStatus.FAILURE.value
        outcome["error"] = ctx.error or f"{type(exc).__name__}: {exc}"
    else:
        if captured:
            flush_std()
        failed = result is False
        outcome["status"] = (InstanceStatus.FAILURE if failed else InstanceStatus.SUCCESS).value
        outcome["error"] = ctx.error if failed else None
    outcome["exit_code"] = ctx.exit_code
    write_event(
        log_file,
        "run ended",
        context,
        {
            "status": outcome["status"],
            "seconds": round(time.monotonic() - started, 6),
            "exit_code": ctx.exit_code,
        },
    )
    return outcome, ctx


def run_finally(task: Task, ctx: RunContext, *, captured: bool = True) -> None:
    """Call ``finally_``, logging (never raising) what it raised."""
    try:
        task.finally_(ctx)
    except Exception:
        ctx.log.exception("finally_() raised")
    if captured:
        flush_std()


def flush_std() -> None:
    """Push Python-level buffered output into the log before Norc writes its own lines."""
    # try/except, not contextlib.suppress: this runs twice per instance in a worker, and
    # building the context managers cost more than the flushes of empty buffers.
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - see above
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass  # closed, replaced or gone: nothing to push
