"""A worker process's own cost per no-op instance: measured, then profiled.

    python bench/profile_worker.py [N] [LOG_DIR]

1. *Measured*: a real worker process (``WorkerProcess``, as a slot starts it) is sent N
   no-op jobs one at a time; its CPU (user and system, from ``/proc``) per instance is
   printed, with the round trip and the sending side's CPU.
2. *Profiled*: ``norc.executor.worker._serve`` runs in this process under cProfile,
   reading the same N jobs from a file and answering into ``/dev/null``, so nothing
   else shares the interpreter while it is profiled.

The jobs are what an executor sends: each instance's own part, and the task's template
once (see ``norc.executor.worker``).
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import select
import sys
import tempfile
import time
from typing import Any

from norc.executor.worker import WorkerProcess, _serve
from norc.testing import NoopTask

TEMPLATE_KEY = 1


def _template() -> dict[str, Any]:
    cls = NoopTask
    return {
        "op": "run",
        "task_id": 1,
        "task_name": "bench-noop",
        "task_type": cls.type_name,
        "type_path": f"{cls.__module__}:{cls.__qualname__}",
        "params": {},
        "settings": {
            "description": "",
            "timeout": None,
            "finally_timeout": 10.0,
            "max_retries": 0,
            "retry_delay": 1.0,
            "retry_backoff": 2.0,
            "retry_max_delay": 3600.0,
            "retry_jitter": 0.1,
            "retry_on": ["ERROR"],
            "overlap": "allow",
            "concurrency_limit": None,
        },
    }


def _job(i: int, log_dir: str) -> dict[str, Any]:
    """The instance's own part of a job, as ``Executor._prepare`` builds it."""
    return {
        "op": "run",
        "instance_id": i,
        "attempt": 1,
        "log_path": f"{log_dir}/w-{i}.log",
        "fire_time": None,
    }


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measure(n: int, log_dir: str) -> None:
    """CPU per instance of a real worker process fed one job at a time."""
    worker = WorkerProcess()
    worker.ensure()
    assert worker.pid is not None
    template = _template()

    def run(count: int) -> None:
        for i in range(count):
            worker.send(_job(i, log_dir), TEMPLATE_KEY, template)
            done = False
            while not done:  # "ran" with done=true, or "ran" then "done" after finally_
                select.select([worker.result_fd], [], [])
                done = any(m.get("done") or m["event"] == "done" for m in worker.read_ready())

    run(200)  # warm: imports, the task class, the template
    (u0, s0), t0, mine0 = _cpu(worker.pid), time.perf_counter(), os.times()
    run(n)
    (u1, s1), wall, mine1 = _cpu(worker.pid), time.perf_counter() - t0, os.times()
    worker.close()
    sender = mine1.user + mine1.system - mine0.user - mine0.system
    print(
        f"worker process: {1e6 * (u1 - u0 + s1 - s0) / n:.0f} µs CPU per instance"
        f" (user {1e6 * (u1 - u0) / n:.0f}, system {1e6 * (s1 - s0) / n:.0f});"
        f" round trip {1e6 * wall / n:.0f} µs; sending side {1e6 * sender / n:.0f} µs CPU"
    )


def profile(n: int, log_dir: str) -> None:
    """cProfile of ``_serve`` in this process, jobs read from a file."""
    with tempfile.TemporaryFile() as jobs:
        for i in range(n):
            job = {**_job(i, log_dir), "template_key": TEMPLATE_KEY}
            if i == 0:  # a worker gets the template once
                job["template"] = _template()
            jobs.write(json.dumps(job).encode() + b"\n")
        jobs.seek(0)
        replies = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1), os.dup(2)  # the worker points fds 1 and 2 at each log
        profiler = cProfile.Profile()
        c0 = time.process_time()
        profiler.enable()
        try:
            _serve(os.dup(jobs.fileno()), replies)
        finally:
            profiler.disable()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    cpu = time.process_time() - c0
    print(f"\nin-process, profiled: {1e6 * cpu / n:.0f} µs CPU per instance")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    log_dir = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="norc-worker-")
    measure(n, log_dir)
    profile(n, log_dir)


if __name__ == "__main__":
    main()
