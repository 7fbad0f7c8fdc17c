"""In-process wake-ups: an enqueue in this process wakes this process's idle executors.

Cross-process wake-ups are the queue's business (LISTEN/NOTIFY on PostgreSQL); this is
the cheap path for an application that enqueues and executes in one process.
"""

from __future__ import annotations

import threading


class Wakeups:
    """A generation counter per queue name, with waiting."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generations: dict[str, int] = {}

    def generation(self, name: str) -> int:
        """The current generation of ``name``; pass it to :meth:`wait`."""
        with self._cond:
            return self._generations.get(name, 0)

    def notify(self, name: str) -> None:
        """Something changed on queue ``name``: wake everyone waiting on it."""
        with self._cond:
            self._generations[name] = self._generations.get(name, 0) + 1
            self._cond.notify_all()

    def wait(self, name: str, generation: int, timeout: float) -> bool:
        """Wait until ``name`` moves past ``generation`` or ``timeout`` passes; True if it moved."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._generations.get(name, 0) != generation, timeout
            )
