"""Where logs live on disk, and the structured logger that writes Norc's own events to them.

Every log key starts with the installation id of the database the run belongs to (a
uuid made with the schema, ``norc_installation``): ``<installation>/tasks/<Type>/<name>/
<name>-<id>`` for instances, ``<installation>/executors/executor-<id>`` and
``<installation>/schedulers/scheduler-<id>`` for daemons, all under the log directory
(and under the log store's prefix). Ids are never reused, so a key names one run of one
database: databases sharing a log directory or a bucket never write to the same log, and
``rm norc.db`` starts a new tree. Names are made filesystem-safe, so no task name can
escape the log directory.

Logs written before revision 0005 keep the seed's layout without the installation id:
an instance's row records the key it was written under, and daemons up to
``norc_installation.legacy_daemon_id`` are looked for at :func:`legacy_daemon_log_key`.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import attrs
import structlog
from structlog.typing import FilteringBoundLogger, Processor

from norc.errors import InvalidLogKey, NorcError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_COMPONENT = 100


def safe_component(name: str) -> str:
    """A single path component for ``name``: no separators, no leading dots, bounded length."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:MAX_COMPONENT]
    return cleaned or "_"


def instance_log_key(installation: str, task_type: str, task_name: str, instance_id: int) -> str:
    """The log key (relative path) of an instance of the database ``installation``."""
    return f"{_task_log_prefix(installation, task_type, task_name)}{instance_id}"


@functools.lru_cache(maxsize=1024)
def _task_log_prefix(installation: str, task_type: str, task_name: str) -> str:
    # Per instance on the hot path: the regex substitutions are done once per task.
    name = safe_component(task_name)
    return f"{safe_component(installation)}/tasks/{safe_component(task_type)}/{name}/{name}-"


def daemon_log_key(installation: str, kind: str, daemon_id: int) -> str:
    """The log key of an executor's or scheduler's own log."""
    return f"{safe_component(installation)}/{kind}s/{kind}-{daemon_id}"


def legacy_daemon_log_key(kind: str, daemon_id: int) -> str:
    """Where a daemon that ran before revision 0005 wrote its log (the seed's layout)."""
    return f"{kind}s/{kind}-{daemon_id}"


@attrs.frozen
class LogKeys:
    """How one database names its logs: read once per handle from ``norc_installation``."""

    installation: str
    #: Daemons up to this id predate revision 0005 and keep the seed's layout.
    legacy_daemon_id: int | None = None

    def instance(self, task_type: str, task_name: str, instance_id: int) -> str:
        """The key a new run of an instance is written under (see :func:`create_log`)."""
        return instance_log_key(self.installation, task_type, task_name, instance_id)

    def daemon(self, kind: str, daemon_id: int) -> str:
        """The key of an executor's or scheduler's own log."""
        if self.legacy_daemon_id is not None and daemon_id <= self.legacy_daemon_id:
            return legacy_daemon_log_key(kind, daemon_id)
        return daemon_log_key(self.installation, kind, daemon_id)


