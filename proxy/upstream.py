"""The playback connection of one upstream session: a raw asyncio Protocol with httptools.

The engine holds the response headers until prebuffering ends (5-30 s), and may redirect
(``/ace/r/...`` → ``/content/...``), so opening waits up to the first-byte timeout and follows
a few redirects. Body bytes go straight to ``on_data``; nothing here ever waits for a viewer.
A playback handed over by a previous proxy process (``adopted``) is all body.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import typing
from collections.abc import Callable, Mapping
from urllib.parse import urljoin, urlsplit

import httptools

from acefleet import tls
from proxy.engine_api import UpstreamError

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HOPS = 4


class Playback(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None], *, adopted: bool = False) -> None:
        """``adopted``: a connection another proxy process opened and handed over (see
        proxy/handover): its headers are long past, every byte is body (the engine's and a
        relay's bodies are close-delimited, so there is no framing state to carry)."""
        loop = asyncio.get_running_loop()
        self.on_data = on_data
        self.on_end: Callable[[str], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: asyncio.Future[int] = loop.create_future()
        self.first_byte: asyncio.Future[None] = loop.create_future()
        self.location: str | None = None
        self.forwarding = False
        self.closed = False
        self.last_data = time.monotonic()
        self.adopted = adopted
        if adopted:
            self.forwarding = True
            self.headers.set_result(200)
            self.first_byte.set_result(None)

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.adopted:
            self.on_body(data)
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError):
            self._finish("bad_http")

    def eof_received(self) -> bool | None:
        self._finish("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish("disconnected")

    # --- httptools callbacks --------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"location":
            self.location = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.forwarding = status == 200
        if not self.headers.done():
            self.headers.set_result(status)

    def on_body(self, body: bytes) -> None:
        if not self.forwarding:
            return
        self.last_data = time.monotonic()
        if not self.first_byte.done():
            self.first_byte.set_result(None)
        self.on_data(body)

    def on_message_complete(self) -> None:
        self._finish("eof")

    # --- control ---------------------------------------------------------------------------
    def hold(self) -> None:
        """Stop reading: the kernel's window closes and the engine buffers (the channel's
        viewers cannot take more, see backpressure.py rule 5)."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def release(self) -> None:
        """Read again; the silence of the hold does not count as a stall."""
        self.last_data = time.monotonic()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        self.on_end = None
        if self.transport is not None:
            self.transport.close()

    def _finish(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        err = UpstreamError(
            502, "playback_ended", f"playback connection ended ({reason})", engine_fault=True
        )
        for fut in (self.headers, self.first_byte):
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved: the opener may be gone already
        if self.on_end is not None:
            end, self.on_end = self.on_end, None
            end(reason)


async def open_playback(
    url: str,
    on_data: Callable[[bytes], None],
    *,
    connect_timeout: float,
    first_byte_timeout: float,
    headers: Mapping[str, str] | None = None,
    ca_file: str = "",
) -> Playback:
    """Connect, follow redirects, and return once the first body byte has been delivered.
    ``headers`` go on every request (a relay names its claim; see relay.py). An ``https`` URL
    (a relay from an edge that serves TLS) is verified against ``ca_file`` (empty: the system's
    trust store); the handshake counts against the connect timeout."""
    extra = "".join(
        f"{name}: {value}\r\n"
        for name, value in (headers or {}).items()
        if not any(c in name + value for c in "\r\n")
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + first_byte_timeout
    for _ in range(_MAX_HOPS):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(
                502, "playback_bad_url", f"unsupported playback URL {url!r}", engine_fault=True
            )
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Playback(on_data),
                    parts.hostname,
                    port,
                    ssl=tls.client_context(ca_file) if secure else None,
                ),
                min(connect_timeout, max(deadline - loop.time(), 0.01)),
            )
        except ssl.SSLError as exc:  # an https relay whose certificate does not verify
            raise UpstreamError(
                502,
                "playback_tls_failed",
                f"TLS with the playback URL failed: {exc.reason or type(exc).__name__}",
                engine_fault=True,
            ) from None
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(
                502,
                "playback_unreachable",
                f"cannot connect to playback URL: {type(exc).__name__}",
                engine_fault=True,
            ) from None
        assert proto.transport is not None
        proto.transport.write(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: acefleet-proxy\r\n"
            f"Accept: */*\r\n{extra}Connection: close\r\n\r\n".encode("latin-1")
        )
        try:
            status = await asyncio.wait_for(proto.headers, max(deadline - loop.time(), 0.01))
            if status in _REDIRECTS and proto.location:
                proto.close()
                url = urljoin(url, proto.location)
                continue
            if status == 508:  # the relay source refused: it would loop (placement/relay.py)
                raise UpstreamError(
                    502, "relay_loop", "relay source answered 508 Loop Detected", engine_fault=True
                )
            if status != 200:
                raise UpstreamError(
                    502, "playback_refused", f"playback answered HTTP {status}", engine_fault=True
                )
            await asyncio.wait_for(proto.first_byte, max(deadline - loop.time(), 0.01))
        except TimeoutError:
            proto.close()
            raise UpstreamError(
                504,
                "playback_timeout",
                f"engine sent no stream byte within {first_byte_timeout:g} s",
                engine_fault=True,
            ) from None
        except BaseException:
            proto.close()
            raise
        return proto
    raise UpstreamError(502, "playback_redirects", "too many redirects", engine_fault=True)
