"""The audit log: who (which API key's name) did what to which target, and when.

Operators' mutating calls (drain, scale, catalog and player edits, guide uploads, ...) each add
one row; the log is read back through ``GET /v1/audit``. The table lives on ``history.metadata``
so the same migrations (Alembic) create it on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Integer, String, Table

from orchestrator.central.history import metadata

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("actor", String(100), nullable=False),  # the key's name (operator or service instance)
    Column("role", String(20), nullable=False),
    Column("action", String(60), nullable=False),  # e.g. engine.drain, channel.update
    Column("target", String(300), nullable=False),  # e.g. the engine id, the channel id
    Column("detail", JSON, nullable=False),  # the request's relevant fields, never a secret
    Column("client", String(64)),  # the client's address as central saw it
)
