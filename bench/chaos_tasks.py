"""The task the chaos benchmark runs (bench/chaos.py): one line per finished body.

Its own module so that executors' worker processes can import it as
``bench.chaos_tasks`` with the repository on PYTHONPATH (``bench/`` itself must not be
on the path: ``bench/queue.py`` would shadow the standard library's ``queue``).
"""

from __future__ import annotations

import json
import os
import socket
import time

import attrs

from norc import RunContext, Task


@attrs.define(kw_only=True)
class Record(Task):
    """Appends a ``begin`` line, sleeps ``seconds``, then appends one JSON line to
    ``record`` and succeeds.

    The line names the instance, its attempt, the benchmark's ``tag`` (which schedule,
    enqueue stream or Job node it belongs to), the fire time, host, pid and the body's
    start and end. It is written with one ``write`` on a file opened with O_APPEND, so
    lines from concurrent bodies never interleave. A body cut off before its end leaves
    no line: a line is the proof that a body ran to completion.
    """

    record: str
    tag: str
    seconds: float = 0.05

    def run(self, ctx: RunContext) -> bool:
        start = time.time()
        # A first line when the body begins: a chain with no such line never started
        # (what a survivor must give back), one with it and no end line was cut off.
        begun = {"i": ctx.instance_id, "a": ctx.attempt, "begin": start}
        _append(self.record, (json.dumps(begun, separators=(",", ":")) + "\n").encode())
        time.sleep(self.seconds)
        line = {
            "i": ctx.instance_id,
            "a": ctx.attempt,
            "tag": self.tag,
            "fire": ctx.fire_time.timestamp() if ctx.fire_time else None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": start,
            "end": time.time(),
        }
        _append(self.record, (json.dumps(line, separators=(",", ":")) + "\n").encode())
        return True


def _append(path: str, data: bytes) -> None:
    """One ``write`` on an O_APPEND file: lines of concurrent bodies never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
