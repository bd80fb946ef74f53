"""History's statements on both databases central supports: SQLite and a real PostgreSQL server.

The idempotent inserts (events and sessions by id, drains by engine) use each dialect's own
``ON CONFLICT DO NOTHING``; a row written twice must be there once, on either database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from orchestrator.central.history import History, events


async def test_history_writes_and_reads_back(database_url: str) -> None:
    dropped: list[int] = []
    history = History(database_url, 100, lambda: dropped.append(1))
    await history.start()
    try:
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        event = {
            "event_id": "e1",
            "proxy_id": "edge1",
            "type": "viewers",
            "stream_id": "s1",
            "at": at,
            "payload": {"viewers": 3, "name": "Ünïcode"},
        }
        history.event(event)
        history.event(event)  # a retried event: ignored, not a failed batch
        session = {
            "stream_id": "s1",
            "proxy_id": "edge1",
            "host": "edge1",
            "content_key": "infohash:aa",
            "infohash": "aa",
            "claim_id": "c1",
            "engine_id": "edge1/e0",
            "source": "engine",
            "started_at": at,
            "peak_viewers": 1,
        }
        history.session_started(session)
        history.session_started(session)
        history.session_updated("s1", {"ended_at": at + timedelta(seconds=90), "end_reason": "x"})
        history.provisioning(at, "edge1", "scale_up", 2, "warm buffer")
        history.engine_drain("edge1/e0", True, at)
        history.engine_drain("edge1/e0", True, at)
        history.engine_drain("edge1/e1", True, at)
        history.engine_drain("edge1/e1", False, at)
        await history.flush()

        assert dropped == []
        async with history.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(events))).scalar() == 1
            payload = (await conn.execute(select(events.c.payload))).scalar()
        assert payload == {"viewers": 3, "name": "Ünïcode"}
        [row] = await history.sessions(10, None, None)
        assert row["end_reason"] == "x"
        assert row["ended_at"] - row["started_at"] == timedelta(seconds=90)
        assert await history.sessions(10, "infohash:bb", None) == []
        assert await history.drained_engines() == {"edge1/e0"}
        [prov] = await history.provisioning_entries(10)
        assert (prov["action"], prov["count"]) == ("scale_up", 2)
        assert await history.ping()
    finally:
        await history.stop()


async def test_one_batch_keeps_what_its_order_means(database_url: str) -> None:
    """Rows queued together are written as few statements (executemany): a session's updates
    still land in order, later values winning, and a drain then an undrain of one engine
    leaves it undrained."""
    history = History(database_url, 100, lambda: None)
    await history.start()
    try:
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        for n in (1, 2):
            history.session_started(
                {
                    "stream_id": f"s{n}",
                    "proxy_id": "edge1",
                    "host": "edge1",
                    "content_key": f"infohash:{n:02}",
                    "source": "central",
                    "started_at": at + timedelta(seconds=n),
                    "peak_viewers": 1,
                }
            )
            history.event(
                {
                    "event_id": f"e{n}",
                    "proxy_id": "edge1",
                    "type": "stream_started",
                    "stream_id": f"s{n}",
                    "at": at,
                    "payload": {"n": n},
                }
            )
        history.session_updated("s1", {"peak_viewers": 4})
        history.session_updated("s2", {"ended_at": at + timedelta(seconds=9), "end_reason": "idle"})
        history.session_updated(
            "s1", {"ended_at": at + timedelta(seconds=60), "end_reason": "idle", "peak_viewers": 7}
        )
        history.session_updated("s1", {"end_reason": "stopped"})
        history.engine_drain("edge1/e0", True, at)
        history.engine_drain("edge1/e1", True, at)
        history.engine_drain("edge1/e0", False, at)
        history.provisioning(at, "edge1", "scale_up", 1, "first")
        history.provisioning(at, "edge1", "scale_up", 2, "second")
        await history.flush()

        rows = {r["stream_id"]: r for r in await history.sessions(10, None, None)}
        assert (rows["s1"]["end_reason"], rows["s1"]["peak_viewers"]) == ("stopped", 7)
        assert rows["s1"]["ended_at"] - rows["s1"]["started_at"] == timedelta(seconds=59)
        assert (rows["s2"]["end_reason"], rows["s2"]["peak_viewers"]) == ("idle", 1)
        async with history.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(events))).scalar() == 2
        assert await history.drained_engines() == {"edge1/e1"}
        newest, oldest = await history.provisioning_entries(10)
        assert (newest["reason"], oldest["reason"]) == ("second", "first")
    finally:
        await history.stop()