def _create(path: str) -> int:
    """A new file, opened for appending (FileExistsError if there is one)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:  # the first log of its task: make the folders once
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)


def open_new_log(path: str) -> IO[bytes]:
    """Open the log of a run that starts now (an instance's, a daemon's own), which must be
    new, for unbuffered binary append; the run's later writes use :func:`open_log`.

    The file is created exclusively: a run never appends to another run's log. With
    installation ids and ids never reused, a file already there can only be another
    run's if two databases share an installation id (a copied database file, a backup
    restored over newer logs): one with content is moved aside to
    ``<path>.displaced-<UTC time>`` and the new log says so in its first line. An empty
    one holds nothing to mix up and is used.
    """
    moved_to = None
    try:
        fd = _create(path)
    except FileExistsError:
        if Path(path).stat().st_size > 0:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            moved_to = str(Path(path).replace(f"{path}.displaced-{stamp}"))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
    stream = os.fdopen(fd, "ab", buffering=0)
    if moved_to is not None:
        write_event(stream, "an older log at this path was moved aside", "", {"moved_to": moved_to})
    return stream


def check_key(key: object) -> str:
    """Return ``key`` if it is a safe relative log key, else raise :class:`InvalidLogKey`.

    What log stores accept (``LogStore.save`` and ``open``). Norc builds keys from
    sanitised names, so this is defence in depth: a key must be a non-empty relative
    path without ``..`` segments, backslashes or control characters.
    """
    if not isinstance(key, str) or not key:
        raise InvalidLogKey(f"invalid log key {key!r}: must be a non-empty string")
    if key.startswith("/"):
        raise InvalidLogKey(f"invalid log key {key!r}: must be relative, not start with '/'")
    if "\\" in key:
        raise InvalidLogKey(f"invalid log key {key!r}: backslashes are not allowed")
    if ".." in key.split("/"):
        raise InvalidLogKey(f"invalid log key {key!r}: '..' segments are not allowed")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidLogKey(f"invalid log key {key!r}: control characters are not allowed")
    return key


def resolve_key(log_dir: Path, key: str) -> Path:
    """The file for ``key`` under ``log_dir``, refusing any key that would leave it.

    The check is on the normalised path text (no filesystem calls: it runs for every
    instance); the log directory's own symlinks are resolved once per directory.
    """
    return Path(resolve_key_text(log_dir, key))


def resolve_key_text(log_dir: Path, key: str) -> str:
    """:func:`resolve_key` as a string, for the per-instance path (no Path objects)."""
    root = _resolved_root(str(log_dir))
    path = os.path.normpath(f"{root}{os.sep}{key}") if not key.startswith("/") else key
    if path == root or not path.startswith(root + os.sep):
        raise NorcError(f"log key {key!r} points outside the log directory {root}")
    return path


@functools.lru_cache(maxsize=64)
def _resolved_root(log_dir: str) -> str:
    return str(Path(log_dir).resolve())


def _logfmt(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> bytes:
    """``[norc] timestamp=… level=… event="…" key=value …`` as bytes.

    Written for speed (two lines per instance on the hot path): plain tokens go out as
    they are, anything with spaces, quotes, ``=`` or control characters is JSON-quoted.
    The ``[norc]`` marker tells Norc's own lines from the task's output in a shared log.
    """
    parts = ["[norc]"]
    for key in ("timestamp", "level", "event"):
        if key in event:
            parts.append(f"{key}={_logfmt_value(event.pop(key))}")
    return _join(parts, event.items())


def _join(parts: list[str], fields: Iterable[tuple[str, Any]]) -> bytes:
    parts.extend(f"{k}={_logfmt_value(v)}" for k, v in fields if v is not None)
    return " ".join(parts).encode("utf-8", "replace")


def logfmt_fields(fields: dict[str, Any]) -> str:
    """``key=value …`` for :func:`write_event` (None values left out, as structlog's)."""
    return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items() if v is not None)


def write_event(stream: IO[bytes], event: str, context: str, fields: dict[str, Any]) -> None:
    """Write one info line exactly as :func:`event_logger` would, without structlog.

    For the two lines Norc writes around every run: the processor chain costs more
    than the rest of a no-op instance. ``context`` is :func:`logfmt_fields` of what the
    instance's logger is bound to, formatted once for both lines.
    """
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    parts = ["[norc]", f"timestamp={stamp}", "level=info", _event_field(event)]
    if context:
        parts.append(context)
    stream.write(_join(parts, fields.items()) + b"\n")


class _LazyLogger:
    """Stands for :func:`event_logger`'s logger and builds it on first use."""

    __slots__ = ("_context", "_logger", "_stream")

    def __init__(self, stream: IO[bytes], context: dict[str, Any]) -> None:
        self._stream = stream
        self._context = context
        self._logger: FilteringBoundLogger | None = None

    def __getattr__(self, name: str) -> Any:
        if self._logger is None:
            self._logger = event_logger(self._stream, **self._context)
        return getattr(self._logger, name)


def lazy_event_logger(stream: IO[bytes], **context: Any) -> FilteringBoundLogger:
    """:func:`event_logger`, built only if something logs through it (most runs don't)."""
    return cast(FilteringBoundLogger, _LazyLogger(stream, context))


@functools.lru_cache(maxsize=64)
def _event_field(event: str) -> str:
    # Norc's own event names are a handful of constants: quote each once.
    return f"event={_logfmt_value(event)}"


def _logfmt_value(value: Any) -> str:
    if value.__class__ is int or value.__class__ is float:  # no quoting ever needed
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


_NEEDS_QUOTES = re.compile(r'[\s"=\\]|[\x00-\x1f]')


def event_logger(stream: IO[bytes], **context: Any) -> FilteringBoundLogger:
    """A structlog logger writing logfmt lines to a binary stream, bound to ``context``.

    Built per stream (no global structlog configuration), so an application embedding
    Norc keeps its own logging set-up.
    """
    # A lazy proxy with the context as initial values: the bound logger is only built
    # if something logs through it (most no-op tasks never do).
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.BytesLogger(stream),  # type: ignore[arg-type]  # any binary file works
        processors=_PROCESSORS,
        wrapper_class=_WRAPPER,
        context_class=dict,
        **context,
    )
    return logger


_PROCESSORS: list[Processor] = [
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    _logfmt,
]
_WRAPPER = structlog.make_filtering_bound_logger(0)


def open_log(path: str) -> IO[bytes]:
    """Open (creating folders when needed) a log for unbuffered binary append.

    For a run's later writes (a ``finally_`` in a fresh worker, Norc's notes): its first
    open is :func:`open_new_log`.
    """
    try:
        return open(path, "ab", buffering=0)
    except FileNotFoundError:  # the first log of its task: make the folders once
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab", buffering=0)
