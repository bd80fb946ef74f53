"""The engine's HTTP API, as ENGINE_API.md describes it, plus the simulator's ``/_sim`` API."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Awaitable, Callable
from typing import Any

from acefleet import logs
from enginesim import content as contents
from enginesim import faults as faultmod
from enginesim.hls import Segmenter
from enginesim.httpserver import Connection, Request
from enginesim.pacer import pace
from enginesim.session import Kind, Registry, Session
from enginesim.settings import SimSettings, Timing
from enginesim.simapi import SimApi

log = logs.get(__name__)

VERSION = {"code": 3017000, "platform": "linux", "version": "3.1.70"}
FAILED = {"response": None, "error": "failed to load content"}
UNKNOWN_SESSION = {"response": None, "error": "unknown playback session id"}
TS_TYPE = "video/mp2t"
M3U8_TYPE = "application/vnd.apple.mpegurl"

_R = re.compile(r"^/ace/r/([0-9a-f]{40})/([0-9a-f]{32})$")
_CONTENT = re.compile(r"^/content/([0-9a-f]{40})/([0-9a-f]{32})$")
_M = re.compile(r"^/ace/m/([0-9a-f]{40})/([0-9a-f]{32})\.m3u8$")
_C = re.compile(r"^/ace/c/([0-9a-f]{40})/(\d{1,12})\.ts$")
_STAT = re.compile(r"^/ace/stat/([0-9a-f]{40})/([0-9a-f]{32})$")
_CMD = re.compile(r"^/ace/cmd/([0-9a-f]{40})/([0-9a-f]{32})$")
_EVENT = re.compile(r"^/ace/event/([0-9a-f]{40})/([0-9a-f]{32})$")


class EngineApi:
    def __init__(self, settings: SimSettings, timing: Timing, registry: Registry) -> None:
        self.settings = settings
        self.timing = timing
        self.registry = registry
        self.faults = faultmod.FaultBook()
        self.sim = SimApi(registry, self.faults, settings.chaos)
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_networks]
        self._exact: dict[tuple[str, str], Callable[[Request, Connection], Awaitable[None]]] = {
            ("GET", "/webui/api/service"): self.service,
            ("GET", "/server/api"): self.server_api,
            ("GET", "/ace/getstream"): self.getstream,
            ("GET", "/ace/manifest.m3u8"): self.manifest,
            ("GET", "/_sim/sessions"): self.sim.sessions,
            ("GET", "/_sim/faults"): self.sim.fault,
            ("POST", "/_sim/faults"): self.sim.fault,
        }
        self._patterns: list[
            tuple[re.Pattern[str], Callable[[Request, Connection, re.Match[str]], Awaitable[None]]]
        ] = [
            (_R, self.playback_redirect),
            (_CONTENT, self.playback),
            (_M, self.hls_playlist),
            (_C, self.hls_segment),
            (_STAT, self.stat),
            (_CMD, self.command),
            (_EVENT, self.event),
        ]

    # --- dispatch ---------------------------------------------------------------------------
    async def handle(self, req: Request, conn: Connection) -> None:
        if not self._allowed(req.peer):
            log.warning("deny access", peer=req.peer, path=req.path)
            conn.send_json({"error": "access denied"}, status=403, keep_alive=False)
            return
        route = self._exact.get((req.method, req.path))
        if route is not None:
            await route(req, conn)
            return
        if req.method == "GET":
            for pattern, handler in self._patterns:
                match = pattern.match(req.path)
                if match:
                    await handler(req, conn, match)
                    return
        status = 405 if (req.path in {p for _, p in self._exact}) else 404
        conn.send_json({"error": f"no route for {req.method} {req.path}"}, status=status)

    def _allowed(self, peer: str) -> bool:
        if self.settings.bind_all:
            return True
        try:
            addr = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._trusted)

    # --- service API ------------------------------------------------------------------------
    async def service(self, req: Request, conn: Connection) -> None:
        if self.faults.probes_fail():
            conn.send_json({"result": None, "error": "injected fault"}, status=500)
        elif req.query.get("method") == "get_version":
            conn.send_json({"result": VERSION, "error": None})
        else:
            conn.send_json({"result": None, "error": "unknown method"})

    async def server_api(self, req: Request, conn: Connection) -> None:
        method = req.query.get("method")
        if self.faults.probes_fail():
            conn.send_json({"result": None, "error": "injected fault"}, status=500)
        elif "api_version" not in req.query:
            conn.send_json({"result": None, "error": "access denied"})
        elif method == "get_status":
            conn.send_json({"result": {"playlist_loaded": True, "version": VERSION}, "error": None})
        elif method == "get_network_connection_status":
            conn.send_json({"result": {"connected": True}, "error": None})
        else:
            conn.send_json({"result": None, "error": "unknown method"})

    # --- starting playback ------------------------------------------------------------------
    async def getstream(self, req: Request, conn: Connection) -> None:
        session = await self._start(req, conn, "ts")
        if session is None:
            return
        urls = self._urls(req, session)
        if req.query.get("format") == "json":
            conn.send_json(self._envelope(req, session, urls["playback_url"], urls))
        else:
            conn.redirect(urls["playback_url"])

    async def manifest(self, req: Request, conn: Connection) -> None:
        session = await self._start(req, conn, "hls")
        if session is None:
            return
        urls = self._urls(req, session)
        if req.query.get("format") == "json":
            conn.send_json(self._envelope(req, session, urls["manifest_url"], urls))
            return
        await self._serve_playlist(req, conn, session)

    async def _start(self, req: Request, conn: Connection, kind: Kind) -> Session | None:
        """Load the content (with the engine's delays) and start or reuse its session."""
        content = contents.select(req.query)
        if content is None:
            conn.send_json(
                {"response": None, "error": "missing content_id, infohash, url or magnet"},
                status=500,
            )
            return None
        if not content.known:
            delay = (
                self.timing.unknown_infohash_delay
                if content.by_infohash
                else self.timing.unknown_id_delay
            )
            if not await conn.wait_closed(delay):
                conn.send_json(FAILED)
            return None
        if await conn.wait_closed(self.timing.json_delay):
            return None
        pid = req.query.get("pid") or req.query.get("sid") or ""
        try:
            return self.registry.start(content, pid, kind)
        except ValueError as exc:  # a clip feed that cannot play this channel
            log.error("cannot start session", infohash=content.infohash, error=str(exc))
            conn.send_json(FAILED)
            return None

    def _urls(self, req: Request, session: Session) -> dict[str, str]:
        base = f"http://{req.host}"
        ih, sess = session.infohash, session.url_session
        return {
            "playback_url": f"{base}/ace/r/{ih}/{sess}",
            "manifest_url": f"{base}/ace/m/{ih}/{sess}.m3u8",
            "stat_url": f"{base}/ace/stat/{ih}/{sess}",
            "command_url": f"{base}/ace/cmd/{ih}/{sess}",
            "event_url": f"{base}/ace/event/{ih}/{sess}",
        }

    def _envelope(
        self, req: Request, session: Session, playback_url: str, urls: dict[str, str]
    ) -> dict[str, Any]:
        response: dict[str, Any] = {
            "playback_url": playback_url,
            "stat_url": urls["stat_url"],
            "command_url": urls["command_url"],
            "infohash": session.infohash,
            "playback_session_id": session.playback_session_id,
            "is_live": 1,
            "is_encrypted": 0,
            "client_session_id": -1,
        }
        if req.query.get("use_api_events") == "1":
            response["event_url"] = urls["event_url"]
        return {"response": response, "error": None}

    # --- session URLs -----------------------------------------------------------------------
    def _session(self, conn: Connection, match: re.Match[str]) -> Session | None:
        """The live session a URL names; answers 403 (ended) or 404 (never existed) if none."""
        found = self.registry.find(match.group(2))
        if isinstance(found, Session) and found.infohash == match.group(1):
            return found
        if found is False:
            conn.send_json({"error": "playback session ended"}, status=403)
        else:
            conn.send_json({"error": "no such playback session"}, status=404)
        return None

    async def playback_redirect(self, req: Request, conn: Connection, m: re.Match[str]) -> None:
        session = self._session(conn, m)
        if session is None:
            return
        # the headers of the playback URL are held until prebuffering ends
        if await self._prebuffered(session, conn):
            conn.redirect(f"http://{req.host}/content/{session.infohash}/{session.token}")

    async def _prebuffered(self, session: Session, conn: Connection) -> bool:
        """Wait out prebuffering; False (answered 403 if the caller is still there) if ended."""
        if await session.wait_ready(conn):
            return True
        if not conn.closed.is_set():
            conn.send_json({"error": "playback session ended"}, status=403)
        return False

    async def playback(self, req: Request, conn: Connection, m: re.Match[str]) -> None:
        session = self._session(conn, m)
        if session is None or not await self._prebuffered(session, conn):
            return
        conn.start_stream(TS_TYPE)
        session.readers.append(conn)
        if len(session.readers) > 1:
            log.warning("second reader on a progressive session", infohash=session.infohash)
        if session.pacer is None or session.pacer.done():
            session.pacer = asyncio.get_running_loop().create_task(
                pace(session, self.settings.pace_interval, self.faults.speed)
            )
        try:
            await session.hold(conn)
        finally:
            if conn in session.readers:
                session.readers.remove(conn)
            session.touch()
            conn.close()

    async def _serve_playlist(self, req: Request, conn: Connection, session: Session) -> None:
        if not await self._prebuffered(session, conn):
            return
        if session.segmenter is None:
            session.segmenter = Segmenter(session.feed, self.timing.hls_segment_seconds)
        text = session.segmenter.playlist(f"http://{req.host}", session.infohash)
        conn.send(200, text.encode(), content_type=M3U8_TYPE)

    async def hls_playlist(self, req: Request, conn: Connection, m: re.Match[str]) -> None:
        session = self._session(conn, m)
        if session is not None:
            await self._serve_playlist(req, conn, session)

    async def hls_segment(self, req: Request, conn: Connection, m: re.Match[str]) -> None:
        session = self.registry.by_infohash.get(m.group(1))
        if session is None or session.kind != "hls" or session.segmenter is None:
            conn.send_json({"error": "no HLS session for this content"}, status=404)
            return
        session.touch()
        if self.faults.speed(session.infohash) == 0.0:
            # stalled: hold the request open without an answer, like a stuck engine
            await conn.wait_closed(3600)
            return
        seg = session.segmenter.segment(int(m.group(2)))
        if seg is None:
            conn.send_json({"error": "segment not in the live window"}, status=404)
            return
        session.bytes_sent += len(seg.data)
        conn.send(200, seg.data, content_type=TS_TYPE)

    # --- stats and control ------------------------------------------------------------------
    async def stat(self, req: Request, conn: Connection, m: re.Match[str]) -> None:
        found = self.registry.find(m.group(2))
        if not isinstance(found, Session):
            conn.send_json(UNKNOWN_SESSION)
            return
        state = found.state
        if state == "starting":
            conn.send_json({"response": {}, "error": None})
            return
        stats = found.stats(state, peerless=self.faults.peerless(found.infohash))
        conn.send_json({"response": stats, "error": None})

    async def command(self, req: Request, conn: Connection, m: re.Match[str]) -> None:
        method = req.query.get("method")
        if method != "stop":
            conn.send_json({"response": None, "error": f"unknown method {method!r}"})
            return
        self.registry.stop_calls_total += 1
        found = self.registry.find(m.group(2))
        if isinstance(found, Session) and found.infohash == m.group(1):
            self.registry.stop(m.group(2))
            conn.send_json({"response": "ok", "error": None})
        else:
            conn.send_json(UNKNOWN_SESSION)

    async def event(self, req: Request, conn: Connection, m: re.Match[str]) -> None:
        # Event semantics are not documented; answer like a poll with nothing new.
        found = self.registry.find(m.group(2))
        if isinstance(found, Session):
            conn.send_json({"response": [], "error": None})
        else:
            conn.send_json(UNKNOWN_SESSION)
