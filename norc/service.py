"""Running Norc's daemons under a service manager: ``sd_notify`` and systemd units.

:class:`Notifier` speaks systemd's notification protocol (``sd_notify(3)``) without a
dependency: one datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` per state
(``READY=1``, ``STOPPING=1``, ``WATCHDOG=1``). Without that variable it does nothing, so
the same daemon runs unchanged in a terminal, a container or under supervisord.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

import structlog

log = structlog.get_logger("norc.service")

#: The variables systemd hands a service for notifications; unset once read, so that
#: worker processes and the commands tasks run do not speak for the daemon.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Tells a service manager how the daemon is doing, through ``$NOTIFY_SOCKET``.

    Each method sends one datagram and returns whether it was sent; a failure is logged
    once and never raised: a daemon must not stop because its supervisor stopped
    listening.
    """

    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None) -> None:
        #: The socket's address as ``socket.connect`` takes it (None: notify nothing).
        self.address = _address(socket_path)
        #: Seconds between two ``WATCHDOG=1`` (half the manager's ``WatchdogSec``, as
        #: sd_watchdog_enabled(3) advises), or None when no watchdog is asked for.
        self.watchdog_interval = (
            watchdog_usec / 2e6 if watchdog_usec and self.address is not None else None
        )
        self._warned = False

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """A notifier for what systemd set in the environment (``os.environ`` by default).

        With ``unset`` (the default, as ``sd_notify(unset_environment=1)``) the variables
        are removed, so the processes this one starts do not inherit them. A watchdog
        meant for another process (``WATCHDOG_PID``) is ignored.
        """
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET")
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if pid is None or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "")) or None
            except ValueError:
                usec = None
        if unset:
            for name in NOTIFY_VARIABLES:
                env.pop(name, None)
        return cls(path, usec)

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return self.address is not None

    def ready(self, status: str | None = None) -> bool:
        """The daemon has started (``READY=1``), with an optional status line."""
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self, status: str | None = None) -> bool:
        """The daemon has begun to stop (``STOPPING=1``)."""
        return self.send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        """The daemon is alive (``WATCHDOG=1``)."""
        return self.send("WATCHDOG=1")

    def send(self, state: str) -> bool:
        """Send ``state`` (newline-separated ``KEY=value`` lines) as one datagram."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify the service manager", error=str(exc))
            return False
        return True


def _address(path: str | None) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` as an AF_UNIX address: a path, or ``@name`` for Linux's
    abstract namespace (a leading NUL byte). Anything else (``vsock:``) is not handled."""
    if not path:
        return None
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    if path.startswith("/"):
        return path
    return None
