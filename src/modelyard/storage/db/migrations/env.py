"""Alembic environment: runs on the connection modelyard hands it (see engine.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from modelyard.storage.db.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # authoring migrations from the command line
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///modelyard-migrations.db"
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
