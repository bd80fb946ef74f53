"""Sessions the local proxy told the agent about: which engine carries which live session, and
the path of its ``stat_url``, so the agent polls stats for sessions it did not place itself
(central's claims and the proxy's static list; its own local claims carry their stat_url in the
claim's confirm).

Rules:

1. Bounded: a stat path must be an engine stat path (``/ace/stat/<infohash>/<session>``); it is
   only ever requested from the engine the session names, never from the host in the URL, so a
   buggy or hostile proxy cannot make the agent call anything but its own engines' stat pages.
2. At most ``limit`` sessions are held (``max_engines`` x ``stream_cap`` x 2: room for a new
   session reported before the old one's end lands); a session whose engine goes away is
   dropped with it.
3. A lease: the proxy reports its live sessions again every ``agent_session_refresh_s``; one
   not reported within ``session_ttl_s`` is dropped. So a proxy that died (or an end that got
   lost) cannot keep an engine counted busy, and after an agent restart (sessions are held in
   memory only) the next re-report fills the book again.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

STAT_PATH = re.compile(r"^/ace/stat/[0-9A-Za-z]{1,100}/[0-9A-Za-z]{1,100}$")


def stat_path(stat_url: str) -> str | None:
    """The path of an engine ``stat_url``, or None when it is not an engine stat page."""
    try:
        parts = urlsplit(stat_url)
    except ValueError:
        return None
    if parts.query or parts.fragment or not STAT_PATH.match(parts.path):
        return None
    return parts.path


@dataclass
class Session:
    session_id: str
    engine_id: str
    stat_path: str
    content_key: str | None
    since_wall: float
    expires_mono: float


class SessionFull(Exception):
    """The session book holds its limit already."""


class SessionBook:
    def __init__(self, limit: int, ttl_s: float) -> None:
        self.limit = limit
        self.ttl_s = ttl_s
        self.sessions: dict[str, Session] = {}

    def put(
        self, session_id: str, engine_id: str, path: str, content_key: str | None
    ) -> tuple[Session, bool]:
        """Record (or move) a session; returns it and whether it is new."""
        old = self.sessions.get(session_id)
        if old is None and len(self.sessions) >= self.limit:
            raise SessionFull(f"the agent already follows {self.limit} sessions")
        since = old.since_wall if old is not None else time.time()
        expires = time.monotonic() + self.ttl_s
        session = Session(session_id, engine_id, path, content_key, since, expires)
        self.sessions[session_id] = session
        return session, old is None

    def drop(self, session_id: str) -> Session | None:
        return self.sessions.pop(session_id, None)

    def for_engine(self, engine_id: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.engine_id == engine_id]

    def drop_engine(self, engine_id: str) -> None:
        for s in self.for_engine(engine_id):
            del self.sessions[s.session_id]

    def expire(self) -> list[Session]:
        now = time.monotonic()
        gone = [s for s in self.sessions.values() if s.expires_mono <= now]
        for s in gone:
            del self.sessions[s.session_id]
        return gone
