"""Alembic, driven from code: the migrations ship inside the package.

A new database gets the schema from the table definitions and is stamped at the head
revision (one round of CREATE TABLEs, no replay of history). An existing one is moved
forward by ``norc db upgrade``, which runs the migration scripts.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from norc.errors import SchemaNewer
from norc.store.connections import masked
from norc.store.schema import installation, metadata, queues, utcnow

#: Every database has this DBQueue from the start, so the defaults work with no set-up.
DEFAULT_QUEUE = "default"

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at Norc's migrations, optionally bound to a connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("version_table", "norc_alembic_version")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The revision this version of Norc needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "Norc ships at least one migration"
    return head


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of this Norc's migrations (not one of a newer Norc's)."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at, or None for a database without Norc."""
    ctx = MigrationContext.configure(conn, opts={"version_table": "norc_alembic_version"})
    return ctx.get_current_revision()


def create_fresh(conn: Connection) -> None:
    """Create every table and stamp the head revision, in the caller's transaction."""
    metadata.create_all(conn)
    conn.execute(
        sa.insert(queues).values(
            name=DEFAULT_QUEUE, type="dbqueue", settings={}, created_at=utcnow()
        )
    )
    # A new database is a new installation: its logs are its own from the first one.
    conn.execute(
        sa.insert(installation).values(
            id=str(uuid.uuid4()), created_at=utcnow(), legacy_daemon_id=None
        )
    )
    command.stamp(alembic_config(conn), "head")


def read_installation(conn: Connection) -> tuple[str, int | None]:
    """The database's installation id and the last daemon id of the old log layout."""
    row = conn.execute(sa.select(installation.c.id, installation.c.legacy_daemon_id)).one()
    return str(row.id), None if row.legacy_daemon_id is None else int(row.legacy_daemon_id)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database to ``revision``; returns (before, after)."""
    with engine.begin() as conn:
        before = current_revision(conn)
        if before is not None and not known_revision(before):
            # Alembic would fail with "Can't locate revision": say what it means.
            raise SchemaNewer(masked(engine.url), before, head_revision())
        command.upgrade(alembic_config(conn), revision)
        after = current_revision(conn)
    return before, after
