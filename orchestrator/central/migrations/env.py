"""Alembic's environment: migrations run on the connection ``schema.config()`` hands over.

There is no alembic.ini and no URL here: central's start, ``acefleet-central db`` and the tests
all open the connection themselves (async engines, run_sync) and call ``schema.upgrade`` etc.
``render_as_batch`` lets a future revision alter a table on SQLite (copy-and-move).
"""

from __future__ import annotations

from alembic import context

from orchestrator.central.migrations import schema

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through orchestrator.central.migrations.schema")
context.configure(
    connection=connection,
    target_metadata=schema.target_metadata(),
    version_table=schema.VERSION_TABLE,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
