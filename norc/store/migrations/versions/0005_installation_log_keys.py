"""installation id, log keys of their own, ids never reused

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Logs are named by id, so two databases sharing a log directory (or a bucket), or a
SQLite database that handed a pruned id out again, wrote to one another's logs. From
this revision on every log key starts with the database's installation id, and ids are
never reused. For databases that already exist:

- ``norc_installation`` gets its one row: a new uuid, and the last daemon id so far
  (daemons up to it keep their old log path, ``executors/executor-<id>``).
- Instances that ran but have no ``log_key`` recorded (still running, or stopped from
  outside) get the key they were written under, in the old layout; instances that
  recorded one keep it. Only instances that never started are left without one.
- SQLite: ``norc_instances`` and ``norc_daemons`` are rebuilt with ``AUTOINCREMENT``
  (SQLite cannot add it to a table in place). The copy keeps every row and id; the
  table's sequence starts at the highest id present. ``norc_queue_items`` rows (work
  in flight, which point at instances) are kept aside meanwhile, so the rebuild works
  with foreign keys enforced. PostgreSQL and MariaDB never reuse ids already.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import norc.store.schema

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# The log key layout before this revision, frozen here (norc.logs may change later).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).lstrip(".")[:100] or "_"


def _old_instance_key(task_type: str, task_name: str, instance_id: int) -> str:
    name = _safe(task_name)
    return f"tasks/{_safe(task_type)}/{name}/{name}-{instance_id}"


def upgrade() -> None:
    installation = op.create_table('norc_installation',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', norc.store.schema.UTCDateTime(), nullable=False),
    sa.Column('legacy_daemon_id', BigId, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_norc_installation'))
    )
    conn = op.get_bind()
    last_daemon = conn.execute(sa.text("SELECT MAX(id) FROM norc_daemons")).scalar()
    op.bulk_insert(
        installation,
        [{"id": str(uuid.uuid4()), "created_at": datetime.now(UTC),
          "legacy_daemon_id": last_daemon}],
    )
    _record_old_log_keys(conn)
    if conn.dialect.name == "sqlite":
        _rebuild_sqlite(autoincrement=True)


def _record_old_log_keys(conn: sa.Connection, batch: int = 1000) -> None:
    """Instances that ran without recording their log key get the key they wrote under."""
    after = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT i.id, t.type, t.name FROM norc_instances i"
                " JOIN norc_tasks t ON t.id = i.task_id"
                " WHERE i.log_key IS NULL AND i.started_at IS NOT NULL AND i.id > :after"
                " ORDER BY i.id LIMIT :batch"
            ),
            {"after": after, "batch": batch},
        ).all()
        if not rows:
            return
        conn.execute(
            sa.text("UPDATE norc_instances SET log_key = :key WHERE id = :id"),
            [{"id": r.id, "key": _old_instance_key(r.type, r.name, r.id)} for r in rows],
        )
        after = rows[-1].id


def _rebuild_sqlite(*, autoincrement: bool) -> None:
    """Copy norc_instances and norc_daemons into tables with (or without) AUTOINCREMENT.

    The copy is a new table, filled from the old one, which is then dropped: the queue
    items that point at instances wait in a temporary table meanwhile, since with
    foreign keys enforced the old table cannot be dropped under them.
    """
    op.execute("CREATE TEMP TABLE norc_0005_queue_items AS SELECT * FROM norc_queue_items")
    op.execute("DELETE FROM norc_queue_items")
    for table in ('norc_instances', 'norc_daemons'):
        with op.batch_alter_table(
            table, recreate='always', table_kwargs={'sqlite_autoincrement': autoincrement}
        ):
            pass
    op.execute("INSERT INTO norc_queue_items SELECT * FROM temp.norc_0005_queue_items")
    op.execute("DROP TABLE temp.norc_0005_queue_items")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(autoincrement=False)
    op.drop_table('norc_installation')
