"""Alembic environment: migrations run on the connection the Store hands over."""

from __future__ import annotations

from alembic import context

from openmps.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("openmps migrations run through Store.open(), which passes a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
