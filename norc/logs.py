"""Where logs live on disk, and the structured logger that writes Norc's own events to them.

Paths follow the seed: ``tasks/<Type>/<name>/<name>-<id>`` for instances,
``executors/executor-<id>`` and ``schedulers/scheduler-<id>`` for daemons, all under the
log directory. Names are made filesystem-safe, so no task name can escape it.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO, Any

import structlog
from structlog.typing import FilteringBoundLogger

from norc.errors import NorcError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_COMPONENT = 100


def safe_component(name: str) -> str:
    """A single path component for ``name``: no separators, no leading dots, bounded length."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:MAX_COMPONENT]
    return cleaned or "_"


def instance_log_key(task_type: str, task_name: str, instance_id: int) -> str:
    """The log key (relative path) of an instance, as in the seed."""
    name = safe_component(task_name)
    return f"tasks/{safe_component(task_type)}/{name}/{name}-{instance_id}"


def daemon_log_key(kind: str, daemon_id: int) -> str:
    """The log key of an executor's or scheduler's own log."""
    return f"{kind}s/{kind}-{daemon_id}"


def resolve_key(log_dir: Path, key: str) -> Path:
    """The file for ``key`` under ``log_dir``, refusing any key that would leave it."""
    root = log_dir.resolve()
    path = (root / key).resolve()
    if not path.is_relative_to(root) or path == root:
        raise NorcError(f"log key {key!r} points outside the log directory {root}")
    return path


def _drop_none(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return {k: v for k, v in event.items() if v is not None}


def _prefix(_logger: Any, _method: str, line: Any) -> bytes:
    # The marker tells Norc's own lines from the task's output in a shared log file.
    return b"[norc] " + str(line).encode("utf-8", "replace")


def event_logger(stream: IO[bytes], **context: Any) -> FilteringBoundLogger:
    """A structlog logger writing logfmt lines to a binary stream, bound to ``context``.

    Built per stream (no global structlog configuration), so an application embedding
    Norc keeps its own logging set-up.
    """
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.BytesLogger(stream),  # type: ignore[arg-type]  # any binary file works
        processors=[
            _drop_none,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.LogfmtRenderer(
                key_order=["timestamp", "level", "event"], bool_as_flag=False
            ),
            _prefix,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        context_class=dict,
    )
    return logger.bind(**context)


def open_log(path: str) -> IO[bytes]:
    """Open (creating folders) an instance log for unbuffered binary append."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return open(p, "ab", buffering=0)
