"""What executors and schedulers share: a row in ``norc_daemons``, a heartbeat, requests.

A daemon beats its heartbeat every ``heartbeat_interval`` seconds and looks for a
request (STOP, KILL, PAUSE, RESUME, RELOAD) twice a second, so it acts on one within a
second. A database that stops answering is logged and retried with backoff; the
daemon keeps running.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO, cast

import structlog
from sqlalchemy.exc import SQLAlchemyError

from norc.errors import ConfigurationError, DaemonSettled, DatabaseError
from norc.logs import event_logger
from norc.status import Request

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from norc.service import Notifier
    from norc.store.database import Database

#: How a daemon's lines look on stderr: for a person at a terminal, or JSON lines.
LogFormat = Literal["console", "json"]

REQUEST_POLL = 0.5

log = structlog.get_logger("norc.daemon")


#: Seconds a stop asked for by a signal waits for running instances before it kills them
#: (``norc executor --stop-timeout``; a service manager's own timeout must be longer).
DEFAULT_STOP_TIMEOUT = 30.0

#: Signals whose first delivery asks for a graceful stop, and whose second kills.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Signals that kill at once.
KILL_SIGNALS = (signal.SIGQUIT,)


class SignalStop:
    """How a command-line daemon answers signals, as service managers expect.

    systemd, Docker, Kubernetes and supervisord send SIGTERM to ask for a graceful stop,
    and a person at a terminal presses Ctrl-C: so the first SIGTERM or SIGINT calls
    ``stop`` (take nothing new, let what runs finish) and, if the daemon has not ended
    ``timeout`` seconds later, ``kill``; a second one, or SIGQUIT, calls ``kill`` at once
    (Celery's warm and cold shutdown).
    """

    def __init__(
        self,
        stop: Callable[[], object],
        kill: Callable[[], object],
        timeout: float = DEFAULT_STOP_TIMEOUT,
        *,
        stopping: str = "taking nothing new, running instances finish",
    ) -> None:
        if not timeout > 0:  # NaN too
            raise ConfigurationError(f"stop timeout must be > 0 seconds, got {timeout!r}")
        self.stop = stop
        self.kill = kill
        self.timeout = timeout
        #: What the daemon does on a graceful stop, for the log line that says so.
        self.stopping = stopping
        #: When the first stop signal came (monotonic), None before.
        self.stop_since: float | None = None
        self.killed = False

    def handle(self, signum: int) -> None:
        """React to one signal (called by :func:`run_blocking`'s loop, not the handler)."""
        name = signal.Signals(signum).name
        if signum in KILL_SIGNALS or self.stop_since is not None:
            self._kill(f"{name}: killing running instances")
            return
        self.stop_since = time.monotonic()
        if self.kill is self.stop:  # nothing to kill (a scheduler)
            log.info(f"stopping: {self.stopping}", signal=name)
        else:
            log.info(
                f"stopping: {self.stopping}",
                signal=name,
                stop_timeout=self.timeout,
                then="a second SIGTERM or SIGINT, or SIGQUIT, kills them",
            )
        self.stop()

    def check_timeout(self) -> None:
        """Kill once a graceful stop has taken longer than :attr:`timeout`."""
        if (
            self.stop_since is not None
            and not self.killed
            and time.monotonic() - self.stop_since >= self.timeout
        ):
            self._kill(f"stop timeout ({self.timeout:g} s) expired: killing running instances")

    def _kill(self, why: str) -> None:
        if self.stop_since is None:
            self.stop_since = time.monotonic()
        if not self.killed:
            self.killed = True
            log.warning(why)
        self.kill()


def run_blocking(
    start: Callable[[], object] | None,
    finished: threading.Event,
    signals: SignalStop | None,
    on_started: Callable[[], object] | None = None,
    *,
    notifier: Notifier | None = None,
    alive: Callable[[], float | None] | None = None,
) -> None:
    """Start a daemon (unless ``start`` is None) and block until ``finished`` is set.

    With ``signals`` (the command-line daemons ask for it), SIGTERM, SIGINT and SIGQUIT
    are routed to it while blocking (see :class:`SignalStop`), from before the start, so
    a signal arriving while it starts still stops it cleanly; the previous handlers come
    back afterwards. ``on_started`` runs once it has started.

    With ``notifier``, the service manager hears READY once started, STOPPING when a
    stop begins (a signal) or at the latest when the daemon has ended, and, if it asked
    for a watchdog, WATCHDOG while ``alive()`` (the monotonic time the daemon's
    heartbeat thread last went round, None before it exists) is recent: a heartbeat
    thread stuck for a whole ``WatchdogSec`` gets the daemon restarted.
    """
    previous: dict[signal.Signals, Any] = {}
    # The handler only notes the signal; this loop acts on it. A handler runs between
    # two bytecodes of the main thread, which may hold a lock that stopping takes.
    pending: list[int] = []
    stopping_sent = False

    def act_on_signals() -> None:
        nonlocal stopping_sent
        assert signals is not None
        while pending:
            signum = pending.pop(0)
            if notifier is not None and not stopping_sent:
                stopping_sent = True
                notifier.stopping()
            signals.handle(signum)
        signals.check_timeout()

    if signals is not None:
        for sig in (*STOP_SIGNALS, *KILL_SIGNALS):
            previous[sig] = signal.signal(sig, lambda signum, _frame: pending.append(signum))
    try:
        if start is not None:
            start()  # a signal meanwhile is acted on once it has started: a clean stop
        if on_started is not None:
            on_started()
        if notifier is not None:
            notifier.ready()
        interval = notifier.watchdog_interval if notifier is not None else None
        next_ping = 0.0
        while True:
            if signals is not None:
                act_on_signals()
            if interval is not None and notifier is not None:
                now = time.monotonic()
                last = alive() if alive is not None else None
                # A heartbeat thread that has not gone round for a whole WatchdogSec is
                # stuck: stop vouching for it and let the manager restart the daemon.
                if now >= next_ping and (last is None or now - last < 2 * interval):
                    notifier.watchdog()
                    next_ping = now + interval
            if finished.wait(0.2):
                break
        if notifier is not None and not stopping_sent:
            stopping_sent = True
            notifier.stopping()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_stderr_logging(fmt: LogFormat | None = None, stream: TextIO | None = None) -> None:
    """Send this process's structlog output to stderr, as journald, container runtimes
    and supervisors expect: ``console`` lines on a terminal, JSON lines otherwise (or as
    ``fmt`` says). For the ``norc`` daemons' own processes only: it configures structlog
    for the whole process, which a library embedded in an application must never do."""
    out = stream or sys.stderr
    chosen = fmt or ("console" if out.isatty() else "json")
    # Tracebacks without the frames' local variables, which can hold secrets (a database
    # URL's password, a token): structlog's dict tracebacks and rich's show them.
    renderer: Any = (
        structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        if chosen == "console"
        else structlog.processors.JSONRenderer()
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if chosen == "json":
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        processors += [structlog.processors.ExceptionRenderer(no_locals)]
    structlog.configure(
        processors=[*processors, renderer],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def daemon_logger(
    stream: IO[bytes], *, kind: str, echo: bool, **context: Any
) -> FilteringBoundLogger:
    """A daemon's own event log: logfmt lines into its log file in the log store and,
    with ``echo``, the same events through structlog (see
    :func:`configure_stderr_logging`), so they reach the process's stderr too."""
    to_file = event_logger(stream, **context)
    if not echo:
        return to_file
    to_stderr = structlog.get_logger(f"norc.{kind}").bind(**context)
    return cast("FilteringBoundLogger", _Tee(to_file, to_stderr))


class _Tee:
    """Hands every logging call to several structlog loggers."""

    def __init__(self, *loggers: Any) -> None:
        self._loggers = loggers

    def bind(self, **context: Any) -> _Tee:
        return _Tee(*(logger.bind(**context) for logger in self._loggers))

    def __getattr__(self, name: str) -> Callable[..., None]:
        methods = [getattr(logger, name) for logger in self._loggers]

        def call(*args: Any, **kwargs: Any) -> None:
            for method in methods:
                method(*args, **kwargs)

        return call


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
        on_settled: Callable[[DaemonSettled], object] | None = None,
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
        #: Called once, from this thread, when a beat finds the row ended by another
        #: daemon (it had stopped beating); the heartbeat then stops.
        self.on_settled = on_settled
        #: Seconds of trouble-free beating before ``on_beat`` is trusted to judge others.
        self.judge_after = judge_after
        #: When the thread last went round its loop (monotonic), beat or not: a service
        #: manager's watchdog asks whether this is recent (see :func:`run_blocking`).
        self.alive_at = time.monotonic()
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
        # Not started yet: a stop that came while its daemon was starting (a signal).
        if self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        last_beat = 0.0
        wait = REQUEST_POLL
        # Only a daemon that has itself beaten without trouble for a whole timeout may
        # judge others dead: after a database outage every heartbeat is stale, and the
        # first daemon back must not condemn the others, which are alive and retrying.
        healthy_since = time.monotonic()
        while not self._stop.wait(wait):
            self.alive_at = time.monotonic()
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
            except DaemonSettled as exc:
                log.error("declared dead by another daemon; ending", daemon=self.daemon_id)
                if self.on_settled is not None:
                    self.on_settled(exc)
                return
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
