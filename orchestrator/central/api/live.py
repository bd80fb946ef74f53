"""Live updates for dashboards (a WebSocket feed and Server-Sent Events), the dashboard page and
the browser code vendored for it (hls.js, served from central itself, never from a CDN).

The WebSocket protocol (``GET /v1/live/ws``) is documented in docs/central.md; the feed itself
(frames, deltas, per-connection send queues) lives in :mod:`orchestrator.central.live_feed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from acefleet import logs
from orchestrator.central import live_frame, slices, views
from orchestrator.central.api.deps import central, key_in_query, no_key_in_url, request_key
from orchestrator.central.auth import READERS, KeyRing
from orchestrator.central.http import ERROR_RESPONSES, ApiError, any_reader, bearer_token
from orchestrator.central.live_feed import LiveFeed, Subscriber
from orchestrator.central.state import Central

router = APIRouter(responses=ERROR_RESPONSES)
State = Annotated[Central, Depends(central)]
KEEPALIVE_S = 15.0
# A client resuming sends {"type": "resume"} right after auth; this long is "right after".
RESUME_WAIT_S = 0.3
# How long closing a dropped (not reading) client may wait for its socket before giving up.
CLOSE_TIMEOUT_S = 10.0
# The dashboard page's JSON config (page_config) replaces this placeholder in static/dashboard.html.
PAGE_CONFIG = "{/*acefleet-config*/}"
log = logs.get(__name__)


def fleet_frame_json(c: Central) -> str:
    """The frame for the current state version, built once however many dashboards watch."""
    if c.frame_cache is None or c.frame_cache[0] != c.version:
        c.frame_cache = (c.version, json.dumps(fleet_frame(c)))
    return c.frame_cache[1]


def fleet_frame(c: Central) -> dict[str, Any]:
    """What a dashboard shows, built at once (``fleet_frame_sliced``)."""
    return slices.whole(fleet_frame_sliced(c))


def fleet_frame_sliced(c: Central) -> slices.Sliced[dict[str, Any]]:
    """What a dashboard shows, compact: engines without their full report (hosts and engines
    per host, rebuilt only where something moved: live_frame), built in slices so that the
    feed's publisher lets claims through between them (orchestrator.central.slices)."""
    hosts, engines = yield from live_frame.hosts_and_engines(c)
    yield
    summary = views.summary(c, functools.partial(live_frame.part_capacity, c))
    yield
    streams = yield from live_frame.stream_items(c)
    return {
        "summary": summary.model_dump(mode="json"),
        "hosts": hosts,
        "engines": engines,
        # One frame for every reader, viewers included: no claim ids (live_frame.stream_item).
        "streams": streams,
    }


