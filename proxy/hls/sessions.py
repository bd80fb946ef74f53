"""HLS players as viewers: one :class:`HlsSession` per player, found by the id in its URLs.

A player fetches ``manifest.m3u8`` once and is sent to its own media playlist,
``hls/<sid>/index.m3u8``; every later playlist and segment fetch names ``sid``, which is how a
stateless HTTP client becomes a viewer that can be counted, limited and timed out. A session
counts as a viewer of its channel until it has fetched nothing for ``hls_session_idle_s``.

A session keeps its own numbering offsets: when it moves to another channel (a merge: the content
it asked for by id turned out to be live under its infohash), the playlists it is served continue
its own media and discontinuity sequences, so its player never sees either go back.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from acefleet.errors import ServiceError

if TYPE_CHECKING:
    from proxy.channel import Channel

_SID = re.compile(r"^[A-Za-z0-9_-]{16,43}$")


def new_sid() -> str:
    """A fresh session id: 128 random bits, URL-safe (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def valid_sid(sid: str) -> bool:
    return bool(_SID.match(sid))


class HlsSession:
    """One HLS player: where it watches, when it last fetched, how its numbers are shifted."""

    __slots__ = (
        "address",
        "changed",
        "channel",
        "disc_offset",
        "error",
        "forced_disc_seq",
        "key",
        "last_disc",
        "last_fetch",
        "last_seq",
        "selector_query",
        "seq_offset",
        "sid",
        "waiting",
    )

    def __init__(self, sid: str, key: str, selector_query: str, address: str) -> None:
        self.sid = sid
        self.key = key
        # e.g. "id=abc" (and "&token=…" in token mode, so a re-created session is checked
        # again): carried by every URL, since HAProxy hashes the channel from it
        self.selector_query = selector_query
        self.address = address
        self.last_fetch = time.monotonic()
        self.waiting = 0  # requests of this player waiting for a first segment: never idle
        self.channel: Channel | None = None
        self.error: ServiceError | None = None  # the channel failed before this player got any
        # set whenever something it may be waiting for happens (a segment, a failure, a move)
        self.changed = asyncio.Event()
        # numbering as this player sees it: channel seq + seq_offset (0 unless it moved)
        self.seq_offset = 0
        self.disc_offset = 0
        self.forced_disc_seq: int | None = None  # channel seq shown with a discontinuity tag
        self.last_seq = -1  # newest media sequence number (its own numbering) it was listed
        self.last_disc = -1  # discontinuity sequence number of that segment

    def touch(self) -> None:
        self.last_fetch = time.monotonic()

    def idle_for(self, now: float) -> float:
        return now - self.last_fetch


class SessionTable:
    """Every live HLS session of this proxy, by id (bounded by the viewer limit upstream)."""

    def __init__(self) -> None:
        self._by_sid: dict[str, HlsSession] = {}

    def get(self, sid: str) -> HlsSession | None:
        return self._by_sid.get(sid)

    def add(self, session: HlsSession) -> None:
        self._by_sid[session.sid] = session

    def remove(self, session: HlsSession) -> None:
        if self._by_sid.get(session.sid) is session:
            del self._by_sid[session.sid]

    def __len__(self) -> int:
        return len(self._by_sid)

    def __iter__(self) -> Iterator[HlsSession]:
        return iter(tuple(self._by_sid.values()))
