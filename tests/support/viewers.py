"""The stream viewer of the tests, the benchmarks and the lab's fleet checks: one raw-socket HTTP
client for MPEG-TS streams, in two modes.

- :class:`Viewer` reads in the background (an asyncio Protocol, cheap enough for a benchmark's
  hundreds of viewers) and records what a player would notice: status, bytes, first and last
  byte, silences, TS packet alignment. Options make it a slow player (a rate cap) or a player
  behind a VIP (reconnect after a close or a stall). :class:`ViewerThread` runs viewers for
  synchronous code (molecule/default/verify_fleet.py).
- :func:`request` sends one request and leaves the reads to the caller (:class:`Stream`), for
  tests that need precise control: a small receive buffer, a raw request, reading nothing.

Standard library only: molecule/default/verify_fleet.py imports it under the system python3.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

PACKET_SIZE = 188
SYNC_BYTE = 0x47
# Silences shorter than this are normal (the proxy forwards in batches of up to 200 ms).
GAP_S = 0.3


def request_line(target: str, host: str, method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers (names in lower case) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, request target) of an ``http://`` URL."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname or "127.0.0.1", parts.port or 80, target


def packets_aligned(data: bytes | bytearray) -> bool:
    """Every whole 188-byte packet of ``data`` starts with the sync byte."""
    whole = len(data) - len(data) % PACKET_SIZE
    return all(data[i] == SYNC_BYTE for i in range(0, whole, PACKET_SIZE))


# --- background viewers ---------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One connection of a :class:`Viewer`: sends the request, parses the head, passes the body."""

    def __init__(self, viewer: Viewer, request: bytes) -> None:
        self.viewer = viewer
        self.request = request
        self.head = b""
        self.in_body = False
        self.got_bytes = False
        self.opened_at = time.monotonic()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here
        self.transport = cast(asyncio.Transport, transport)
        self.opened_at = time.monotonic()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status, headers = parse_head(self.head[:end])
            data, self.head, self.in_body = self.head[end + 4 :], b"", True
            self.viewer._answered(status, headers)
            if status != 200:
                self.close()
                return
            if not data:
                return
        self.viewer._body(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.viewer._stopping:
            self.viewer.error = f"{type(exc).__name__}: {exc}"
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass(eq=False)
class Viewer:
    """One player reading ``url`` on its own connection: ``start()`` it inside a running loop,
    ``await stop()`` it (or ``close()`` it from synchronous code on that loop)."""

    url: str
    rate: float | None = None  # bytes/s cap (a slow player); None reads as fast as it can
    check_ts: bool = True  # count packets that do not start with the sync byte
    # Like a player behind a VIP: after a close, or stall_timeout s of silence (a connection
    # whose balancer went away gets no reset, it just stops), connect again.
    reconnect: bool = False
    stall_timeout: float = 3.0
    first_byte_timeout: float = 30.0  # a reconnect's patience for a channel opened again
    give_up_after: float = 300.0

    status: int | None = None  # of the latest response
    headers: dict[str, str] = field(default_factory=dict)
    received: int = 0  # stream bytes, over every connection
    connections: int = 0  # responses received
    misaligned: int = 0  # packets not starting with the sync byte (across failovers too)
    closed: bool = False  # done for good: the connection ended (or, reconnecting, it gave up)
    error: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    opened_at: float | None = None  # the first connection's request went out
    first_byte_at: float | None = None
    last_byte_at: float | None = None
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start, length) > GAP_S
    reconnect_gaps: list[float] = field(default_factory=list)  # silence across each reconnect
    # set once the first stream byte arrived or the viewer closed, whichever comes first
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    _pending: bytes = field(default=b"", init=False, repr=False)
    _conn: _Connection | None = field(default=None, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)
    _dialed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    # --- control ----------------------------------------------------------------------------
    def start(self) -> Viewer:
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def open(self) -> Viewer:
        """Start, and return once the first connection is made (or failed): many viewers opened
        one after the other reach the server in that order, not as one burst of SYNs."""
        self.start()
        await self._dialed.wait()
        return self

    def close(self) -> None:
        """Stop at once (synchronous; the task ends on the next loop turn)."""
        self._stopping = True
        if self._conn is not None:
            self._conn.close()
        if self.task is not None:
            self.task.cancel()

    async def stop(self) -> None:
        self.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def run(self) -> None:
        host, port, target = split_url(self.url)
        give_up = time.monotonic() + self.give_up_after
        try:
            while not self._stopping:
                try:
                    await self._connect_once(host, port, target)
                except (OSError, TimeoutError, ValueError) as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                if not self.reconnect or self._stopping or time.monotonic() > give_up:
                    return
                await asyncio.sleep(0.2)
        finally:
            self.closed = True
            self.settled.set()
            self._dialed.set()
            if self._conn is not None:
                self._conn.close()

    # --- views --------------------------------------------------------------------------------
    def longest_gap_since(self, t: float) -> float:
        """The longest silence that ended after ``t`` (0 when none was over GAP_S)."""
        return max((length for start, length in self.gaps if start + length >= t), default=0.0)

    def longest_gap(self) -> float:
        return self.longest_gap_since(0.0)

    def silent_for(self) -> float:
        return time.monotonic() - (self.last_byte_at or self.started_at)

    @property
    def edge(self) -> str:
        """The edge that served the latest response (the proxy's ``X-Acefleet-Edge``)."""
        return self.headers.get("x-acefleet-edge", "")

    # --- internals ------------------------------------------------------------------------------
    async def _connect_once(self, host: str, port: int, target: str) -> None:
        loop = asyncio.get_running_loop()
        conn = self._conn = _Connection(self, request_line(target, host))
        self._pending = b""  # every connection's stream starts on a packet boundary
        connect = loop.create_connection(lambda: conn, host, port)
        # Reconnecting: connect quickly or try again (the first SYN after a VIP move can be lost
        # while the bridge learns the new MAC address).
        try:
            await (asyncio.wait_for(connect, self.stall_timeout + 2) if self.reconnect else connect)
        finally:
            self._dialed.set()
        if self.opened_at is None:
            self.opened_at = conn.opened_at
        try:
            if not self.reconnect:
                await conn.lost
                return
            while not conn.lost.done():
                await asyncio.wait([conn.lost], timeout=0.25)
                patience = self.stall_timeout if conn.got_bytes else self.first_byte_timeout
                last = self.last_byte_at if conn.got_bytes and self.last_byte_at else conn.opened_at
                if time.monotonic() - last > patience:
                    return  # a silent stream is a dead one: connect again
        finally:
            conn.close()

    def _answered(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers
        self.connections += 1

    def _body(self, conn: _Connection, data: bytes) -> None:
        now = time.monotonic()
        last = self.last_byte_at
        if last is not None and now - last > GAP_S:
            self.gaps.append((last, now - last))
        if not conn.got_bytes:
            conn.got_bytes = True
            if last is not None:  # bytes again on a new connection
                self.reconnect_gaps.append(now - last)
        if self.first_byte_at is None:
            self.first_byte_at = now
            self.settled.set()
        self.last_byte_at = now
        self.received += len(data)
        if self.check_ts:
            pending = self._pending + data
            whole = len(pending) - len(pending) % PACKET_SIZE
            syncs = pending[:whole:PACKET_SIZE]
            self.misaligned += len(syncs) - syncs.count(SYNC_BYTE)
            self._pending = pending[whole:]
        if self.rate is not None and conn.transport is not None:
            ahead = self.received / self.rate - (now - self.first_byte_at)
            if ahead > 0.05:
                conn.transport.pause_reading()
                asyncio.get_running_loop().call_later(ahead, self._resume, conn)

    @staticmethod
    def _resume(conn: _Connection) -> None:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.resume_reading()


class ViewerThread:
    """Viewers for synchronous code: they run on this object's own event loop, in a daemon
    thread; their counters can be read from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="viewers", daemon=True).start()

    def start(self, viewer: Viewer) -> Viewer:
        async def begin() -> None:
            viewer.start()

        asyncio.run_coroutine_threadsafe(begin(), self.loop).result(10)
        return viewer

    def stop(self, viewer: Viewer, timeout: float = 15) -> Viewer:
        asyncio.run_coroutine_threadsafe(viewer.stop(), self.loop).result(timeout)
        return viewer

    def wait_playing(self, viewer: Viewer, timeout: float = 45) -> bool:
        """Until the viewer has stream bytes (True) or closed or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not viewer.closed:
            if viewer.received:
                return True
            time.sleep(0.1)
        return viewer.received > 0


# --- one request, reads by the caller -------------------------------------------------------


@dataclass
class Stream:
    """An answered request whose reads the caller drives (nothing is read in the background)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    opened_at: float = 0.0
    first_byte_at: float | None = None

    def json(self) -> Any:
        return json.loads(bytes(self.body))

    async def read_until(self, size: int, within: float = 10.0) -> bytes:
        """Read until the body holds ``size`` bytes; raise on timeout or EOF."""
        async with asyncio.timeout(within):
            while len(self.body) < size:
                data = await self.reader.read(256 * 1024)
                if not data:
                    raise EOFError(f"stream ended after {len(self.body)} bytes")
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                self.body += data
        return bytes(self.body)

    async def read_for(self, seconds: float) -> int:
        """Read whatever comes for ``seconds``; returns the bytes read meanwhile."""
        before = len(self.body)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(self.reader.read(256 * 1024), left)
            except TimeoutError:
                break
            if not data:
                break
            self.body += data
        return len(self.body) - before

    async def read_to_eof(self, within: float = 10.0) -> bytes:
        async with asyncio.timeout(within):
            while data := await self.reader.read(65536):
                self.body += data
        return bytes(self.body)

    def close(self) -> None:
        self.writer.close()


async def request(
    base: str,
    target: str,
    *,
    method: str = "GET",
    rcvbuf: int | None = None,
    raw: bytes | None = None,
    within: float = 10.0,
) -> Stream:
    """Send one request to ``base`` (``http://host:port``) and read the response head (and, for
    a response with a Content-Length, the body)."""
    host, port, _ = split_url(base)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    # a small reader limit too, or asyncio would keep reading into its own buffer
    limit = rcvbuf if rcvbuf is not None else 1 << 20
    reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    opened = time.monotonic()
    writer.write(raw or request_line(target, host, method))
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
    status, headers = parse_head(head[:-4])
    stream = Stream(reader, writer, status, headers, opened_at=opened)
    if "content-length" in headers and method != "HEAD":
        async with asyncio.timeout(within):
            stream.body += await reader.readexactly(int(headers["content-length"]))
    return stream
