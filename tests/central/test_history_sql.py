"""History statements for PostgreSQL. No PostgreSQL server runs here (none is cheap to start
without a registry), so this only proves the dialect-specific statements compile; SQLite is
exercised for real by the other tests."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql

from orchestrator.central.history import History, _Op, events


def test_idempotent_inserts_compile_for_postgresql() -> None:
    history = History("sqlite+aiosqlite://", 100, lambda: None)
    row = {
        "event_id": "e1",
        "proxy_id": "p",
        "type": "viewers",
        "stream_id": "s",
        "at": datetime.now(UTC),
        "payload": {},
    }

    class _Dialect:
        name = "postgresql"

    class _Engine:
        dialect = _Dialect()

    history._engine = _Engine()  # type: ignore[assignment]
    stmt = history._statement(_Op("insert_ignore", events, row))
    sql = str(stmt.compile(dialect=postgresql.dialect()))
    assert "ON CONFLICT DO NOTHING" in sql
