"""One viewer: a client socket that receives a channel's stream from its own cursor."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from acefleet import wire

if TYPE_CHECKING:
    from proxy.channel import Channel

STREAM_HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nCache-Control: no-store\r\n"
    b"Connection: close\r\n\r\n"
)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after_s: float | None = None,
    keep_alive: bool = False,
    extra: dict[str, str] | None = None,
) -> bytes:
    body = wire.ErrorBody(
        error=wire.ErrorDetail(code=code, message=message, retry_after_s=retry_after_s)
    ).model_dump_json(exclude_none=True)
    headers = dict(extra or {})
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(retry_after_s)))
    return response(status, body.encode(), "application/json", headers, keep_alive=keep_alive)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def response(
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
    *,
    keep_alive: bool,
    head: bool = False,
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: " + ("keep-alive" if keep_alive else "close"),
    ]
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head else out + body


class Viewer:
    """State the channel needs per viewer; the fan-out touches only these slots."""

    __slots__ = (
        "address",
        "bytes_sent",
        "channel",
        "closed",
        "cursor",
        "paused",
        "paused_since",
        "requested_at",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, address: str) -> None:
        self.transport = transport
        self.address = address
        self.requested_at = time.monotonic()
        self.cursor = -1  # absolute stream offset handed to the socket; -1: not started
        self.paused = False
        self.paused_since = 0.0
        self.bytes_sent = 0
        self.channel: Channel | None = None
        self.closed = False

    @property
    def started(self) -> bool:
        return self.cursor >= 0

    def pause(self) -> None:
        self.paused = True
        self.paused_since = time.monotonic()

    def resume(self) -> None:
        self.paused = False
        if self.channel is not None and self.started and not self.closed:
            self.channel.catch_up(self)

    def fail(self, status: int, code: str, message: str, retry_after_s: float | None) -> None:
        """Answer a viewer whose stream never started; after a 200 only a cut is possible."""
        if self.closed:
            return
        self.closed = True
        if not self.started:
            self.transport.write(error_response(status, code, message, retry_after_s=retry_after_s))
        self.transport.close()

    def cut(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.close()
