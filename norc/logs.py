"""Where logs live on disk, and the structured logger that writes Norc's own events to them.

Paths follow the seed: ``tasks/<Type>/<name>/<name>-<id>`` for instances,
``executors/executor-<id>`` and ``schedulers/scheduler-<id>`` for daemons, all under the
log directory. Names are made filesystem-safe, so no task name can escape it.
"""

from __future__ import annotations

import functools
import json
import os
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
    """The file for ``key`` under ``log_dir``, refusing any key that would leave it.

    The check is on the normalised path text (no filesystem calls: it runs for every
    instance); the log directory's own symlinks are resolved once per directory.
    """
    root = _resolved_root(str(log_dir))
    path = os.path.normpath(f"{root}{os.sep}{key}") if not key.startswith("/") else key
    if path == root or not path.startswith(root + os.sep):
        raise NorcError(f"log key {key!r} points outside the log directory {root}")
    return Path(path)


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
    parts.extend(f"{k}={_logfmt_value(v)}" for k, v in event.items() if v is not None)
    return " ".join(parts).encode("utf-8", "replace")


def _logfmt_value(value: Any) -> str:
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
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.BytesLogger(stream),  # type: ignore[arg-type]  # any binary file works
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _logfmt,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        context_class=dict,
    )
    return logger.bind(**context)


def open_log(path: str) -> IO[bytes]:
    """Open (creating folders when needed) a log for unbuffered binary append."""
    try:
        return open(path, "ab", buffering=0)
    except FileNotFoundError:  # the first log of its task: make the folders once
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab", buffering=0)
