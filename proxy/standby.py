"""A warm standby: a second engine session of a channel, read and kept ready to replace its
primary at a keyframe.

The rule (when a channel wants one, when it is promoted or retired) is the channel's
(``channel.py``, "standby" section); this module is the session itself:

1. It is placed with ``Placer.place_standby`` on none of the primary's engines, opens its own
   engine session (its own pid) and playback, exactly as a primary does.
2. It reads all the time (an engine ends a session nobody reads) into a small buffer of its own
   (``standby_buffer_bytes``), which keeps the latest keyframes with their PAT and PMT.
3. Its ``StreamRecord`` says ``standby=True`` and is announced once live; the channel flips it
   when it promotes the session (:meth:`Standby.hand_over`).
4. Closing it stops its engine session and releases its placement, like a primary's.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from acefleet import logs
from acefleet.mpegts import SYNC_BYTE, find_sync, packet_floor
from proxy.engine_api import EngineSession, UpstreamError
from proxy.placement import Placement, StreamRecord
from proxy.placement.relay import relay_headers
from proxy.splice import splice
from proxy.stream_buffer import StreamBuffer
from proxy.upstream import Playback, open_playback

if TYPE_CHECKING:
    from proxy.channel import ChannelContext

log = logs.get(__name__)

# bytes gathered before they go into the standby's buffer: its keyframe scan runs per chunk
_BATCH = 64 * 1024


class Standby:
    def __init__(
        self, ctx: ChannelContext, key: str, selector: tuple[str, str], params: dict[str, str]
    ) -> None:
        self.ctx = ctx
        self.key = key
        self.selector = selector
        self.params = params
        self.buffer = StreamBuffer(ctx.settings.standby_buffer_bytes)
        self.pending = bytearray()
        self.state = "starting"  # starting → live → promoted | closed
        self.placement: Placement | None = None
        self.session: EngineSession | None = None
        self.playback: Playback | None = None
        self.record: StreamRecord | None = None
        self.opened_at = time.monotonic()

    # --- opening -----------------------------------------------------------------------------
    async def open(self, avoid: frozenset[str]) -> None:
        """Place and start the session; raises PlacementError or UpstreamError (everything
        already taken is given back first)."""
        ctx = self.ctx
        placement = await ctx.placer.place_standby(self.key, avoid)
        if self.state == "closed":  # retired while it was being placed
            ctx.background(ctx.placer.release(placement, "unwanted"))
            return
        self.placement = placement
        pid = uuid.uuid4().hex
        try:
            if placement.engine is not None:
                session = await ctx.engine.start(placement.engine, self.selector, self.params, pid)
                if self.state == "closed":
                    if session.command_url:
                        ctx.background(ctx.engine.stop(session.command_url))
                    return
                self.session = session
                url = session.playback_url
            else:
                assert placement.url is not None
                url = placement.url
            playback = await open_playback(
                url,
                self._ingest,
                connect_timeout=ctx.settings.engine_call_timeout_s,
                first_byte_timeout=ctx.settings.first_byte_timeout_s,
                headers=relay_headers(placement),
                ca_file=ctx.settings.tls_ca_file,
            )
        except UpstreamError as exc:
            self.close("engine_failed" if exc.engine_fault else "content")
            raise
        if self.state == "closed":  # retired while it was opening
            playback.close()
            return
        self.playback = playback
        playback.on_end = self._ended
        self.state = "live"
        self.record = StreamRecord(
            stream_id=pid,
            content_key=self.key,
            placement=placement,
            started_at=datetime.now(UTC),
            infohash=self.session.infohash if self.session else None,
            viewers=0,  # viewers watch the primary; the count moves over on promotion
            standby=True,
        )
        ctx.metrics.standby_sessions.inc()
        ctx.placer.confirm(placement, self.session.stat_url if self.session else None)
        ctx.sink.stream_started(self.record)
        log.info("standby_live", channel=self.key, where=placement.where, stream=pid)

    # --- reading -----------------------------------------------------------------------------
    def _ingest(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        pending = self.pending
        n = packet_floor(len(pending))
        if n and (pending[0] != SYNC_BYTE or pending[n - 188] != SYNC_BYTE):
            at = find_sync(pending)
            del pending[: at if at >= 0 else max(len(pending) - 187, 0)]
            n = packet_floor(len(pending))
        if n:
            self.buffer.append(bytes(pending[:n]))
            del pending[:n]

    def _ended(self, reason: str) -> None:
        log.warning("standby_died", channel=self.key, reason=reason)
        self.close("engine_failed")

    @property
    def flowing_for(self) -> float:
        """Seconds since the standby last got bytes (inf when it is not live)."""
        pb = self.playback
        return time.monotonic() - pb.last_data if pb is not None and self.live else float("inf")

    @property
    def live(self) -> bool:
        return self.state == "live"

    # --- promotion ---------------------------------------------------------------------------
    def splice_bytes(self) -> bytes | None:
        """What viewers get first when this standby is promoted: from its latest keyframe (PAT
        and PMT first), marked as a discontinuity (``splice.py``); None before any keyframe."""
        self._flush()
        buf = self.buffer
        if not buf.keyframes:
            return None
        at = buf.keyframes[-1]
        return splice(buf.start_prefix(at), b"".join(buf.since(at)))

    def hand_over(self) -> tuple[Placement, EngineSession | None, Playback, StreamRecord, bytes]:
        """Give the session to the channel: its placement, engine session, playback (whose
        callbacks the channel replaces), its record (now the primary's) and the bytes of a
        partial packet still waiting here, which come first from the playback's next bytes."""
        assert self.placement is not None
        assert self.playback is not None
        assert self.record is not None
        self.state = "promoted"
        self.ctx.metrics.standby_sessions.dec()
        self.record.standby = False
        rest = bytes(self.pending)
        self.buffer.release()
        self.pending = bytearray()
        return self.placement, self.session, self.playback, self.record, rest

    def status(self) -> dict[str, object]:
        return {
            "state": self.state,
            "upstream": self.placement.where if self.placement else None,
            "stream_id": self.record.stream_id if self.record else None,
            "bytes_in": self.buffer.head,
        }

    # --- retiring ----------------------------------------------------------------------------
    def close(self, reason: str) -> None:
        """End the session: playback, engine session (in the background), placement (released
        as ``reason``), record."""
        if self.state in ("closed", "promoted"):
            return
        if self.state == "live":
            self.ctx.metrics.standby_sessions.dec()
        self.state = "closed"
        ctx = self.ctx
        if self.playback is not None:
            self.playback.close()
            self.playback = None
        if self.session is not None and self.session.command_url:
            ctx.background(ctx.engine.stop(self.session.command_url))
        if self.placement is not None:
            ctx.background(ctx.placer.release(self.placement, reason))
        if self.record is not None:
            ctx.sink.stream_ended(self.record, reason)
        self.placement = self.session = self.record = None
        self.buffer.release()
        self.pending = bytearray()
