"""What executors and schedulers share: a row in ``norc_daemons``, a heartbeat, requests.

A daemon beats its heartbeat every ``heartbeat_interval`` seconds and looks for a
request (STOP, KILL, PAUSE, RESUME, RELOAD) twice a second, so it acts on one within a
second. A database that stops answering is logged and retried with backoff; the
daemon keeps running.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import SQLAlchemyError

from norc.errors import DatabaseError
from norc.status import Request

if TYPE_CHECKING:
    from norc.store.database import Database

REQUEST_POLL = 0.5

log = structlog.get_logger("norc.daemon")


def hostname() -> str:
    """This host's name as recorded on daemons and instances."""
    return socket.gethostname()


class Heartbeat:
    """A thread that beats for one daemon row and hands requests to ``on_request``."""

    def __init__(
        self,
        db: Database,
        daemon_id: int,
        interval: float,
        on_request: Callable[[Request], None],
        status: Callable[[], str],
    ) -> None:
        self.db = db
        self.daemon_id = daemon_id
        self.interval = interval
        self.on_request = on_request
        self.status = status
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"norc-heartbeat-{daemon_id}", daemon=True
        )
        self.pid = os.getpid()

    def start(self) -> None:
        """Start beating."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (the caller records the daemon's final status)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        last_beat = 0.0
        backoff = REQUEST_POLL
        while not self._stop.wait(REQUEST_POLL if backoff == REQUEST_POLL else backoff):
            try:
                now = time.monotonic()
                if now - last_beat >= self.interval:
                    request = self.db.beat(self.daemon_id, self.status())
                    last_beat = now
                else:
                    request = self.db.pending_request(self.daemon_id)
                backoff = REQUEST_POLL
            except (SQLAlchemyError, DatabaseError) as exc:
                backoff = min(backoff * 2, 10.0)
                log.warning(
                    "heartbeat failed; retrying",
                    daemon=self.daemon_id,
                    error=str(exc).splitlines()[0],
                    retry_in=backoff,
                )
                continue
            if request:
                try:
                    parsed = Request(request)
                except ValueError:
                    log.warning("ignoring unknown request", request=request)
                    self.db.set_daemon(self.daemon_id, request=None)
                    continue
                self.db.set_daemon(self.daemon_id, request=None)
                self.on_request(parsed)
