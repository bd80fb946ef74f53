"""Playback sessions and the engine's rules about them.

- One live session per content: a start with another ``pid`` replaces the session, whose
  readers are disconnected and whose URLs answer 403 from then on.
- A start with the same ``pid`` (or again without one) gets the same live session back.
- A session with no reader ends on its own ``idle_timeout`` seconds after the last one left
  (or after it was started, if nobody ever read it). A caller whose playback is held while the
  session prebuffers is a reader: with a prebuffer longer than the idle timeout (the fast
  profile's 2 s against a loaded machine's slow start) the session would otherwise end under a
  waiting player, who would get 403.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from acefleet import logs
from enginesim.content import Content
from enginesim.feed import Feed
from enginesim.hls import Segmenter
from enginesim.httpserver import Connection
from enginesim.settings import Timing

log = logs.get(__name__)

Kind = Literal["ts", "hls"]
REMEMBER_ENDED = 4096


@dataclass(eq=False)
class Session:
    content: Content
    pid: str
    kind: Kind
    feed: Feed
    timing: Timing
    bitrate: int
    playback_session_id: str = field(default_factory=lambda: secrets.token_hex(20))
    url_session: str = field(default_factory=lambda: secrets.token_hex(16))
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    created: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    opened: float | None = None  # when playback was first asked for: prebuffering starts
    last_activity: float = field(default_factory=time.monotonic)
    readers: list[Connection] = field(default_factory=list)
    # callers whose playback headers are held while the session prebuffers: they are readers
    # to be (an engine does not end a session a player is waiting on)
    waiting: int = 0
    bytes_sent: int = 0
    media_bytes: int = 0  # taken from the feed by the pacer (HLS: segmenter.bytes_read)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""
    pacer: asyncio.Task[None] | None = None
    segmenter: Segmenter | None = None

    @property
    def infohash(self) -> str:
        return self.content.infohash

    @property
    def state(self) -> str:
        """starting (stat answers {}) -> idle -> prebuf -> dl, or ended."""
        now = time.monotonic()
        if self.ended.is_set():
            return "ended"
        if self.opened is None:
            return "starting" if now - self.created < self.timing.stat_empty else "idle"
        return "prebuf" if now < self.ready_at else "dl"

    @property
    def ready_at(self) -> float:
        """Monotonic time prebuffering ends (only meaningful once playback was opened)."""
        base = self.opened if self.opened is not None else time.monotonic()
        return max(base, self.created + self.timing.stat_empty) + self.timing.prebuffer

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    async def wait_ready(self, conn: Connection) -> bool:
        """Prebuffer (headers held meanwhile); False if the session or the caller went away."""
        if self.opened is None:
            self.opened = time.monotonic()
            log.info("prebuffering", infohash=self.infohash, seconds=self.timing.prebuffer)
        self.touch()
        delay = self.ready_at - time.monotonic()
        if delay > 0:
            self.waiting += 1
            try:
                await self.hold(conn, delay)
            finally:
                self.waiting -= 1
                self.touch()  # the idle clock starts when the wait ends, not when it began
        return not self.ended.is_set() and not conn.closed.is_set()

    async def hold(self, conn: Connection, seconds: float | None = None) -> None:
        """Wait until the session ends, the caller goes away, or ``seconds`` pass."""
        ended = asyncio.ensure_future(self.ended.wait())
        gone = asyncio.ensure_future(conn.closed.wait())
        try:
            await asyncio.wait({ended, gone}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            gone.cancel()

    def end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        if self.pacer is not None:
            self.pacer.cancel()
        for reader in list(self.readers):
            reader.close()
        log.info("session ended", infohash=self.infohash, pid=self.pid, reason=reason)

    def stats(self, state: str, *, peerless: bool = False) -> dict[str, Any]:
        """The stat_url ``response``: fields and units as the engine's (livepos as strings).
        ``peerless``: report no peers whatever the state (the no_peers fault)."""
        flowing = state == "dl"
        kbps = self.bitrate // 8192 if flowing else 0  # KB/s
        downloaded = self.media_bytes + (self.segmenter.bytes_read if self.segmenter else 0)
        now = int(time.time())
        first = now - 3600  # an hour of live window, as channels typically offer
        return {
            "status": state,
            "peers": 3 + int(self.infohash[:2], 16) % 20 if flowing and not peerless else 0,
            "speed_down": kbps,
            "speed_up": kbps // 4,
            "downloaded": downloaded,
            "uploaded": downloaded // 4,
            "total_progress": 0,
            "is_live": 1,
            "playback_session_id": self.playback_session_id,
            "client_session_id": -1,
            "livepos": {
                "pos": str(now - 30),
                "live_first": str(first),
                "live_last": str(now),
                "first_ts": str(first),
                "last_ts": str(now),
                "buffer_pieces": "15" if flowing else "0",
            },
        }

    def describe(self) -> dict[str, Any]:
        hls_active = self.kind == "hls" and time.monotonic() - self.last_activity < max(
            2.0, 3 * self.timing.hls_segment_seconds
        )
        return {
            "infohash": self.infohash,
            "content_id": self.content.value,
            "selector": self.content.kind,
            "pid": self.pid,
            "playback_session_id": self.playback_session_id,
            "url_session": self.url_session,
            "kind": self.kind,
            "state": self.state,
            "readers": len(self.readers) if self.kind == "ts" else int(hls_active),
            "bytes_sent": self.bytes_sent,
            "started_at": self.started_at,
        }


FeedFactory = Callable[[str], Feed]


class Registry:
    """Live sessions by content, plus the URL sessions of ended ones (they answer 403)."""

    def __init__(self, timing: Timing, bitrate: int, make_feed: FeedFactory) -> None:
        self.timing = timing
        self.bitrate = bitrate
        self._make_feed = make_feed
        self.by_infohash: dict[str, Session] = {}
        self._by_url: dict[str, Session] = {}
        self._by_token: dict[str, Session] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()  # url session or token -> infohash
        self.started_total = 0
        self.replaced_total = 0
        self.ended_total = 0
        # why sessions ended (stopped, idle, replaced, shutdown): a caller that abandons a start
        # without the stop command shows up as "idle" here, not as "stopped"
        self.ended_by_reason: dict[str, int] = {}
        # every stop command received, also for a session already gone (answered unknown)
        self.stop_calls_total = 0

    def start(self, content: Content, pid: str, kind: Kind) -> Session:
        current = self.by_infohash.get(content.infohash)
        if current is not None:
            if current.pid == pid and current.kind == kind:
                current.touch()
                return current
            self.replaced_total += 1
            log.info("session replaced", infohash=content.infohash, old=current.pid, new=pid)
            self._end(current, "replaced")
        feed = self._make_feed(content.infohash)
        session = Session(
            content=content,
            pid=pid,
            kind=kind,
            feed=feed,
            timing=self.timing,
            # a clip plays at its own bitrate; the burst and stats follow it
            bitrate=int(getattr(feed, "bitrate", self.bitrate)),
        )
        self.by_infohash[content.infohash] = session
        self._by_url[session.url_session] = session
        self._by_token[session.token] = session
        self.started_total += 1
        log.info(
            "session started",
            infohash=content.infohash,
            content_id=content.value,
            pid=pid,
            kind=kind,
            playback_session_id=session.playback_session_id,
        )
        return session

    def find(self, key: str) -> Session | Literal[False] | None:
        """The live session for a URL session or token; False if it ended; None if unknown."""
        session = self._by_url.get(key) or self._by_token.get(key)
        if session is not None:
            return session
        return False if key in self._ended else None

    def stop(self, key: str) -> bool:
        session = self._by_url.get(key)
        if session is None:
            return False
        self._end(session, "stopped")
        return True

    def _end(self, session: Session, reason: str) -> None:
        session.end(reason)
        self.ended_total += 1
        self.ended_by_reason[reason] = self.ended_by_reason.get(reason, 0) + 1
        if self.by_infohash.get(session.infohash) is session:
            del self.by_infohash[session.infohash]
        for key, index in ((session.url_session, self._by_url), (session.token, self._by_token)):
            index.pop(key, None)
            self._ended[key] = session.infohash
        while len(self._ended) > REMEMBER_ENDED:
            self._ended.popitem(last=False)

    def end_all(self, reason: str) -> None:
        for session in list(self.by_infohash.values()):
            self._end(session, reason)

    def reap_idle(self) -> None:
        now = time.monotonic()
        for session in list(self.by_infohash.values()):
            idle = not session.readers and not session.waiting
            if idle and now - session.last_activity > self.timing.idle_timeout:
                self._end(session, "idle")

    async def reaper(self) -> None:
        """Ends sessions nobody reads, like an engine does some time after the player left."""
        interval = min(1.0, max(0.05, self.timing.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.reap_idle()

    def snapshot(self) -> dict[str, Any]:
        return {
            "sessions": [s.describe() for s in self.by_infohash.values()],
            "sessions_started_total": self.started_total,
            "sessions_replaced_total": self.replaced_total,
            "sessions_ended_total": self.ended_total,
            "sessions_ended_by_reason": dict(self.ended_by_reason),
            "stop_calls_total": self.stop_calls_total,
        }