@router.get(
    "/v1/live",
    tags=["operators"],
    dependencies=[Depends(no_key_in_url), Depends(any_reader)],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE: event fleet"}},
)
async def live(c: State) -> StreamingResponse:
    """Server-Sent Events: a ``fleet`` event with the whole view whenever it changed (at most
    every live_update_interval_s). The key goes in a header, never in the URL; browsers use the
    WebSocket feed ``/v1/live/ws`` instead."""

    async def frames() -> AsyncIterator[str]:
        sent = -1
        quiet = 0.0
        interval = c.settings.live_update_interval_s
        while True:
            if c.version != sent:
                sent = c.version
                quiet = 0.0
                yield f"event: fleet\ndata: {fleet_frame_json(c)}\n\n"
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keepalive\n\n"
            await asyncio.sleep(interval)
            quiet += interval

    return StreamingResponse(
        frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def live_feed(app: FastAPI) -> LiveFeed:
    """The app's one feed, made on first use (app.state is per app, so per test central too)."""
    feed: LiveFeed | None = getattr(app.state, "live_feed", None)
    if feed is None:
        c: Central = app.state.central
        s = c.settings
        feed = LiveFeed(
            lambda: fleet_frame_sliced(c),
            lambda: c.version,
            s.live_update_interval_s,
            s.live_ws_send_queue_max,
            s.live_ws_max_per_key,
            s.live_ws_ping_interval_s,
        )
        app.state.live_feed = feed
    return feed


class Refused(Exception):
    """Close the WebSocket with this application close code (4xxx) and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _message(ws: WebSocket) -> dict[str, Any] | None:
    """The next client message as a JSON object (None for anything else); raises
    WebSocketDisconnect when the client went away."""
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    try:
        body = json.loads(msg.get("text") or "")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _authenticate(ws: WebSocket, keyring: KeyRing, feed: LiveFeed, wait_s: float) -> str:
    """The key of an admitted connection (a header, else the first message), counted against
    its per-key limit; raises Refused otherwise (also for a key in the URL, once the client
    had its chance to speak: it learns why)."""
    param = key_in_query(ws)
    if param is not None:
        if not request_key(ws):  # a client that sends an auth message: let it send it first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_message(ws), wait_s)
        reason = f"no API key in the URL ({param!r}): send an auth message or the X-API-Key header"
        raise Refused(4401, reason[:120])  # a close reason is at most 123 bytes
    key = ws.headers.get("x-api-key") or bearer_token(ws.headers.get("authorization", ""))
    if not key:
        try:
            first = await asyncio.wait_for(_message(ws), wait_s)
        except TimeoutError:
            raise Refused(4408, "no auth message in time") from None
        key = first.get("api_key") if first is not None and first.get("type") == "auth" else None
        if not isinstance(key, str) or not key:
            raise Refused(4401, 'the first message must be {"type": "auth", "api_key": "..."}')
    verdict = keyring.check(key)
    if verdict.role is None:
        raise Refused(4401, "unknown API key")
    if verdict.role not in READERS:
        raise Refused(4403, f"role {verdict.role} may not read the live feed")
    if not verdict.allowed:
        raise Refused(4429, "too many requests for this API key")
    if not feed.reserve(key):
        raise Refused(4429, f"too many live connections for this key (at most {feed.max_per_key})")
    return key


async def _resume_version(ws: WebSocket) -> int | None:
    """The version of a ``resume`` sent right after auth, if the client sent one."""
    try:
        msg = await asyncio.wait_for(_message(ws), RESUME_WAIT_S)
    except TimeoutError:
        return None
    version = msg.get("version") if msg is not None and msg.get("type") == "resume" else None
    return version if isinstance(version, int) else None


async def _pump(ws: WebSocket, feed: LiveFeed, sub: Subscriber) -> bool:
    """Send the subscriber's queue until the client leaves (False) or falls behind (True)."""

    async def send() -> None:
        while True:
            text = await sub.queue.get()
            await feed.turns.take()
            await ws.send_text(text)

    async def receive() -> None:
        while True:  # client messages after the start mean nothing; a disconnect ends this
            await _message(ws)

    tasks = [
        asyncio.create_task(send()),
        asyncio.create_task(receive()),
        asyncio.create_task(sub.dropped.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return sub.dropped.is_set()


@router.websocket("/v1/live/ws")
async def live_ws(ws: WebSocket) -> None:
    """The live feed as a WebSocket: a snapshot, then deltas, app-level pings when quiet."""
    c: Central = ws.app.state.central
    feed = live_feed(ws.app)
    # Accept first: application close codes (4401, 4408, ...) only exist on an open socket.
    await ws.accept()
    try:
        key = await _authenticate(ws, ws.app.state.keyring, feed, c.settings.live_ws_auth_timeout_s)
    except Refused as refused:
        with contextlib.suppress(Exception):
            await ws.close(refused.code, refused.reason)
        return
    except WebSocketDisconnect:
        return
    sub: Subscriber | None = None
    try:
        patches = ws.query_params.get("patches") == "1"
        sub = feed.join(key, await _resume_version(ws), patches)
        too_slow = await _pump(ws, feed, sub)
    except WebSocketDisconnect:
        return
    finally:
        # Free the slot before closing: a dropped client's close may wait on its full socket.
        if sub is not None:
            feed.leave(sub)
        feed.release(key)
    if too_slow:
        log.warning("live_client_dropped", reason="too slow", queue_max=feed.queue_max)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(4000, "client too slow"), CLOSE_TIMEOUT_S)


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@functools.cache
def _dashboard_page() -> str:
    """The page ships with the package and never changes while central runs: read it once."""
    page = resources.files("orchestrator.central").joinpath("static/dashboard.html")
    text = page.read_text(encoding="utf-8")
    if PAGE_CONFIG not in text:
        raise RuntimeError(f"static/dashboard.html lacks its config placeholder {PAGE_CONFIG}")
    return text


def page_config(c: Central) -> dict[str, Any]:
    """What the page needs from central's settings before it connects: public facts only, the
    page itself needs no key. ``hls_js`` is None when this install skipped vendoring."""
    hls = vendored(HLS_JS)
    return {
        "player_url": c.settings.player_url,
        "hls_js": None if hls is None else f"{VENDOR_PATH}/{HLS_JS}?v={hls.digest}",
    }


@router.get("/dashboard", include_in_schema=False, dependencies=[Depends(no_key_in_url)])
async def dashboard(c: State) -> HTMLResponse:
    # "<" escaped: nothing in the JSON can close the <script> element it sits in.
    config = json.dumps(page_config(c)).replace("<", "\\u003c")
    return HTMLResponse(_dashboard_page().replace(PAGE_CONFIG, config, 1))


# --- vendored browser code (scripts/vendor-web.sh) ------------------------------------------------
# Built from web/package-lock.json at build time and shipped in the wheel; gitignored, so a
# checkout that skipped scripts/vendor-web.sh lacks it and says so (503) instead of a bare 404.
VENDOR_DIR = Path(__file__).resolve().parents[1] / "static" / "vendor"
VENDOR_PATH = "/static/vendor"
HLS_JS = "hls.light.min.js"
VENDOR_TYPES = {HLS_JS: "text/javascript; charset=utf-8", "hls.js.LICENSE": "text/plain"}
# The page asks for ?v=<digest>: that URL's content never changes, so browsers may keep it.
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Vendored:
    body: bytes
    digest: str


_vendored: dict[str, tuple[tuple[int, int], Vendored]] = {}


def vendored(name: str) -> Vendored | None:
    """A vendored file and its digest; read again only when it changed on disk."""
    path = VENDOR_DIR / name
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    known = _vendored.get(name)
    if known is None or known[0] != stamp:
        body = path.read_bytes()
        known = (stamp, Vendored(body, hashlib.sha256(body).hexdigest()[:16]))
        _vendored[name] = known
    return known[1]


@router.get(VENDOR_PATH + "/{name}", include_in_schema=False)
async def vendor_file(name: str, request: Request) -> Response:
    """A vendored file, unauthenticated like the page that loads it."""
    media_type = VENDOR_TYPES.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"no vendored file {name!r}")
    found = vendored(name)
    if found is None:
        raise ApiError(
            503,
            "not_vendored",
            f"{name} was not vendored into this install: run scripts/vendor-web.sh before "
            "building or installing acefleet (scripts/bootstrap.sh does)",
        )
    etag = f'"{found.digest}"'
    cache = IMMUTABLE if request.query_params.get("v") == found.digest else "no-cache"
    headers = {"ETag": etag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=media_type, headers=headers)
