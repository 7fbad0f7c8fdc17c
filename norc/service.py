"""Running Norc's daemons under a service manager: ``sd_notify`` and systemd units.

:class:`Notifier` speaks systemd's notification protocol (``sd_notify(3)``) without a
dependency: one datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` per state
(``READY=1``, ``STOPPING=1``, ``WATCHDOG=1``). Without that variable it does nothing, so
the same daemon runs unchanged in a terminal, a container or under supervisord.

:func:`render_unit` writes the unit ``norc service unit`` prints.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import sysconfig
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Literal

import structlog

log = structlog.get_logger("norc.service")

#: The variables systemd hands a service for notifications; unset once read, so that
#: worker processes and the commands tasks run do not speak for the daemon.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

#: Seconds systemd waits beyond ``--stop-timeout`` before it SIGKILLs what is left: after
#: the timeout the daemon interrupts running instances, runs their ``finally_`` (bounded
#: by each task's ``finally_timeout``, 10 s by default) and records the outcomes.
STOP_MARGIN = 15.0

#: The default ``WatchdogSec=``: longer than anything the heartbeat thread may
#: legitimately spend in one round (a SQLite write waits up to 60 s for its lock; an
#: outage backs off at most 10 s), so only a hung daemon is restarted.
DEFAULT_WATCHDOG = 120.0

Kind = Literal["executor", "scheduler", "web"]


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


# -- systemd units ----------------------------------------------------------------------


def norc_executable() -> str:
    """The absolute path of the ``norc`` script installed for the running interpreter.

    The interpreter's scripts folder first (a virtualenv's ``bin``), then the folder of
    ``sys.executable`` and the user scheme's; not resolved through symlinks, which would
    leave a virtualenv."""
    candidates = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        candidates.append(Path(sysconfig.get_path("scripts", user_scheme)))
    for folder in candidates:
        script = folder / "norc"
        if script.is_file() and os.access(script, os.X_OK):
            return str(script.absolute())
    raise FileNotFoundError(
        f"no norc script next to {sys.executable} (looked in"
        f" {', '.join(str(c) for c in candidates)})"
    )


def systemd_quote(argument: str) -> str:
    """One ``ExecStart=`` argument as systemd reads it back: ``%`` and ``$`` doubled
    (specifiers, variables), and double quotes around anything with a blank, a quote, a
    backslash or a ``;`` (systemd's command separator), or empty."""
    text = argument.replace("%", "%%").replace("$", "$$")
    if text and not any(c.isspace() or c in "\"'\\;" for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    for char, code in (("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r")):
        escaped = escaped.replace(char, code)
    return f'"{escaped}"'


def stop_timeout_sec(stop_timeout: float) -> str:
    """``TimeoutStopSec=`` for a daemon given ``--stop-timeout``: that plus
    :data:`STOP_MARGIN`, whole seconds, or ``infinity``."""
    if math.isinf(stop_timeout):
        return "infinity"
    return str(math.ceil(stop_timeout + STOP_MARGIN))


def render_unit(
    kind: Kind,
    arguments: Sequence[str],
    *,
    stop_timeout: float | None,
    environment_file: str = "/etc/norc/norc.env",
    user: str = "norc",
    watchdog: float = DEFAULT_WATCHDOG,
    executable: str | None = None,
) -> str:
    """A systemd service unit running ``norc KIND ARGUMENTS``.

    ``Type=notify`` for the executor and the scheduler (they send READY, STOPPING and,
    with ``watchdog`` > 0, WATCHDOG: see :class:`Notifier`); ``Type=simple`` for the web
    server, which does not notify. ``KillMode=mixed``: the stop signal goes to the daemon
    alone, never to its worker processes and the tasks they run, so running instances
    can finish; only what is left after ``TimeoutStopSec`` is SIGKILLed.
    """
    exe = executable or norc_executable()
    exec_start = " ".join(systemd_quote(a) for a in [exe, kind, *arguments])
    what = {"executor": "executor", "scheduler": "scheduler", "web": "web page and API"}[kind]
    service: list[str] = []
    if kind == "web":
        service += ["Type=simple"]
    else:
        service += ["Type=notify", "NotifyAccess=main"]
    service += [
        f"ExecStart={exec_start}",
        # '-': the unit still starts without the file (a SQLite database in the
        # state directory); NORC_DATABASE_URL and NORC_LOG_DIR go there.
        f"EnvironmentFile=-{environment_file}",
        f"User={user}",
        "StateDirectory=norc",
        "WorkingDirectory=/var/lib/norc",
        "KillSignal=SIGTERM",
        "KillMode=mixed",
    ]
    if stop_timeout is not None:
        service.append(f"TimeoutStopSec={stop_timeout_sec(stop_timeout)}")
    if kind != "web" and watchdog > 0:
        service.append(f"WatchdogSec={math.ceil(watchdog)}")
    service += ["Restart=on-failure", "RestartSec=5"]
    header = [
        f"# Generated by `norc service unit {kind}` (norc {_version()}).",
        "# Install as /etc/systemd/system/<name>.service, then:"
        " systemctl daemon-reload && systemctl enable --now <name>",
    ]
    lines = [
        *header,
        "[Unit]",
        f"Description=Norc {what}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("norc")
    except PackageNotFoundError:
        return "unknown version"


def unit_keys(text: str) -> Mapping[str, Mapping[str, str]]:
    """The keys of a unit file by section (the last value of a repeated key): for tests
    and tools that check a rendered unit."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections
