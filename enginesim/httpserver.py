"""A small HTTP/1.1 server on raw asyncio Protocols and httptools, like an engine's own.

Raw protocols give the simulator what a framework hides: holding response headers for as
long as prebuffering lasts, cutting a connection mid-body, and pacing a body with the
transport's own back-pressure (``pause_writing``/``resume_writing``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httptools

from acefleet import logs

log = logs.get(__name__)

MAX_BODY = 64 * 1024
MAX_QUEUED = 16
WRITE_HIGH_WATER = 256 * 1024


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    peer: str
    body: bytes = b""
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path
        # First value wins, as in the engine; blank values count as absent.
        self.query = {
            k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=False).items() if v
        }

    @property
    def host(self) -> str:
        """The host:port the caller used, for URLs that point back at us."""
        return self.headers.get("host", "127.0.0.1")


Handler = Callable[[Request, "Connection"], Awaitable[None]]


class Connection(asyncio.Protocol):
    """One client connection: parses requests and runs the handler for each, in order."""

    def __init__(self, handler: Handler, registry: set[Connection]) -> None:
        self._handler = handler
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.closed = asyncio.Event()
        self.peer = ""
        self.streaming = False
        # per-request parse state
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = bytearray()

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self._registry.add(self)
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(HTTPStatus.BAD_REQUEST, "upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(HTTPStatus.BAD_REQUEST, f"malformed request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self._can_write.set()
        self._registry.discard(self)
        self._queue.put_nowait(None)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > MAX_BODY:
            self._reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
            return
        self._body += body

    def on_message_complete(self) -> None:
        if self._queue.qsize() >= MAX_QUEUED:
            self._reject(HTTPStatus.TOO_MANY_REQUESTS, "too many pipelined requests")
            return
        method = self._parser.get_method().decode("latin-1")
        try:
            target = self._url.decode("utf-8")
        except UnicodeDecodeError:
            self._reject(HTTPStatus.BAD_REQUEST, "request target is not UTF-8")
            return
        self._queue.put_nowait(Request(method, target, self._headers, self.peer, bytes(self._body)))

    # --- serving ----------------------------------------------------------------------------
    async def _serve(self) -> None:
        while True:
            req = await self._queue.get()
            if req is None or self.closed.is_set():
                return
            try:
                await self._handler(req, self)
            except asyncio.CancelledError:
                self.close()
                raise
            except Exception:
                log.exception("handler failed", path=req.path)
                if not self.streaming:
                    self.send_json({"error": "internal error"}, status=500, keep_alive=False)
                self.close()
            if self.streaming:
                # a streamed body is close-delimited: the connection ends with it
                self.close()
                return

    def _reject(self, status: HTTPStatus, message: str) -> None:
        if not self.streaming and self._transport and not self._transport.is_closing():
            self.send_json({"error": message}, status=status.value, keep_alive=False)
        self.close()

    # --- response API for handlers ----------------------------------------------------------
    def send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        keep_alive: bool = True,
    ) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        keep_alive = keep_alive and self._parser.should_keep_alive()
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: " + ("keep-alive" if keep_alive else "close"))
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        self._transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if not keep_alive:
            self.close()

    def send_json(self, payload: Any, *, status: int = 200, keep_alive: bool = True) -> None:
        self.send(status, json.dumps(payload).encode(), keep_alive=keep_alive)

    def redirect(self, location: str) -> None:
        self.send(302, b"", content_type="text/plain", headers={"Location": location})

    def start_stream(self, content_type: str) -> None:
        """Send headers of a close-delimited body; then :meth:`write` and :meth:`drain`."""
        if self._transport is None or self._transport.is_closing():
            return
        self.streaming = True
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
            "Connection: close\r\nAccept-Ranges: none\r\n\r\n"
        )
        self._transport.write(head.encode("latin-1"))

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    @property
    def writable(self) -> bool:
        return self._can_write.is_set()

    async def drain(self) -> None:
        """Wait until the socket takes more data (or the connection is gone)."""
        if not self._can_write.is_set():
            await self._can_write.wait()

    async def wait_closed(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the client went away meanwhile."""
        try:
            await asyncio.wait_for(self.closed.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        """Cut the connection at once, dropping anything unsent (a crashed or cut stream)."""
        if self._transport is not None:
            self._transport.abort()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


async def serve(handler: Handler, host: str, port: int) -> tuple[asyncio.Server, set[Connection]]:
    """Listen on host:port; returns the server and the live connection set (for shutdown)."""
    loop = asyncio.get_running_loop()
    connections: set[Connection] = set()
    server = await loop.create_server(
        lambda: Connection(handler, connections), host, port, reuse_address=True, backlog=1024
    )
    return server, connections
