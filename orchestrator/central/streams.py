"""Live upstream sessions as the edge proxies report them, and the proxies themselves."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class Stream:
    stream_id: str
    proxy_id: str
    host: str
    content_key: str
    started_at: datetime
    source: str
    viewers: int = 0
    peak_viewers: int = 0
    infohash: str | None = None
    claim_id: str | None = None
    engine_id: str | None = None
    players: dict[str, int] = field(default_factory=dict)  # player id → its viewers (snapshots)
    standby: bool = False  # a warm standby session of the channel (not a second primary)

    def set_viewers(self, viewers: int) -> None:
        self.viewers = viewers
        self.peak_viewers = max(self.peak_viewers, viewers)


@dataclass(slots=True)
class Proxy:
    proxy_id: str
    host: str
    url: str
    last_snapshot: float


class EventMemory:
    """Event ids already applied, oldest forgotten first (bounded memory)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        return event_id in self._seen

    def remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)


class StreamRegistry:
    def __init__(self, event_memory: int) -> None:
        self.streams: dict[str, Stream] = {}
        self.proxies: dict[str, Proxy] = {}
        self.proxy_url_by_host: dict[str, str] = {}
        self.events = EventMemory(event_memory)

    def viewers(self) -> int:
        return sum(s.viewers for s in self.streams.values())

    def primaries(self) -> int:
        """Live streams that are their channel's session (warm standbys not counted)."""
        return sum(not s.standby for s in self.streams.values())

    def of_proxy(self, proxy_id: str) -> list[Stream]:
        return [s for s in self.streams.values() if s.proxy_id == proxy_id]
