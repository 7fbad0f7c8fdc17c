"""The one way instances come to be: insert their rows, push the QUEUED ones to their
queues, and tell the plugins after commit.

Every source of instances goes through :func:`enqueue_rows` inside its own transaction:
the API (``Norc.enqueue_many``'s general path), a schedule's fire, a retry, a Job's
nodes. So ``norc_instance_queued`` fires once for every QUEUED instance, whoever queued
it, and only once its transaction has committed (an instance rolled back never existed).
The one exception is a queue that creates and pushes in one statement of its own
(:meth:`norc.abc.Queue.create_and_push`); ``Norc.enqueue_many`` then calls
:func:`announce` itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from norc.abc import QueueItem
from norc.alerts import events as alert_events
from norc.status import InstanceStatus

if TYPE_CHECKING:
    from norc.app import Norc
    from norc.store.connections import Transaction

log = structlog.get_logger("norc.enqueue")


def enqueue_rows(
    app: Norc,
    tx: Transaction,
    rows: Sequence[dict[str, Any]],
    task_types: Sequence[str],
    available_at: Sequence[datetime | None] | None = None,
) -> list[int]:
    """Insert instance rows (full column dicts, any statuses) and push the QUEUED ones.

    ``task_types[i]`` is the type of ``rows[i]``'s task (queues route by it);
    ``available_at[i]``, when given, is when a QUEUED row may first be claimed (a
    retry's backoff). Returns the ids in row order. ``norc_instance_queued`` is called
    for each QUEUED one after ``tx`` commits.
    """
    ids = app.db.insert_instance_rows(tx, rows)
    if app.alert_rules.current(tx.conn):  # a fire recorded SKIPPED is a `missed` alert event
        alert_events.fires_skipped(app, tx, rows, ids)
    pushes: dict[str, list[QueueItem]] = defaultdict(list)
    for index, (instance_id, row) in enumerate(zip(ids, rows, strict=True)):
        if row["status"] != InstanceStatus.QUEUED.value:
            continue
        pushes[row["queue"]].append(
            QueueItem(
                instance_id=instance_id,
                task_type=task_types[index],
                priority=row.get("priority", 0),
                available_at=available_at[index] if available_at is not None else None,
            )
        )
    for queue, items in pushes.items():
        app.queue(queue).push(items, tx)
    queued = [item.instance_id for items in pushes.values() for item in items]
    if queued and app.plugins.has_hook_impls("norc_instance_queued"):
        tx.after_commit(lambda: announce(app, queued))
    return ids


def announce(app: Norc, instance_ids: Sequence[int]) -> None:
    """Call ``norc_instance_queued`` for committed QUEUED instances (records are only
    read when some plugin implements it). Never raises: the instances exist whatever
    happens here, and whoever queued them must not take a failed read for a failed
    enqueue."""
    if not instance_ids or not app.plugins.has_hook_impls("norc_instance_queued"):
        return
    try:
        records = app.db.instances_by_id(instance_ids)
    except Exception:
        log.exception("could not read queued instances for norc_instance_queued")
        return
    for record in records:
        app.plugins.notify("norc_instance_queued", instance=record)
