"""The channel catalog and player profiles as they cross the wire (see docs/catalog.md).

Central keeps the catalog (channels, guide) and the players in its database; operators edit them
through ``/v1/channels``, ``/v1/guide`` and ``/v1/players``; edges poll :class:`EdgeCatalog` and
:class:`PlayerUsage` so they can serve the player-facing files and check stream tokens without
asking central on the streaming path. Both sides render the player-facing files from these
models with ``acefleet.player_feeds``, so a playlist looks the same whoever serves it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from acefleet.wire import Wire, content_key

# What an engine accepts as a content id or infohash (the proxy's own selector rule).
CONTENT_VALUE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
GROUP_MAX = 100


class ChannelFields(Wire):
    """A channel as an operator writes it (create, replace, import)."""

    name: str = Field(min_length=1, max_length=200, description="Display name (tvg-name)")
    content_kind: Literal["id", "infohash"] = Field(
        description="How the engine is asked for it: content id or infohash"
    )
    content_value: str = Field(description="The content id or infohash (stored lowercased)")
    group: str = Field("", max_length=GROUP_MAX, description="group-title; players' access rule")
    logo: str = Field("", max_length=2000, description="tvg-logo: an http(s) URL, or empty")
    tvg_id: str = Field("", max_length=200, description="Guide id (XMLTV channel id)")
    number: int | None = Field(None, ge=1, le=99_999, description="tvg-chno / GuideNumber")
    enabled: bool = Field(True, description="Listed to players")
    standby: bool = Field(
        False,
        description="Edges keep a warm standby session of this channel while it plays, whatever "
        "its viewer count (a second engine, ready to take over at once)",
    )

    @field_validator("content_value")
    @classmethod
    def _content(cls, value: str) -> str:
        value = value.strip().lower()
        if not CONTENT_VALUE.match(value):
            raise ValueError("must be 1-128 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("logo")
    @classmethod
    def _logo(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def content_key(self) -> str:
        return content_key(self.content_kind, self.content_value)


class CatalogChannel(ChannelFields):
    """A stored channel."""

    id: int = Field(ge=1)


class ChannelList(Wire):
    items: list[CatalogChannel]


class ImportLineError(Wire):
    line: int = Field(ge=1, description="1-based line (M3U) or item index (JSON) at fault")
    text: str = Field(description="The offending line, shortened to 200 characters")
    message: str


class ImportReport(Wire):
    """What an import did, or (with errors) why it changed nothing at all."""

    dry_run: bool
    created: int
    updated: int
    unchanged: int
    errors: list[ImportLineError]


class PlayerFields(Wire):
    """A player (profile) as an operator writes it."""

    name: str = Field(min_length=1, max_length=100)
    groups: list[str] = Field(
        default_factory=list, description="Channel groups it may watch; empty: every group"
    )
    max_streams: int = Field(
        2, ge=0, le=10_000, description="Concurrent streams fleet-wide; 0: no limit"
    )
    enabled: bool = True

    @field_validator("groups")
    @classmethod
    def _groups(cls, groups: list[str]) -> list[str]:
        if len(groups) > 100 or any(len(g) > GROUP_MAX for g in groups):
            raise ValueError(f"at most 100 groups of at most {GROUP_MAX} characters")
        return sorted(set(groups))


class Player(PlayerFields):
    id: int = Field(ge=1)


class PlayerList(Wire):
    items: list[Player]


class PlayerSecret(Wire):
    """Answered once, when a player is created or its secret is rotated."""

    player: Player
    secret: str
    playlist_url: str = Field(description="The player's own M3U URL (keep it secret)")
    guide_url: str
    hdhomerun_url: str = Field(description="Base URL a media server adds as an HDHomeRun tuner")


class EdgePlayer(Player):
    """A player as edges know it: no secret, only its SHA-256 to look a secret URL up."""

    secret_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class EdgeCatalog(Wire):
    """Everything an edge needs to serve the player files and check tokens while central is
    away. ``version`` changes whenever any of it does (ETag)."""

    version: str
    player_url: str = Field(description="Base URL of stream URLs in playlists (the VIP)")
    tokens_required: bool
    tuner_count: int = Field(ge=1, description="HDHomeRun TunerCount when generated")
    token_ttl_s: float = Field(
        7 * 86400.0, ge=60, description="Lifetime of the stream tokens in rendered playlists"
    )
    channels: list[CatalogChannel]
    players: list[EdgePlayer]
    guide_version: str = Field(description="ETag of the filtered guide ('' when there is none)")


class PlayerUsage(Wire):
    """Streams each player is watching fleet-wide, as central counts them from snapshots."""

    streams: dict[str, int] = Field(description="player id → concurrent streams")
    by_host: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="host → player id → streams there (so an edge can "
        "replace its own stale share with its live count)",
    )
