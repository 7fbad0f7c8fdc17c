"""Alembic environment: Norc always hands Alembic an open connection."""

from __future__ import annotations

from alembic import context

from norc.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - norc.store.migrate always passes one
    raise RuntimeError("Norc migrations run through `norc db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="norc_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
