"""The few reads the web page needs beyond :mod:`norc.reports`: pages, charts, log chunks.

Everything here is bounded so that pages stay fast on a database with millions of
instances: lists are keyset-paginated (``before_id``) on the ``created_at`` indexes,
charts count per time bucket through the covering ``(status, created_at)`` index, and
logs are read in byte ranges, never whole.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import sqlalchemy as sa

from norc.control import get_daemon
from norc.errors import LogNotFound, NorcError
from norc.records import InstanceRecord
from norc.status import InstanceStatus
from norc.store.schema import instances

if TYPE_CHECKING:
    from norc.app import Norc

#: The most rows one page of instances may hold.
MAX_PAGE = 500
#: The most bytes one log request returns.
MAX_LOG_CHUNK = 1024 * 1024
#: The most buckets a chart may ask for.
MAX_BUCKETS = 120


def instance_json(record: InstanceRecord) -> dict[str, Any]:
    """An instance as the API shows it: its record plus how late it started."""
    out = record.to_json()
    out["lateness"] = lateness(record.fire_time or record.enqueued_at, record.started_at)
    return out


def lateness(due: datetime | None, started: datetime | None) -> float | None:
    """Seconds from when an instance was due (its fire time, else enqueued) to its start."""
    if due is None or started is None:
        return None
    return round((started - due).total_seconds(), 3)


def matching_task_ids(app: Norc, search: str) -> list[int]:
    """Ids of the tasks whose name contains ``search`` (case-insensitive)."""
    needle = search.casefold()
    return [t.id for t in app.tasks() if needle in t.name.casefold()]


def page_of_instances(
    app: Norc,
    *,
    since: datetime,
    until: datetime | None = None,
    statuses: Collection[InstanceStatus] | None = None,
    task_ids: Collection[int] | None = None,
    queue: str | None = None,
    executor_id: int | None = None,
    schedule_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[list[InstanceRecord], int | None]:
    """One page of instances created in ``[since, until)``, newest first.

    Returns the records and the ``before_id`` of the next page (None on the last).
    The order is ``created_at`` then ``id``, both descending, which every filter's
    index serves; ``before_id`` continues after that instance (a keyset, so page 1000
    costs what page 1 does). The ids are found first, then loaded through
    :meth:`norc.store.database.Database.instances_by_id`.
    """
    limit = max(1, min(limit, MAX_PAGE))
    c = instances.c
    query = sa.select(c.id).where(c.created_at >= since)
    if until is not None:
        query = query.where(c.created_at < until)
    if statuses is not None:
        query = query.where(c.status.in_(sorted(s.value for s in statuses)))
    if task_ids is not None:
        query = query.where(c.task_id.in_(list(task_ids)))
    if queue is not None:
        query = query.where(c.queue == queue)
    if executor_id is not None:
        query = query.where(c.executor_id == executor_id)
    if schedule_id is not None:
        query = query.where(c.schedule_id == schedule_id)
    with app.db.reading() as conn:
        if before_id is not None:
            anchor = conn.execute(
                sa.select(c.created_at).where(c.id == before_id)
            ).scalar_one_or_none()
            if anchor is None:  # pruned meanwhile: continue by id alone
                query = query.where(c.id < before_id)
            else:
                query = query.where(
                    c.created_at <= anchor,
                    sa.or_(c.created_at < anchor, c.id < before_id),
                )
        ids = list(
            conn.execute(
                query.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
            ).scalars()
        )
    more = len(ids) > limit
    ids = ids[:limit]
    order = {i: n for n, i in enumerate(ids)}
    records = sorted(app.db.instances_by_id(ids), key=lambda r: order[r.id])
    return records, (ids[-1] if more and ids else None)


def bucket_edges(since: datetime, until: datetime, buckets: int) -> list[datetime]:
    """``buckets + 1`` evenly spaced instants from ``since`` to ``until``."""
    buckets = max(1, min(buckets, MAX_BUCKETS))
    step = (until - since) / buckets
    return [since + step * k for k in range(buckets)] + [until]


def instances_over_time(
    app: Norc, *, since: datetime, until: datetime, buckets: int = 30
) -> dict[str, Any]:
    """How many instances of each status were created in each time bucket.

    One small query per bucket, each an index-only range scan of
    ``(status, created_at)``: cheap however many rows the window holds.
    """
    edges = bucket_edges(since, until, buckets)
    all_statuses = [s.value for s in InstanceStatus]
    counts: dict[str, list[int]] = {s: [0] * (len(edges) - 1) for s in all_statuses}
    c = instances.c
    with app.db.reading() as conn:
        for k, (low, high) in enumerate(pairwise(edges)):
            rows = conn.execute(
                sa.select(c.status, sa.func.count())
                .where(c.status.in_(all_statuses), c.created_at >= low, c.created_at < high)
                .group_by(c.status)
            ).all()
            for status, n in rows:
                if str(status) in counts:
                    counts[str(status)][k] = int(n)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "edges": [e.isoformat() for e in edges],
        "counts": {s: v for s, v in counts.items() if any(v)},
    }


def task_runs(
    app: Norc, task_id: int, *, since: datetime, until: datetime | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """A task's latest runs in the window, oldest first: times, duration and lateness."""
    c = instances.c
    query = sa.select(
        c.id, c.status, c.created_at, c.fire_time, c.enqueued_at, c.started_at, c.ended_at
    ).where(c.task_id == task_id, c.created_at >= since)
    if until is not None:
        query = query.where(c.created_at < until)
    query = query.order_by(c.created_at.desc(), c.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    with app.db.reading() as conn:
        rows = conn.execute(query).all()
    out = []
    for r in reversed(rows):
        duration = (
            round((r.ended_at - r.started_at).total_seconds(), 3)
            if r.started_at and r.ended_at
            else None
        )
        out.append(
            {
                "id": int(r.id),
                "status": str(r.status),
                "created_at": r.created_at.isoformat() if r.created_at else None,
                "fire_time": r.fire_time.isoformat() if r.fire_time else None,
                "started_at": r.started_at.isoformat() if r.started_at else None,
                "ended_at": r.ended_at.isoformat() if r.ended_at else None,
                "duration": duration,
                "lateness": lateness(r.fire_time or r.enqueued_at, r.started_at),
            }
        )
    return out


def next_fires(app: Norc, schedule_id: int, count: int = 10) -> list[str]:
    """A schedule's next fire times (ISO, in its timezone), from its stored next fire.

    A paused schedule shows the fires it would have after now (resuming starts there).
    """
    from zoneinfo import ZoneInfo

    from norc.schedules.timing import timing_for

    s = app.schedule(schedule_id)
    if s.deleted:
        return []
    timing = timing_for(s.kind, s.spec, s.timezone, s.start_at, s.period)
    now = datetime.now(UTC)
    current = s.next_fire_at if not s.paused else timing.next_after(now - timedelta(microseconds=1))
    left = s.remaining if s.remaining is not None else count
    zone = ZoneInfo(s.timezone)
    fires: list[str] = []
    while current is not None and len(fires) < min(count, left):
        fires.append(current.astimezone(zone).isoformat())
        current = timing.next_after(current)
    return fires


# -- logs --------------------------------------------------------------------------------


def _lead_continuations(data: bytes) -> int:
    """How many bytes at the front belong to a character that started earlier."""
    n = 0
    while n < min(3, len(data)) and (data[n] & 0xC0) == 0x80:
        n += 1
    return n


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end are an unfinished UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0x80 == 0:
            return 0
        if byte & 0xC0 == 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if back < need else 0
    return 0


def open_in_log_dir(log_dir: Path | None, path: Path) -> BinaryIO | None:
    """``path`` opened for reading, or None when nothing is there.

    Raises :class:`norc.errors.LogNotFound` when something is there but is not a regular
    file inside ``log_dir`` once every symlink is resolved: a symlink (of the file or of
    a directory on its way) out of the log store is never followed, and a FIFO never
    waited on. ``log_dir`` None skips the containment check.
    """
    if not os.path.lexists(path):
        return None
    real = os.path.realpath(path)
    refused = LogNotFound("the log is not a regular file inside the log directory")
    if log_dir is not None:
        root = os.path.realpath(log_dir)
        if not real.startswith(root + os.sep):
            raise refused
    try:
        # O_NOFOLLOW: the resolved path must not have become a symlink meanwhile;
        # O_NONBLOCK: a FIFO must not hang the request (it is refused below).
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        raise refused from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise refused
    return os.fdopen(fd, "rb")


def read_chunk(
    path: Path | None,
    fallback: Callable[[], str],
    *,
    offset: int,
    limit: int,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Bytes ``[offset, offset + limit)`` of a log (a negative offset counts from the end).

    ``path`` is the local file, read only if it is a regular file inside ``log_dir``
    with every symlink resolved (:func:`open_in_log_dir`, which refuses anything else
    there); when it does not exist, ``fallback()`` returns the whole log text from the
    log store (or raises :class:`norc.errors.LogNotFound`). Returns the text and
    ``next_offset``, the byte to continue from, so a page can follow a growing log. A
    chunk never splits a UTF-8 character.
    """
    limit = max(4, min(limit, MAX_LOG_CHUNK))  # room for one whole character
    raw: bytes | None = None
    source = "local"
    size = start = 0
    f = open_in_log_dir(log_dir, path) if path is not None else None
    if f is not None:
        with f:
            size = f.seek(0, 2)
            start = max(0, size + offset) if offset < 0 else min(offset, size)
            f.seek(start)
            raw = f.read(limit)
    if raw is None:
        whole = fallback().encode("utf-8")
        size = len(whole)
        start = max(0, size + offset) if offset < 0 else min(offset, size)
        raw = whole[start : start + limit]
        source = "store"
    end = start + len(raw)
    lead = _lead_continuations(raw) if start > 0 else 0
    tail = _incomplete_tail(raw) if end < size else 0
    text = raw[lead : len(raw) - tail].decode("utf-8", "replace")
    return {
        "offset": start + lead,
        "next_offset": end - tail,
        "size": size,
        "eof": end - tail >= size,
        "source": source,
        "text": text,
    }


def instance_log(app: Norc, instance_id: int, *, offset: int, limit: int) -> dict[str, Any]:
    """A chunk of an instance's log; its place comes from the instance's database row."""
    record = app.instance(instance_id)
    try:
        path: Path | None = app.log_path(record)
    except NorcError:  # a stored key that would leave the log directory: store only
        path = None
    out = read_chunk(
        path,
        lambda: app.logs(instance_id, remote=True),  # the local file was tried above
        offset=offset,
        limit=limit,
        log_dir=app.settings.log_dir,
    )
    out["final"] = record.status.is_final
    out["status"] = record.status.value
    return out


def daemon_log(app: Norc, daemon_id: int, *, offset: int, limit: int) -> dict[str, Any]:
    """A chunk of an executor's or scheduler's own log."""
    daemon = get_daemon(app, daemon_id)
    out = read_chunk(
        app.daemon_log_path(daemon.kind, daemon.id),
        lambda: app.daemon_logs(daemon_id, remote=True),
        offset=offset,
        limit=limit,
        log_dir=app.settings.log_dir,
    )
    out["final"] = daemon.ended_at is not None
    out["status"] = daemon.status
    return out
