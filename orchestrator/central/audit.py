"""The audit log: who (which API key's name) did what to which target, and when.

Operators' mutating calls (drain, scale, catalog and player edits, guide uploads, ...) each add
one row; the log is read back through ``GET /v1/audit``. The table lives on ``history.metadata``
so the same migrations (Alembic) create it on SQLite and PostgreSQL.

Rows are queued on the history writer (never awaited): recording an action never makes the
request wait for the disk. A row names the key (never the key itself) and the request's
relevant fields; the caller passes no secret in ``detail``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import JSON, Column, DateTime, Integer, String, Table, select

from orchestrator.central.auth import Principal
from orchestrator.central.history import History, metadata

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


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="Name of the API key that acted")
    role: str
    action: str = Field(description="What was done, e.g. engine.drain, channel.update")
    target: str = Field(description="What it was done to, e.g. an engine id, a channel id")
    detail: dict[str, Any] = Field(description="The request's relevant fields (never a secret)")
    client: str | None = Field(description="The client's address as central saw it")


class AuditList(BaseModel):
    items: list[AuditEntry] = Field(description="Newest first")


class AuditLog:
    def __init__(self, history: History) -> None:
        self.history = history

    def record(
        self,
        who: Principal,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        client: str | None = None,
    ) -> None:
        row = {
            "at": datetime.now(UTC),
            "actor": who.name,
            "role": who.role.value,
            "action": action,
            "target": target[:300],
            "detail": detail or {},
            "client": client[:64] if client else None,
        }
        # The history writer's queue: batched with the rest, dropped (and counted) when full.
        self.history.insert(audit_log, row)

    async def entries(
        self,
        *,
        limit: int,
        since: datetime | None = None,
        actor: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        """Newest first. ``action`` ending in ``.`` matches a family (``engine.``)."""
        q = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if since is not None:
            q = q.where(audit_log.c.at >= since)
        if actor:
            q = q.where(audit_log.c.actor == actor)
        if action and action.endswith("."):
            q = q.where(audit_log.c.action.startswith(action, autoescape=True))
        elif action:
            q = q.where(audit_log.c.action == action)
        async with self.history.engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [AuditEntry.model_validate(_utc(dict(r))) for r in rows]


def _utc(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite hands datetimes back naive; they were written in UTC."""
    at = row["at"]
    if at.tzinfo is None:
        row["at"] = at.replace(tzinfo=UTC)
    return row
