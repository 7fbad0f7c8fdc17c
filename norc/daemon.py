"""What executors and schedulers share: a row in ``norc_daemons``, a heartbeat, requests.

A daemon beats its heartbeat every ``heartbeat_interval`` seconds and looks for a
request (STOP, KILL, PAUSE, RESUME, RELOAD) twice a second, so it acts on one within a
second. A database that stops answering is logged and retried with backoff; the
daemon keeps running.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from norc.errors import DatabaseError
from norc.status import Request

if TYPE_CHECKING:
    from norc.store.database import Database

REQUEST_POLL = 0.5

log = structlog.get_logger("norc.daemon")


def run_blocking(
    start: Callable[[], object] | None,
    finished: threading.Event,
    on_signal: Callable[[int], None] | None,
) -> None:
    """Start a daemon (unless ``start`` is None) and block until ``finished`` is set.

    With ``on_signal``, SIGINT and SIGTERM are routed to it while blocking (the
    command-line daemons ask for that); the previous handlers come back afterwards.
    """
    previous: dict[signal.Signals, Any] = {}
    if on_signal is not None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _frame: on_signal(signum))
    try:
        if start is not None:
            start()
        while not finished.wait(0.2):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def hostname() -> str:
    """This host's name as recorded on daemons and instances."""
    return socket.gethostname()


class Heartbeat:
    """A thread that beats for one daemon row, hands requests to ``on_request`` and,
    after each beat, runs ``on_beat(trusted)``: housekeeping every live daemon helps with.
    ``trusted`` is True once this daemon has beaten without trouble for ``judge_after``
    seconds, the condition for judging other daemons dead."""

    def __init__(
        self,
        db: Database,
        daemon_id: int,
        interval: float,
        on_request: Callable[[Request], None],
        status: Callable[[], str],
        on_beat: Callable[[bool], object] | None = None,
        judge_after: float = 0.0,
        on_poll: Callable[[], object] | None = None,
        error: Callable[[], str | None] | None = None,
    ) -> None:
        self.db = db
        self.daemon_id = daemon_id
        self.interval = interval
        self.on_request = on_request
        self.status = status
        self.on_beat = on_beat
        #: Called at every poll (twice a second), e.g. to notice instances stopped elsewhere.
        self.on_poll = on_poll
        #: What the daemon row's ``error`` says at each beat (None: no error), if given.
        self.error = error
        #: Seconds of trouble-free beating before ``on_beat`` is trusted to judge others.
        self.judge_after = judge_after
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"norc-heartbeat-{daemon_id}", daemon=True
        )

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
        wait = REQUEST_POLL
        # Only a daemon that has itself beaten without trouble for a whole timeout may
        # judge others dead: after a database outage every heartbeat is stale, and the
        # first daemon back must not condemn the others, which are alive and retrying.
        healthy_since = time.monotonic()
        while not self._stop.wait(wait):
            try:
                now = time.monotonic()
                if now - last_beat >= self.interval:
                    request = self._beat()
                    last_beat = now
                    self._after_beat(trusted=now - healthy_since >= self.judge_after)
                else:
                    request = self.db.pending_request(self.daemon_id)
                wait = REQUEST_POLL
                if request:
                    self._deliver(request)
                if self.on_poll is not None:
                    self.on_poll()
            except (SQLAlchemyError, DatabaseError) as exc:
                # The database is away: keep the daemon running, retry with backoff.
                # Never back off so far that a live daemon looks dead to the others.
                wait = min(wait * 2, 10.0, max(REQUEST_POLL, self.judge_after / 3))
                healthy_since = time.monotonic() + wait
                last_beat = 0.0
                log.warning(
                    "heartbeat failed; retrying",
                    daemon=self.daemon_id,
                    error=str(exc).splitlines()[0],
                    retry_in=wait,
                )

    def _deliver(self, request: str) -> None:
        self.db.set_daemon(self.daemon_id, request=None)
        try:
            parsed = Request(request)
        except ValueError:
            log.warning("ignoring unknown request", daemon=self.daemon_id, request=request)
            return
        self.on_request(parsed)
        # Show the new status at once, so `--wait` returns within a second.
        self._beat()

    def _beat(self) -> str | None:
        if self.error is None:
            return self.db.beat(self.daemon_id, self.status())
        return self.db.beat(self.daemon_id, self.status(), error=self.error())

    def _after_beat(self, *, trusted: bool) -> None:
        if self.on_beat is None:
            return
        try:
            self.on_beat(trusted)
        except (SQLAlchemyError, DatabaseError):
            raise
        except Exception:
            log.exception("housekeeping after a heartbeat failed", daemon=self.daemon_id)
