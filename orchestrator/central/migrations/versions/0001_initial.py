"""The schema as central made it with create_all before migrations: history, catalog, players.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Each table has its own function so that adopting an old database (``schema._adopt``) can make
just the ones it lacks; ``complete`` also adds ``channels.standby``, the one column added to an
existing table before migrations (older databases do not have it).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op
from alembic.operations import Operations

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

UTC_TIME = sa.DateTime(timezone=True)


def _stream_sessions(ops: Operations) -> None:
    ops.create_table(
        "stream_sessions",
        sa.Column("stream_id", sa.String(100), primary_key=True),
        sa.Column("proxy_id", sa.String(100), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("content_key", sa.String(200), nullable=False),
        sa.Column("infohash", sa.String(100)),
        sa.Column("claim_id", sa.String(64)),
        sa.Column("engine_id", sa.String(200)),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("ended_at", UTC_TIME),
        sa.Column("end_reason", sa.String(200)),
        sa.Column("peak_viewers", sa.Integer, nullable=False),
    )
    ops.create_index("ix_stream_sessions_content_key", "stream_sessions", ["content_key"])


def _stream_events(ops: Operations) -> None:
    ops.create_table(
        "stream_events",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("proxy_id", sa.String(100), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("stream_id", sa.String(100), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    ops.create_index("ix_stream_events_stream_id", "stream_events", ["stream_id"])


def _provisioning_log(ops: Operations) -> None:
    ops.create_table(
        "provisioning_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("count", sa.Integer),
        sa.Column("reason", sa.String(300)),
    )
    ops.create_index("ix_provisioning_log_at", "provisioning_log", ["at"])


def _engine_drains(ops: Operations) -> None:
    ops.create_table(
        "engine_drains",
        sa.Column("engine_id", sa.String(200), primary_key=True),
        sa.Column("at", UTC_TIME, nullable=False),
    )


def _channels(ops: Operations) -> None:
    ops.create_table(
        "channels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("content_kind", sa.String(10), nullable=False),
        sa.Column("content_value", sa.String(128), nullable=False),
        sa.Column("group_title", sa.String(100), nullable=False),
        sa.Column("logo", sa.String(2000), nullable=False),
        sa.Column("tvg_id", sa.String(200), nullable=False),
        sa.Column("number", sa.Integer),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("standby", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.UniqueConstraint("content_kind", "content_value", name="uq_channels_content"),
    )


def _guide(ops: Operations) -> None:
    ops.create_table(
        "guide",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("xml", sa.LargeBinary, nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("imported_at", UTC_TIME, nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
    )


def _players(ops: Operations) -> None:
    ops.create_table(
        "players",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("max_streams", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )


TABLES: dict[str, Callable[[Operations], None]] = {
    "stream_sessions": _stream_sessions,
    "stream_events": _stream_events,
    "provisioning_log": _provisioning_log,
    "engine_drains": _engine_drains,
    "channels": _channels,
    "guide": _guide,
    "players": _players,
}


def upgrade() -> None:
    ops = Operations(op.get_context())
    for make in TABLES.values():
        make(ops)


def complete(ops: Operations, existing: set[str]) -> None:
    """Bring a create_all database to this revision: the tables it lacks, channels.standby."""
    for name, make in TABLES.items():
        if name not in existing:
            make(ops)
    if "channels" in existing:
        columns = {c["name"] for c in sa.inspect(ops.get_bind()).get_columns("channels")}
        if "standby" not in columns:
            ops.add_column(
                "channels",
                sa.Column("standby", sa.Boolean, nullable=False, server_default=sa.false()),
            )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
