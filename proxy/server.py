"""The client side: an HTTP/1.1 server as a raw asyncio Protocol with httptools (not ASGI).

Holds :class:`ClientProtocol` (one connection: parsing, limits, timeouts), :class:`App` (routing
and the small endpoints) and the ``/ace/getstream`` query rules (:func:`parse_stream_query`,
:class:`BadRequest`). Small endpoints keep the connection alive; a stream request turns the
connection into a viewer with a close-delimited body. Hostile input costs bounded work: request
line plus headers are capped, a request must arrive within a deadline, bodies are refused, and a
viewer's send backlog is capped by the transport's high-water mark (see backpressure.py for what
happens then). Every error, whoever raised it, is written by responses.py in the one shape.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import typing
from collections import deque
from collections.abc import Coroutine
from typing import Any, Literal
from urllib.parse import parse_qsl

import httptools

from acefleet import logs, wire
from acefleet.errors import ServiceError
from proxy.access import Access
from proxy.catalog_cache import PlayerFiles
from proxy.edge import Edge
from proxy.hls.routes import CORS, HlsRoutes
from proxy.metrics import Metrics
from proxy.placement.relay import RELAY_CHAIN_HEADER, RELAY_CLAIM_HEADER, parse_chain
from proxy.responses import error_response, response, service_error_response
from proxy.settings import ProxySettings
from proxy.viewer import Viewer

log = logs.get(__name__)

_SELECTORS: dict[str, Literal["id", "infohash"]] = {
    "id": "id",
    "content_id": "id",
    "infohash": "infohash",
}
_REFUSED_PARAMS = {
    "pid": "pid is chosen by the proxy, one per upstream session",
    "sid": "sid (old alias of pid) is chosen by the proxy",
    "format": "format is chosen by the proxy",
    "url": "only id, content_id or infohash select content here",
    "magnet": "only id, content_id or infohash select content here",
}
_VALUE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_MAX_PARAMS = 32
_MAX_BODY = 0
RELAY_CLAIM = RELAY_CLAIM_HEADER.lower().encode()
RELAY_CHAIN = RELAY_CHAIN_HEADER.lower().encode()
_ENDPOINTS = frozenset(
    {"/ace/getstream", "/ace/manifest.m3u8", "/ace/status", "/livez", "/readyz", "/metrics"}
)
_HLS_PREFIX = "/ace/hls/"
# Requests a client may send behind one still being answered (HTTP/1.1 pipelining); more is abuse.
_MAX_QUEUED = 4


class BadRequest(ServiceError):
    """A stream request the proxy will not serve as asked (always 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


def parse_stream_query(query: str) -> tuple[str, tuple[str, str], dict[str, str]]:
    """``/ace/getstream`` query → (content key, engine selector, pass-through params)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=_MAX_PARAMS)
    except ValueError:
        raise BadRequest("too_many_params", f"at most {_MAX_PARAMS} query parameters") from None
    selectors: list[tuple[str, str]] = []
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in _REFUSED_PARAMS:
            raise BadRequest(f"{name}_refused", _REFUSED_PARAMS[name])
        if name in _SELECTORS:
            selectors.append((name, value))
        elif name in params:
            raise BadRequest("duplicate_param", f"parameter {name!r} given twice")
        elif len(name) > 64 or len(value) > 256:
            raise BadRequest("param_too_long", f"parameter {name[:64]!r} is too long")
        else:
            params[name] = value
    if len(selectors) != 1:
        raise BadRequest(
            "selector",
            "give exactly one of id, content_id or infohash"
            + (f" (got {len(selectors)})" if selectors else ""),
        )
    name, value = selectors[0]
    if not _VALUE.match(value):
        raise BadRequest("bad_selector", f"{name} must be 1-128 letters, digits, '.', '_', '-'")
    kind = _SELECTORS[name]
    key = wire.content_key(kind, value)
    return key, (kind, value), params


class ClientProtocol(asyncio.Protocol):
    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.address = self.peer = "?"
        self.parser = httptools.HttpRequestParser(self)
        self.url = bytearray()
        self.header_bytes = 0
        self.in_headers = False
        self.awaiting_headers = True
        self.timer: asyncio.TimerHandle | None = None
        self.viewer: Viewer | None = None
        self.relay_claim: str | None = None  # set when another edge's proxy relays from us
        self.relay_chain = ""  # the edges that relay request comes through (the loop guard)
        self.closing = False
        # a response being prepared (an HLS playlist waiting for a first segment): reading
        # pauses, and requests already parsed behind it wait their turn in ``queued``
        self.deferred: asyncio.Task[None] | None = None
        self.queued: deque[tuple[str, str, str, bool]] = deque()

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = typing.cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = self.address = str(peer[0]) if isinstance(peer, tuple) else "local"
        self.app.connections.add(self)
        self.app.metrics.connections.inc()
        self.transport.set_write_buffer_limits(high=self.settings.viewer_high_water)
        sock = transport.get_extra_info("socket")
        if self.settings.viewer_sndbuf and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.viewer_sndbuf)
        if len(self.app.connections) > self.settings.max_connections:
            self.app.metrics.rejections.labels("max_connections").inc()
            self._refuse(503, "max_connections", "too many connections", retry_after_s=5)
            return
        self._arm(self.settings.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.viewer is not None or self.closing:
            return  # a viewer has nothing more to say; whatever it sends is ignored
        if self.awaiting_headers:
            self.header_bytes += len(data)
            if self.header_bytes > self.settings.max_header_bytes:
                self.app.metrics.rejections.labels("header_size").inc()
                self._refuse(431, "headers_too_large", "request line and headers are too large")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "upgrade_refused", "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self.app.metrics.rejections.labels("malformed").inc()
            self._refuse(400, "malformed_request", f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        if self.viewer is not None:
            self.viewer.pause()

    def resume_writing(self) -> None:
        if self.viewer is not None:
            self.viewer.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._disarm()
        if self.deferred is not None:
            self.deferred.cancel()
            self.deferred = None
        self.app.connections.discard(self)
        self.app.metrics.connections.dec()
        viewer = self.viewer
        if viewer is not None:
            viewer.closed = True
            if viewer.channel is not None:
                viewer.channel.detach(viewer)

    # --- httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url.clear()
        self.relay_claim = None
        self.relay_chain = ""
        self.address = self.peer
        self.in_headers = True
        self._arm(self.settings.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == RELAY_CLAIM and 0 < len(value) <= 100:
            self.relay_claim = value.decode("latin-1")  # another edge relays from us
        elif name.lower() == RELAY_CHAIN and len(value) <= 4096:
            self.relay_chain = value.decode("latin-1")
        if name.lower() == b"x-forwarded-for" and self.peer in self.settings.trusted_proxies:
            # the closest hop is the one our trusted balancer added
            last = value.decode("latin-1").rsplit(",", 1)[-1].strip()
            if 0 < len(last) <= 64:
                self.address = last

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self.awaiting_headers = False
        self._disarm()

    def on_body(self, body: bytes) -> None:
        if len(body) > _MAX_BODY and not self.closing:
            self._refuse(413, "body_refused", "requests to this proxy carry no body")

    def on_message_complete(self) -> None:
        if self.closing or self.viewer is not None:
            return
        method = self.parser.get_method().decode("latin-1")
        keep_alive = bool(self.parser.should_keep_alive())
        try:
            parsed = httptools.parse_url(bytes(self.url))
        except httptools.HttpParserInvalidURLError:
            self._refuse(400, "bad_url", "request target is not a valid URL")
            return
        path = (parsed.path or b"").decode("latin-1")
        query = (parsed.query or b"").decode("latin-1")
        self.header_bytes = 0
        self.awaiting_headers = True
        if self.deferred is not None:
            if len(self.queued) >= _MAX_QUEUED:
                self._refuse(400, "pipeline_too_deep", "too many requests sent ahead")
            else:
                self.queued.append((method, path, query, keep_alive))
            return
        self.app.handle(self, method, path, query, keep_alive)
        if self.viewer is None and self.deferred is None and not self.closing:
            self._arm(self.settings.idle_timeout_s)

    # --- responses that wait --------------------------------------------------------------
    def defer(self, answer: Coroutine[Any, Any, bytes], keep_alive: bool) -> None:
        """Answer with what ``answer`` returns, whenever it does; the connection reads nothing
        more meanwhile (its idle timer is off: the wait has its own deadline)."""
        assert self.transport is not None
        self._disarm()
        self.transport.pause_reading()
        self.deferred = self.loop.create_task(self._finish(answer, keep_alive))

    async def _finish(self, answer: Coroutine[Any, Any, bytes], keep_alive: bool) -> None:
        data = await answer
        self.deferred = None
        if self.closing or self.transport is None:
            return
        self.send(data, keep_alive=keep_alive)
        if not keep_alive:
            return  # send() closed the connection
        self.transport.resume_reading()
        while self.queued and self.deferred is None and not self.closing:
            self.app.handle(self, *self.queued.popleft())
        if self.deferred is None and not self.closing and self.viewer is None:
            self._arm(self.settings.idle_timeout_s)

    # --- helpers ---------------------------------------------------------------------------
    def send(self, data: bytes, *, keep_alive: bool) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if not keep_alive:
            self.closing = True
            self._disarm()
            self.transport.close()

    def _refuse(
        self, status: int, code: str, message: str, retry_after_s: float | None = None
    ) -> None:
        if self.closing:
            return
        self.send(
            error_response(status, code, message, retry_after_s=retry_after_s), keep_alive=False
        )

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.in_headers:
            self.app.metrics.rejections.labels("header_timeout").inc()
            self._refuse(408, "request_timeout", "request not received in time")
        elif self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()


class App:
    """Routes requests; owns the edge and the connection set."""

    def __init__(
        self,
        settings: ProxySettings,
        metrics: Metrics,
        edge: Edge,
        access: Access,
        files: PlayerFiles,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.edge = edge
        self.access = access
        self.files = files
        self.hls = HlsRoutes(settings, metrics, edge, access)
        self.connections: set[ClientProtocol] = set()

    def handle(
        self, conn: ClientProtocol, method: str, path: str, query: str, keep_alive: bool
    ) -> None:
        endpoint = path if path in _ENDPOINTS else "other"
        if method not in ("GET", "HEAD"):
            status, data = (
                405,
                error_response(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed here",
                    keep_alive=keep_alive,
                    extra={"Allow": "GET, HEAD"},
                ),
            )
        elif path == "/ace/getstream":
            self._stream(conn, method == "HEAD", query, keep_alive)
            return
        elif path == "/ace/manifest.m3u8" or path.startswith(_HLS_PREFIX):
            self._hls(conn, method == "HEAD", path, query, keep_alive)
            return
        elif PlayerFiles.wants(path):
            endpoint = "player_file"
            status, data = self._player_file(conn.address, path, query, keep_alive, method)
        else:
            status, data = self._small(path, keep_alive, method == "HEAD")
        self.metrics.requests.labels(endpoint, str(status)).inc()
        conn.send(data, keep_alive=keep_alive)

    def _small(self, path: str, keep_alive: bool, head: bool) -> tuple[int, bytes]:
        if path == "/livez":
            return 200, response(
                200, b'{"status":"ok"}', "application/json", keep_alive=keep_alive, head=head
            )
        if path == "/readyz":
            if self.edge.draining:
                return 503, error_response(
                    503, "draining", "shutting down", retry_after_s=5, keep_alive=keep_alive
                )
            return 200, response(
                200, b'{"status":"ready"}', "application/json", keep_alive=keep_alive, head=head
            )
        if path == "/ace/status":
            body = json.dumps(self.edge.status()).encode()
            return 200, response(200, body, "application/json", keep_alive=keep_alive, head=head)
        if path == "/metrics":
            return 200, response(
                200,
                self.metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
                keep_alive=keep_alive,
                head=head,
            )
        return 404, error_response(
            404, "not_found", f"no such endpoint: {path[:100]}", keep_alive=keep_alive
        )

    def _player_file(
        self, address: str, path: str, query: str, keep_alive: bool, method: str
    ) -> tuple[int, bytes]:
        """Playlist, guide, HDHomeRun files from the catalog copy (catalog_cache.py)."""
        try:
            status, feed = self.files.answer(address, path, query)
        except ServiceError as exc:
            return exc.status, service_error_response(exc, keep_alive=keep_alive)
        headers = {"Cache-Control": "max-age=60"}  # as central serves them
        data = response(
            status,
            feed.body,
            feed.media_type,
            headers,
            keep_alive=keep_alive,
            head=method == "HEAD",
        )
        return status, data

    def _hls(
        self, conn: ClientProtocol, head: bool, path: str, query: str, keep_alive: bool
    ) -> None:
        endpoint = "/ace/manifest.m3u8"
        try:
            if path != endpoint:
                sid, _, name = path[len(_HLS_PREFIX) :].partition("/")
                endpoint = "hls_playlist" if name == "index.m3u8" else "hls_segment"
                if endpoint == "hls_segment" and not name.endswith(".ts"):
                    raise ServiceError(404, "not_found", f"no such endpoint: {path[:100]}")
            key, selector, params = parse_stream_query(query)
            token = params.pop("token", None)  # the proxy's (access.py), never the engine's
            if head and endpoint != "hls_segment":
                # like HEAD on a stream: tells whether the channel is live, never starts it
                live = "1" if self.edge.find(key) is not None else "0"
                data = response(
                    200,
                    b"",
                    "application/vnd.apple.mpegurl",
                    {**CORS, "X-Acefleet-Live": live},
                    keep_alive=keep_alive,
                    head=True,
                )
            elif endpoint == "hls_segment":
                start, body = self.hls.segment(sid, name[:-3], key, keep_alive, head)
                self.metrics.requests.labels(endpoint, "200").inc()
                conn.send(start, keep_alive=True)
                conn.send(body, keep_alive=keep_alive)
                return
            elif endpoint == "hls_playlist":
                conn.defer(
                    self._answer(
                        endpoint,
                        keep_alive,
                        self.hls.media_playlist(
                            conn.address, sid, key, selector, params, token, keep_alive
                        ),
                    ),
                    keep_alive,
                )
                return
            else:
                conn.defer(
                    self._answer(
                        endpoint,
                        keep_alive,
                        self.hls.manifest(conn.address, key, selector, params, token, keep_alive),
                    ),
                    keep_alive,
                )
                return
        except ServiceError as exc:
            data = self._hls_error(endpoint, exc, keep_alive)
        else:
            self.metrics.requests.labels(endpoint, "200").inc()
        conn.send(data, keep_alive=keep_alive)

    async def _answer(
        self, endpoint: str, keep_alive: bool, answer: Coroutine[Any, Any, bytes]
    ) -> bytes:
        try:
            data = await answer
        except ServiceError as exc:
            return self._hls_error(endpoint, exc, keep_alive)
        except Exception as exc:  # a bug must still answer, and leave the proxy serving others
            log.exception("hls_request_failed", endpoint=endpoint, error=repr(exc))
            return self._hls_error(
                endpoint, ServiceError(500, "internal_error", "internal error"), keep_alive
            )
        self.metrics.requests.labels(endpoint, "200").inc()
        return data

    def _hls_error(self, endpoint: str, exc: ServiceError, keep_alive: bool) -> bytes:
        self.metrics.requests.labels(endpoint, str(exc.status)).inc()
        if exc.status == 400:
            self.metrics.rejections.labels("bad_request").inc()
        exc.headers = {**exc.headers, **CORS}
        return service_error_response(exc, keep_alive=keep_alive)

    def _stream(self, conn: ClientProtocol, head: bool, query: str, keep_alive: bool) -> None:
        assert conn.transport is not None
        try:
            key, selector, params = parse_stream_query(query)
        except BadRequest as exc:
            self.metrics.requests.labels("/ace/getstream", "400").inc()
            self.metrics.rejections.labels("bad_request").inc()
            conn.send(service_error_response(exc, keep_alive=keep_alive), keep_alive=keep_alive)
            return
        token = params.pop("token", None)  # the proxy's (access.py), never the engine's
        if head:
            # Never opens playback: checking channels by playing them overloads engines.
            self.metrics.requests.labels("/ace/getstream", "200").inc()
            live = "1" if self.edge.find(key) is not None else "0"
            conn.send(
                response(
                    200,
                    b"",
                    "video/mp2t",
                    {"X-Acefleet-Live": live},
                    keep_alive=keep_alive,
                    head=True,
                ),
                keep_alive=keep_alive,
            )
            return
        viewer = Viewer(conn.transport, conn.address)
        try:
            chain = parse_chain(conn.relay_chain) if conn.relay_chain else ()
            self.edge.check_loop(key, chain)
            player = self.access.admit(conn.address, key, token)
            self.edge.check(conn.address, key, relay=self.access.relay_pull(key, token))
        except ServiceError as exc:  # the token rule or a limit refused the stream
            self.metrics.requests.labels("/ace/getstream", str(exc.status)).inc()
            conn.send(service_error_response(exc), keep_alive=False)
            return
        self.metrics.requests.labels("/ace/getstream", "200").inc()
        conn.viewer = viewer
        conn._disarm()
        if conn.relay_claim:
            log.info("relay_viewer", key=key, relay_claim=conn.relay_claim, peer=conn.peer)
        self.edge.attach(viewer, key, selector, params, player, chain=chain)
