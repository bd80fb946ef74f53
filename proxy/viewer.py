"""One viewer: a client socket that receives a channel's stream from its own cursor.

A viewer knows its channel only as a :class:`Feed` (catch me up, let me go), so this module
imports nothing of the channel. Whether a lagging viewer is skipped or dropped is decided in
``backpressure.py``; this module only records the socket's pause state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from acefleet.errors import ServiceError
from proxy.responses import service_error_response


class Feed(Protocol):
    """What a viewer needs of the channel it is attached to."""

    def catch_up(self, viewer: Viewer) -> None:
        """Hand ``viewer`` what it has not yet got (its socket has room again)."""
        ...

    def detach(self, viewer: Viewer) -> None:
        """``viewer`` is gone (its connection closed)."""
        ...


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
        self.channel: Feed | None = None
        self.closed = False

    @property
    def started(self) -> bool:
        return self.cursor >= 0

    def pause(self) -> None:
        """The socket passed its high-water mark: the fan-out skips this viewer from now on."""
        self.paused = True
        self.paused_since = time.monotonic()

    def resume(self) -> None:
        self.paused = False
        if self.channel is not None and self.started and not self.closed:
            self.channel.catch_up(self)

    def fail(self, error: ServiceError) -> None:
        """Answer a viewer whose stream never started; after a 200 only a cut is possible."""
        if self.closed:
            return
        self.closed = True
        if not self.started:
            self.transport.write(service_error_response(error))
        self.transport.close()

    def cut(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.close()
