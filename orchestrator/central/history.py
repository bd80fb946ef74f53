"""History (stream sessions, events, provisioning log) in SQL, written behind the hot path.

Callers enqueue plain rows without awaiting; one writer task batches them into transactions.
When the database is slow or down the queue fills and new rows are dropped (and counted): a
claim must never wait for a disk. SQLite (aiosqlite) by default; PostgreSQL (asyncpg) works with
the same statements. The tables are made and changed by the Alembic revisions in
``migrations/``: ``start()`` upgrades the database to the newest one before anything reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from acefleet import logs
from orchestrator.central.migrations import schema

log = logs.get(__name__)

metadata = MetaData()

sessions = Table(
    "stream_sessions",
    metadata,
    Column("stream_id", String(100), primary_key=True),
    Column("proxy_id", String(100), nullable=False),
    Column("host", String(200), nullable=False),
    Column("content_key", String(200), nullable=False, index=True),
    Column("infohash", String(100)),
    Column("claim_id", String(64)),
    Column("engine_id", String(200)),
    Column("source", String(20), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("end_reason", String(200)),
    Column("peak_viewers", Integer, nullable=False, default=0),
)

events = Table(
    "stream_events",
    metadata,
    Column("event_id", String(100), primary_key=True),
    Column("proxy_id", String(100), nullable=False),
    Column("type", String(20), nullable=False),
    Column("stream_id", String(100), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("payload", JSON, nullable=False),
)

provisioning_log = Table(
    "provisioning_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("host", String(200), nullable=False),
    Column("action", String(40), nullable=False),
    Column("count", Integer),
    Column("reason", String(300)),
)


# Operator decisions that no edge reports back, kept across restarts of central.
engine_drains = Table(
    "engine_drains",
    metadata,
    Column("engine_id", String(200), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
)


GATHER_S = 0.05  # a batch's rows gather this long after its first one
BATCH_MAX = 500


@dataclass(slots=True)
class _Op:
    kind: str  # "insert_ignore" | "insert" | "update_session" | "delete_drain"
    table: Table
    row: dict[str, Any]


class History:
    def __init__(self, url: str, queue_max: int, on_drop: Callable[[], None]) -> None:
        self.url = url
        self._queue: asyncio.Queue[_Op] = asyncio.Queue(maxsize=queue_max)
        self._on_drop = on_drop
        self._engine: AsyncEngine | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The database engine, for stores sharing the history database (after start())."""
        assert self._engine is not None, "History.start() first"
        return self._engine

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._engine = create_async_engine(self.url)
        async with self._engine.begin() as conn:
            await conn.run_sync(schema.upgrade)
        self._writer = asyncio.create_task(self._write_loop(), name="history-writer")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), flush_timeout)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._engine is not None:
            await self._engine.dispose()

    async def ping(self) -> bool:
        if self._engine is None:
            return False
        try:
            async with self._engine.connect() as conn:
                await conn.execute(select(1))
        except Exception:  # any driver error means "not ready", never a crash
            return False
        return True

    # --- enqueue (never awaits) ---------------------------------------------------------------

    def _put(self, op: _Op) -> None:
        try:
            self._queue.put_nowait(op)
        except asyncio.QueueFull:
            self._on_drop()

    def insert(self, table: Table, row: dict[str, Any]) -> None:
        """A plain insert into another table of ``metadata`` (the audit log), queued."""
        self._put(_Op("insert", table, row))

    def event(self, row: dict[str, Any]) -> None:
        self._put(_Op("insert_ignore", events, row))

    def session_started(self, row: dict[str, Any]) -> None:
        self._put(_Op("insert_ignore", sessions, row))

    def session_updated(self, stream_id: str, values: dict[str, Any]) -> None:
        self._put(_Op("update_session", sessions, {"stream_id": stream_id, **values}))

    def provisioning(
        self, at: datetime, host: str, action: str, count: int | None, reason: str | None
    ) -> None:
        row = {"at": at, "host": host, "action": action, "count": count, "reason": reason}
        self._put(_Op("insert", provisioning_log, row))

    def engine_drain(self, engine_id: str, drain: bool, at: datetime) -> None:
        if drain:
            self._put(_Op("insert_ignore", engine_drains, {"engine_id": engine_id, "at": at}))
        else:
            self._put(_Op("delete_drain", engine_drains, {"engine_id": engine_id}))

    # --- writer --------------------------------------------------------------------------------

    def _drain_statement(self, op: _Op) -> Any:
        if op.kind == "delete_drain":
            return delete(engine_drains).where(engine_drains.c.engine_id == op.row["engine_id"])
        return self._insert(op).values(**op.row)

    async def _write_loop(self) -> None:
        assert self._engine is not None
        while True:
            batch = [await self._queue.get()]
            # Let a batch gather: one transaction per row or two cost a commit each (250
            # claims/s made ~200 transactions/s). History is a log; 50 ms late is nothing.
            await asyncio.sleep(GATHER_S)
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception:
                # One bad row must not take its batch-mates down: retry them one by one.
                for op in batch:
                    try:
                        await self._write([op])
                    except Exception as exc:  # history is best effort; log and count the row
                        log.error("history_write_failed", table=op.table.name, error=repr(exc))
                        self._on_drop()
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Op]) -> None:
        assert self._engine is not None
        async with self._engine.begin() as conn:
            for statement, rows in self._grouped(batch):
                await conn.execute(statement, rows)

    def _grouped(self, batch: list[_Op]) -> list[tuple[Any, list[dict[str, Any]]]]:
        """The batch as few statements, each executed once for many rows (executemany).

        One statement per row cost central ~1.8 ms of CPU per claim at 250 claims/s (SQLAlchemy
        and the database thread once per statement; bench/results/central.md), close to half a
        core. The order that matters is kept: inserts go first (a session's row before its
        updates); a session's updates are merged in order, later values winning; drains, rare,
        keep their own order one by one (a drain then an undrain of the same engine)."""
        inserts: dict[tuple[str, str, tuple[str, ...]], tuple[Any, list[dict[str, Any]]]] = {}
        updates: dict[str, dict[str, Any]] = {}
        drains: list[tuple[Any, list[dict[str, Any]]]] = []
        for op in batch:
            if op.table is engine_drains:
                drains.append((self._drain_statement(op), [{}]))
            elif op.kind == "update_session":
                values = dict(op.row)
                updates.setdefault(values.pop("stream_id"), {}).update(values)
            else:
                shape = (op.kind, op.table.name, tuple(sorted(op.row)))
                if shape not in inserts:
                    inserts[shape] = (self._insert(op), [])
                inserts[shape][1].append(op.row)
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for stream_id, values in updates.items():
            rows = by_columns.setdefault(tuple(sorted(values)), [])
            rows.append({"b_stream_id": stream_id} | {f"v_{k}": v for k, v in values.items()})
        session_updates = [
            (
                update(sessions)
                .where(sessions.c.stream_id == bindparam("b_stream_id"))
                .values({k: bindparam(f"v_{k}") for k in columns}),
                rows,
            )
            for columns, rows in by_columns.items()
        ]
        return [*inserts.values(), *session_updates, *drains]

    def _insert(self, op: _Op) -> Any:
        """The insert of ``op``'s table, rows to come with the execution."""
        if op.kind == "insert_ignore":
            # Events and sessions are idempotent by id, also across restarts of central.
            dialect = self._engine.dialect.name if self._engine else ""
            if dialect == "postgresql":
                return postgresql.insert(op.table).on_conflict_do_nothing()
            if dialect == "sqlite":
                return sqlite.insert(op.table).on_conflict_do_nothing()
        return insert(op.table)

    # --- reads (operator API) ------------------------------------------------------------------

    async def sessions(
        self, limit: int, content_key: str | None, host: str | None
    ) -> list[dict[str, Any]]:
        assert self._engine is not None
        q = select(sessions).order_by(sessions.c.started_at.desc()).limit(limit)
        if content_key:
            q = q.where(sessions.c.content_key == content_key)
        if host:
            q = q.where(sessions.c.host == host)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [dict(r) for r in rows]

    async def open_sessions(self) -> dict[str, str]:
        """Content keys (and ``infohash:`` aliases) of sessions never ended in the history,
        each with the host of the proxy that reported it: what was live when central last
        stopped, as far as its write-behind got."""
        assert self._engine is not None
        q = select(sessions.c.content_key, sessions.c.infohash, sessions.c.host).where(
            sessions.c.ended_at.is_(None)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        live: dict[str, str] = {}
        for content_key, infohash, host in rows:
            if not host:  # no proxy host known: no snapshot could ever speak for it
                continue
            live[content_key] = host
            if infohash:
                live[f"infohash:{infohash.lower()}"] = host
        return live

    async def drained_engines(self) -> set[str]:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(engine_drains.c.engine_id))).scalars().all()
        return set(rows)

    async def provisioning_entries(self, limit: int) -> list[dict[str, Any]]:
        assert self._engine is not None
        q = select(provisioning_log).order_by(provisioning_log.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [dict(r) for r in rows]

    async def flush(self, limit_s: float = 5.0) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), limit_s)
