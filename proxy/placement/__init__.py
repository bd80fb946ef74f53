"""Proxy placement: where an upstream gets its bytes. This module is the seam to the data path.

A :class:`Placer` answers "where do I get content X": an engine (``host:port``; the proxy does
the ``format=json`` call and opens the playback URL) or a direct MPEG-TS URL (a relay from
another edge proxy). An :class:`EventSink` hears about upstream sessions (once per session,
never per viewer). A placer that cannot place raises :class:`PlacementError` (the viewers' 503);
a chain step that cannot answer now raises :class:`Unavailable` (the chain asks the next step).

Where each rule lives:

- ``chain.py``: the fallback chain (central → agent → static), when a step is skipped, and the
  engines a failover avoids (``failed_engine_avoid_s``);
- ``central.py``: claims from central, and which relay sources a failover avoids
  (``failed_relay_avoid_s``);
- ``agent.py``: claims from the local agent (confirm when live, release retried);
- ``static.py``: the static engine list (caps, health probes, ``failed_static_avoid_s``);
- ``relay.py``: relay URLs and the relay-claim header;
- ``claim_call.py``: the ``POST /v1/claims`` call central and agent share;
- ``circuit.py``: the circuit breaker in front of central and the agent.

Failing over a live upstream (when, how often) is the data path's (``proxy/channel.py``); the
control-plane clients (peers, event queue, snapshot, wiring) are ``proxy/control/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from acefleet.errors import ServiceError

Source = Literal["static", "agent", "central", "relay"]


class PlacementError(ServiceError):
    """No placement now. ``status`` is the HTTP status the waiting viewers get."""

    def __init__(
        self, code: str, message: str, *, status: int = 503, retry_after_s: float | None = 5.0
    ) -> None:
        super().__init__(status, code, message, retry_after_s=retry_after_s)


class Unavailable(PlacementError):
    """This step cannot place now; the chain asks the next one."""


@dataclass(frozen=True)
class Placement:
    """Where one upstream session gets its bytes. Exactly one of ``engine`` and ``url``."""

    source: Source
    engine: str | None = None  # host:port of an engine HTTP API
    url: str | None = None  # a direct MPEG-TS URL (relay)
    claim_id: str | None = None
    engine_id: str | None = None
    relay_from: str | None = None  # a relay's source: that proxy's base URL (the loop guard)

    def __post_init__(self) -> None:
        if (self.engine is None) == (self.url is None):
            raise ValueError("a placement names exactly one of engine and url")

    @property
    def where(self) -> str:
        """The engine or relay URL, for logs and /ace/status: never with a relay's edge token
        (a bearer credential for the channel)."""
        return self.engine or (self.url or "").split("&token=", 1)[0]


class Placer(Protocol):
    async def place(self, content_key: str) -> Placement:
        """Reserve a source for ``content_key``; raise :class:`PlacementError` if none."""
        ...

    async def place_standby(self, content_key: str, avoid: frozenset[str]) -> Placement:
        """Reserve a second source for ``content_key`` (a warm standby), on none of the engine
        ids in ``avoid`` (the primary's); raise :class:`PlacementError` if none. Released and
        confirmed like any placement."""
        ...

    def confirm(self, placement: Placement, stat_url: str | None) -> None:
        """The upstream session on ``placement`` is live: a claim that expires unless confirmed
        (the agent's) is confirmed now, and the session's ``stat_url`` (None for a relay) goes
        to the local agent, which polls the engine's stats. Must not block (send in the
        background)."""
        ...

    async def release(self, placement: Placement, reason: str) -> None:
        """The upstream session on ``placement`` ended. ``reason`` ``engine_failed`` means the
        source misbehaved (stall, refused, disconnect) and should not be picked again soon."""
        ...


@dataclass
class StreamRecord:
    """One upstream session, as event sinks and /ace/status see it."""

    stream_id: str
    content_key: str
    placement: Placement
    started_at: datetime
    infohash: str | None = None
    viewers: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    # a warm standby session (kept ready to replace the channel's primary): announced as such;
    # flipped to False, and announced again, when it is promoted
    standby: bool = False


class EventSink(Protocol):
    """Must not block: implementations queue and send in the background."""

    def stream_started(self, stream: StreamRecord) -> None: ...

    def stream_ended(self, stream: StreamRecord, reason: str) -> None: ...

    def viewers_changed(self, stream: StreamRecord) -> None: ...


class NullEventSink:
    def stream_started(self, stream: StreamRecord) -> None:
        return None

    def stream_ended(self, stream: StreamRecord, reason: str) -> None:
        return None

    def viewers_changed(self, stream: StreamRecord) -> None:
        return None
