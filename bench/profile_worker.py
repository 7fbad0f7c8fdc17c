"""Profile a worker process's own per-instance path, in-process, with cProfile.

    python bench/profile_worker.py [N] [LOG_DIR]

Runs ``norc.executor.worker._serve`` (the loop a worker process runs) in this process,
fed N no-op jobs through its two pipes by a thread, exactly as an executor's slot would
send them, and prints the CPU per instance and the functions that take it.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import tempfile
import threading
import time

from norc.executor import worker
from norc.testing import NoopTask


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    log_dir = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="norc-worker-")
    job_r, job_w = os.pipe()
    res_r, res_w = os.pipe()
    cls = NoopTask

    def feed() -> None:
        with os.fdopen(res_r, "rb") as replies:
            for i in range(n):
                job = {
                    "op": "run",
                    "instance_id": i,
                    "attempt": 1,
                    "task_id": 1,
                    "task_name": "w",
                    "task_type": cls.type_name,
                    "type_path": f"{cls.__module__}:{cls.__qualname__}",
                    "params": {},
                    "settings": {"description": "", "timeout": None, "finally_timeout": 10.0},
                    "log_path": f"{log_dir}/tasks/w/w-{i}",
                    "fire_time": None,
                    "deadline": None,
                }
                os.write(job_w, json.dumps(job).encode() + b"\n")
                replies.readline()  # ran
                replies.readline()  # done
        os.close(job_w)

    feeder = threading.Thread(target=feed)
    feeder.start()
    saved = os.dup(1), os.dup(2)  # the worker points fds 1 and 2 at each log
    profile = cProfile.Profile()
    t0, c0 = time.perf_counter(), time.process_time()
    profile.enable()
    worker._serve(job_r, res_w)
    profile.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    feeder.join()
    print(f"{1e6 * wall / n:.0f} µs wall, {1e6 * cpu / n:.0f} µs CPU per instance (profiled)")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
