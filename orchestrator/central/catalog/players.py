"""Players (profiles) in the history database, served from memory; and their usage.

A player is a name, the channel groups it may watch, a fleet-wide stream limit and a secret:
the secret is the path of its own playlist URL (``/p/<secret>/playlist.m3u``). Only the
secret's SHA-256 is stored, and only that crosses to the edges; the secret itself is shown once,
when it is made (create, rotate). Writes go to the database first under one lock, then the
memory copy is reloaded from what was committed (as the channel store does). ``version`` is a
digest of the players as edges see them, so it changes exactly when they do.

Usage: how many streams each player is watching, summed from the proxies' snapshots
(``LiveStream.players``), fleet-wide and per edge host — what the proxies' stream limits read.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from acefleet import logs
from acefleet.catalog_wire import EdgePlayer, Player, PlayerFields, PlayerUsage
from acefleet.player_feeds import SECRET_MIN
from acefleet.tokens import secret_sha256
from orchestrator.central.history import metadata
from orchestrator.central.streams import StreamRegistry

log = logs.get(__name__)

players = Table(
    "players",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("groups", JSON, nullable=False),
    Column("max_streams", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
_SECRET_BYTES = 32  # token_urlsafe(32): 43 URL-safe characters


class UnknownPlayer(LookupError):
    def __init__(self, player_id: int) -> None:
        super().__init__(f"no player {player_id}")


def new_secret() -> str:
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    assert len(secret) >= SECRET_MIN
    return secret


def _row(fields: PlayerFields) -> dict[str, Any]:
    return {
        "name": fields.name,
        "groups": list(fields.groups),
        "max_streams": fields.max_streams,
        "enabled": fields.enabled,
    }


def _player(row: Any) -> EdgePlayer:
    return EdgePlayer(
        id=row.id,
        name=row.name,
        groups=list(row.groups or []),
        max_streams=row.max_streams,
        enabled=row.enabled,
        secret_sha256=row.secret_sha256,
    )


def public(player: EdgePlayer) -> Player:
    """A player as operators see it: everything but the secret's hash."""
    return Player.model_validate(player.model_dump(exclude={"secret_sha256"}))


class PlayerStore:
    def __init__(
        self, engine: Callable[[], AsyncEngine], now: Callable[[], datetime] | None = None
    ) -> None:
        # The engine exists only once history has started; ask for it when needed.
        self._engine_of = engine
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = asyncio.Lock()
        self._by_id: dict[int, EdgePlayer] = {}
        self._by_hash: dict[str, EdgePlayer] = {}
        self.version = ""

    async def start(self) -> None:
        async with self._engine_of().connect() as conn:
            await self._reload(conn)
        log.info("players_loaded", players=len(self._by_id))

    async def stop(self) -> None:
        return None

    # --- reads (memory) ------------------------------------------------------------------------

    def edge_players(self) -> list[EdgePlayer]:
        return list(self._by_id.values())

    def list(self) -> list[Player]:
        return [public(p) for p in self._by_id.values()]

    def get(self, player_id: int) -> Player:
        return public(self._edge(player_id))

    def by_secret_sha256(self, digest: str) -> EdgePlayer | None:
        return self._by_hash.get(digest)

    def by_hash(self) -> Mapping[str, EdgePlayer]:
        """Players by their secret's SHA-256 (what ``player_feeds.resolve`` looks up in)."""
        return self._by_hash

    def _edge(self, player_id: int) -> EdgePlayer:
        try:
            return self._by_id[player_id]
        except KeyError:
            raise UnknownPlayer(player_id) from None

    # --- writes --------------------------------------------------------------------------------

    async def create(self, fields: PlayerFields) -> tuple[Player, str]:
        secret = new_secret()
        async with self._lock:
            now = self._now()
            async with self._engine_of().begin() as conn:
                result = await conn.execute(
                    insert(players).values(
                        **_row(fields),
                        secret_sha256=secret_sha256(secret),
                        created_at=now,
                        updated_at=now,
                    )
                )
                key = result.inserted_primary_key
                assert key is not None
                new_id = int(key[0])
                await self._reload(conn)
        log.info("player_created", player_id=new_id, name=fields.name)
        return self.get(new_id), secret

    async def replace(self, player_id: int, fields: PlayerFields) -> Player:
        await self._update(player_id, {**_row(fields)})
        return self.get(player_id)

    async def rotate_secret(self, player_id: int) -> tuple[Player, str]:
        """A new secret: the old playlist URL stops working at once (tokens already handed out
        stay valid until they expire: they are signed for the player, not for its URL)."""
        secret = new_secret()
        await self._update(player_id, {"secret_sha256": secret_sha256(secret)})
        log.info("player_secret_rotated", player_id=player_id)
        return self.get(player_id), secret

    async def delete(self, player_id: int) -> None:
        async with self._lock:
            self._edge(player_id)
            async with self._engine_of().begin() as conn:
                await conn.execute(delete(players).where(players.c.id == player_id))
                await self._reload(conn)
        log.info("player_deleted", player_id=player_id)

    async def _update(self, player_id: int, values: dict[str, Any]) -> None:
        async with self._lock:
            self._edge(player_id)
            async with self._engine_of().begin() as conn:
                await conn.execute(
                    update(players)
                    .where(players.c.id == player_id)
                    .values(**values, updated_at=self._now())
                )
                await self._reload(conn)

    async def _reload(self, conn: AsyncConnection) -> None:
        rows = (await conn.execute(select(players).order_by(players.c.id))).all()
        items = [_player(r) for r in rows]
        self._by_id = {p.id: p for p in items}
        self._by_hash = {p.secret_sha256: p for p in items}
        body = "\n".join(p.model_dump_json() for p in items).encode()
        self.version = hashlib.blake2b(body, digest_size=12).hexdigest()


def usage(registry: StreamRegistry) -> PlayerUsage:
    """Streams per player, fleet-wide and per edge host, from the live streams' ``players``
    (as the proxies' last snapshots reported them)."""
    streams: dict[str, int] = {}
    by_host: dict[str, dict[str, int]] = {}
    for stream in registry.streams.values():
        for player_id, count in stream.players.items():
            if count <= 0:
                continue
            streams[player_id] = streams.get(player_id, 0) + count
            host = by_host.setdefault(stream.host, {})
            host[player_id] = host.get(player_id, 0) + count
    return PlayerUsage(streams=streams, by_host=by_host)
