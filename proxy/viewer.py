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
        "paces",
        "paused",
        "paused_since",
        "requested_at",
        "run_start",
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
        # where the current contiguous run of stream bytes began, when a skip ended the first
        # (-1: the first run, which began at ``cursor - bytes_sent``); a handover resends
        # exactly what the socket had not yet taken from it (proxy/handover/giver.py)
        self.run_start = -1
        self.channel: Feed | None = None
        self.closed = False
        # whether the channel may hold its upstream for this viewer (backpressure.py, rule 5);
        # lost for good when a hold waited for it in vain: it is slower than the stream
        self.paces = True

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
            cursor, sent = self.cursor, self.bytes_sent
            self.channel.catch_up(self)
            self.note_jump(cursor, sent)

    def note_jump(self, cursor: int, sent: int) -> None:
        """After a catch-up from ``cursor`` with ``sent`` bytes sent: if the cursor moved by more
        than the bytes sent, the viewer skipped ahead (PAT/PMT written, then a new run)."""
        moved = self.bytes_sent - sent
        if self.cursor - cursor != moved:
            self.run_start = self.cursor - moved

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
