"""The proxy's HLS endpoints: the master playlist, each player's media playlist, segments.

- ``GET /ace/manifest.m3u8?id=…`` (the engine's own path and selectors, so player URLs made
  for an engine keep working): a new player session; answered with a master playlist naming
  the session's media playlist once the channel has a first segment.
- ``GET /ace/hls/<sid>/index.m3u8?id=…``: the session's media playlist. An unknown ``sid``
  (this proxy restarted, the session idled out, HAProxy moved the channel here) starts the
  session again under the same limits as a new viewer, so the player just keeps going.
- ``GET /ace/hls/<sid>/<tag>_<seq>.ts?id=…``: one segment; unknown or expired → 404.

Every URL carries the channel's selector so HAProxy's content hashing sends a channel's TS and
HLS players to one edge. In token mode a new session needs a token (``proxy/access.py``), and
its URLs carry that token on, so a session re-created under an unknown sid is checked again;
a live session needs none per request: its unguessable sid is the capability.

A playlist asked for before the channel has a segment waits for it rather than answering an
empty playlist (players give up on those); a channel that cannot start answers the same error
as a TS request would. Responses allow any origin, so a dashboard
on central's origin can play them.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlencode

from acefleet.errors import ServiceError
from proxy.access import Access
from proxy.edge import Edge
from proxy.hls.feed import HlsFeed
from proxy.hls.playlist import master_playlist
from proxy.hls.sessions import HlsSession, new_sid, valid_sid
from proxy.metrics import Metrics
from proxy.responses import response, response_head
from proxy.settings import ProxySettings

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
CORS = {"Access-Control-Allow-Origin": "*"}
_PLAYLIST_HEADERS = {**CORS, "Cache-Control": "no-cache"}
# a segment never changes content once listed (its URL names it alone)
_SEGMENT_HEADERS = {**CORS, "Cache-Control": "public, max-age=60"}


class NotFound(ServiceError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(404, code, message, headers=CORS)


class HlsRoutes:
    def __init__(
        self, settings: ProxySettings, metrics: Metrics, edge: Edge, access: Access
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.edge = edge
        self.access = access

    # --- playlists (may wait for a channel's first segment) -------------------------------------
    async def manifest(
        self,
        address: str,
        key: str,
        selector: tuple[str, str],
        params: dict[str, str],
        token: str | None,
        keep_alive: bool,
    ) -> bytes:
        session = self._start(new_sid(), address, key, selector, params, token)
        feed = await self._first_segment(session)
        body = master_playlist(
            f"hls/{session.sid}/index.m3u8?{session.selector_query}", feed.bandwidth
        )
        return response(200, body, PLAYLIST_TYPE, _PLAYLIST_HEADERS, keep_alive=keep_alive)

    async def media_playlist(
        self,
        address: str,
        sid: str,
        key: str,
        selector: tuple[str, str],
        params: dict[str, str],
        token: str | None,
        keep_alive: bool,
    ) -> bytes:
        session = self._session(sid, key)
        if session is None:  # new to this proxy: the player keeps going from here
            session = self._start(sid, address, key, selector, params, token)
        session.touch()
        feed = await self._first_segment(session)
        return response(
            200, feed.playlist(session), PLAYLIST_TYPE, _PLAYLIST_HEADERS, keep_alive=keep_alive
        )

    # --- segments (never wait) ------------------------------------------------------------------
    def segment(
        self, sid: str, name: str, key: str, keep_alive: bool, head: bool
    ) -> tuple[bytes, bytes]:
        """The response head and the segment's own bytes (sent as they are, never copied)."""
        session = self._session(sid, key)
        if session is not None:
            session.touch()
            channel = session.channel
        else:  # a player whose session idled out may still fetch what its playlist listed
            channel = self.edge.find(key)
        feed = channel.hls if channel is not None else None
        segment = feed.segment(name) if feed is not None else None
        if segment is None:
            raise NotFound("segment_not_found", f"no such segment (expired or unknown): {name}")
        data = segment.data
        start = response_head(200, len(data), "video/mp2t", _SEGMENT_HEADERS, keep_alive=keep_alive)
        return start, b"" if head else data

    # --- sessions -------------------------------------------------------------------------------
    def _session(self, sid: str, key: str) -> HlsSession | None:
        if not valid_sid(sid):
            raise NotFound("hls_session_unknown", "not an HLS session id of this proxy")
        session = self.edge.hls_sessions.get(sid)
        if session is not None and session.key != key:
            channel = self.edge.find(key)
            if channel is None or session.channel is not channel:
                raise ServiceError(
                    400,
                    "hls_session_mismatch",
                    "this HLS session belongs to another channel",
                    headers=CORS,
                )
        return session

    def _start(
        self,
        sid: str,
        address: str,
        key: str,
        selector: tuple[str, str],
        params: dict[str, str],
        token: str | None,
    ) -> HlsSession:
        try:
            player = self.access.admit(address, key, token)  # the same rules as a TS viewer
            self.edge.check(address, key)
        except ServiceError as exc:
            exc.headers = {**(exc.headers or {}), **CORS}
            raise
        query = {selector[0]: selector[1], **({"token": token} if token else {})}
        session = HlsSession(sid, key, urlencode(query), address)
        self.edge.attach_hls(session, selector, params, player)
        return session

    async def _first_segment(self, session: HlsSession) -> HlsFeed:
        """The session's feed once it lists a segment; the channel's own error if it failed.

        Waits as long as a TS viewer would for its first byte: the engine's start call plus
        its prebuffering."""
        loop = asyncio.get_running_loop()
        deadline = (
            loop.time() + self.settings.engine_call_timeout_s + self.settings.first_byte_timeout_s
        )
        session.waiting += 1
        try:
            while True:
                if session.error is not None:
                    error = session.error
                    raise ServiceError(
                        error.status,
                        error.code,
                        error.message,
                        retry_after_s=error.retry_after_s,
                        headers={**(error.headers or {}), **CORS},
                    )
                channel = session.channel
                if channel is None:
                    raise ServiceError(
                        503, "channel_closed", "the channel closed", retry_after_s=5, headers=CORS
                    )
                if channel.hls is not None and channel.hls.ready:
                    return channel.hls
                session.changed.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ServiceError(
                        504,
                        "first_segment_timeout",
                        "the channel has no HLS segment yet",
                        retry_after_s=5,
                        headers=CORS,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.changed.wait(), remaining)
        finally:
            session.waiting -= 1
            session.touch()
