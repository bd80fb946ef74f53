"""One channel: a content's upstream session and the viewers it fans out to.

Holds :class:`Channel` (batching upstream bytes into packet-aligned chunks, fan-out, late
joiners, grace, the failover loop) and :class:`ChannelContext`, the few collaborators every
channel of an edge shares. The upstream can be replaced (engine died, stalled) without touching
the viewers: the buffer's offsets keep growing across upstreams and every chunk starts on a
packet boundary.
What happens to a viewer that cannot keep up is decided in ``backpressure.py``; whether a
failed upstream is replaced, in ``failover.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from acefleet import logs
from acefleet.errors import ServiceError
from acefleet.mpegts import SYNC_BYTE, find_sync, packet_floor
from proxy.backpressure import SlowViewerRule
from proxy.engine_api import EngineClient, EngineSession, UpstreamError
from proxy.failover import FailoverBudget
from proxy.hls.feed import HlsFeed
from proxy.hls.sessions import HlsSession
from proxy.metrics import Metrics
from proxy.placement import EventSink, Placement, PlacementError, Placer, StreamRecord
from proxy.placement.relay import relay_headers
from proxy.responses import STREAM_HEADERS
from proxy.settings import ProxySettings
from proxy.stream_buffer import StreamBuffer, aligned
from proxy.upstream import Playback, open_playback
from proxy.viewer import Viewer

log = logs.get(__name__)

_TICK_S = 1.0


@dataclass(frozen=True)
class ChannelContext:
    """What a channel needs from outside itself; the edge builds one and hands it to each."""

    settings: ProxySettings
    metrics: Metrics
    placer: Placer
    engine: EngineClient
    sink: EventSink
    slow_viewers: SlowViewerRule
    # run a coroutine nobody waits for (engine stop calls, placement releases)
    background: Callable[[Coroutine[Any, Any, Any]], None]
    # the engine named the channel's infohash key: register it; returns the channel already
    # live under that key (the caller merges into it), else None
    alias: Callable[[Channel, str], Channel | None]
    # the channel closed: forget its keys
    ended: Callable[[Channel], None]
    # a viewer detached from a channel
    viewer_left: Callable[[], None]
    # an HLS player's session ended (idle, or its channel closed): forget its id
    hls_gone: Callable[[HlsSession], None]
    # the catalog (or an operator) flags this content key for a warm standby, whatever its
    # audience (``standby_min_viewers`` covers the rest)
    standby_wanted: Callable[[str], bool] = lambda key: False
    # the control plane wants sessions off this placement's engine (operator drain, agent
    # recycling, degraded stats): the channel moves make-before-break
    degraded: Callable[[Placement], bool] = lambda placement: False


class Channel:
    def __init__(
        self,
        ctx: ChannelContext,
        key: str,
        selector: tuple[str, str],
        params: dict[str, str],
        *,
        start: bool = True,
    ) -> None:
        """``start=False``: no upstream is opened (a handover adopts one, see
        :meth:`adopt_upstream`)."""
        self.ctx = ctx
        self.settings = ctx.settings
        self.metrics = ctx.metrics
        self.slow_viewers = ctx.slow_viewers
        self.loop = asyncio.get_running_loop()
        self.key = key
        self.keys = {key}
        self.selector = selector
        self.params = params
        self.buffer = StreamBuffer(self.settings.buffer_bytes)
        self.viewers: list[Viewer] = []  # TS viewers; HLS players are in ``self.hls``
        self.hls: HlsFeed | None = None  # made when the first HLS player arrives
        self.live_at = 0.0
        self.state = "starting"  # starting → live → closed
        self.since = datetime.now(UTC)
        self.pending = bytearray()
        self.batch_s = self.settings.batch_ms / 1000
        self.last_flush = 0.0
        self.flush_handle: asyncio.TimerHandle | None = None
        self.grace_handle: asyncio.TimerHandle | None = None
        self.placement: Placement | None = None
        self.session: EngineSession | None = None
        self.playback: Playback | None = None
        self.record: StreamRecord | None = None
        self.generation = 0
        self.failover = FailoverBudget(self.settings.failovers, self.metrics.failovers)
        self.bytes_out = 0
        self.skips = 0
        self.reported_viewers = -1
        self.log = log.bind(channel=key)
        self.task: asyncio.Task[None] | None = (
            self.loop.create_task(self._run_upstream()) if start else None
        )
        self.tick_handle = self.loop.call_later(_TICK_S, self._tick)

    # --- viewers ----------------------------------------------------------------------------
    @property
    def viewer_count(self) -> int:
        """TS viewers plus HLS players still fetching: what grace, limits and reports count."""
        return len(self.viewers) + (len(self.hls.sessions) if self.hls is not None else 0)

    def attach(self, viewer: Viewer) -> None:
        viewer.channel = self
        self.viewers.append(viewer)
        self._joined()
        if self.buffer.head:
            self._start_viewer(viewer)

    def detach(self, viewer: Viewer) -> None:
        if viewer.channel is not self:
            return
        viewer.channel = None
        self.viewers.remove(viewer)
        self._left()

    def attach_hls(self, session: HlsSession) -> None:
        """An HLS player joins: the channel starts cutting segments if it was not yet."""
        if self.hls is None:
            self.hls = HlsFeed(self.settings, self.metrics)
            if self.buffer.head:  # already live: cut what the buffer holds, for a quick start
                self._seed_hls(self.hls)
        session.channel = self
        self.hls.adopt(session)
        self.metrics.hls_sessions.inc()
        self._joined()

    def detach_hls(self, session: HlsSession) -> None:
        """An HLS player stopped fetching (or the channel let it go)."""
        if session.channel is not self or self.hls is None:
            return
        session.channel = None
        session.changed.set()
        del self.hls.sessions[session.sid]
        self.metrics.hls_sessions.dec()
        self._left()

    def _seed_hls(self, feed: HlsFeed) -> None:
        start = self.buffer.tail
        data = b"".join(self.buffer.since(start))
        elapsed = max(time.monotonic() - self.live_at, 0.001)
        rate = max(self.buffer.head / elapsed, 1.0)  # bytes/s since the channel went live
        feed.seed(data, min(len(data) / rate, elapsed))

    def _joined(self) -> None:
        self.metrics.viewers.inc()
        if self.grace_handle is not None:
            self.grace_handle.cancel()
            self.grace_handle = None

    def _left(self) -> None:
        self.metrics.viewers.dec()
        self.ctx.viewer_left()
        if not self.viewer_count and self.state != "closed" and self.grace_handle is None:
            self.grace_handle = self.loop.call_later(self.settings.grace_s, self.close, "idle")

    def drop(self, viewer: Viewer, reason: str) -> None:
        self.metrics.viewer_drops.labels(reason).inc()
        self.log.info("viewer_dropped", reason=reason, viewer=viewer.address)
        viewer.cut()
        self.detach(viewer)

    def _start_viewer(self, viewer: Viewer) -> None:
        offset = self.buffer.join_point(self.settings.join_max_bytes)
        viewer.transport.write(STREAM_HEADERS + self.buffer.start_prefix(offset))
        viewer.cursor = offset
        self.metrics.ttfb.observe(time.monotonic() - viewer.requested_at)
        self.catch_up(viewer)

    def catch_up(self, viewer: Viewer) -> None:
        """Hand a viewer what it has not yet got, until its socket says stop."""
        buf = self.buffer
        if viewer.cursor < buf.tail:  # fell out of the buffer: skip ahead or drop
            if not self.slow_viewers.rejoin(viewer, buf):
                self.drop(viewer, "behind")
                return
            self.skips += 1
        sent = 0
        for chunk in buf.since(viewer.cursor):
            viewer.transport.write(chunk)
            viewer.cursor += len(chunk)
            sent += len(chunk)
            if viewer.paused or viewer.closed:
                break
        viewer.bytes_sent += sent
        self.bytes_out += sent
        self.metrics.bytes_out.inc(sent)

    # --- upstream bytes → viewers --------------------------------------------------------------
    def _ingest(self, generation: int, data: bytes) -> None:
        if generation != self.generation or self.state == "closed":
            return
        self.metrics.bytes_in.inc(len(data))
        now = self.loop.time()
        if not self.pending and now - self.last_flush >= self.batch_s and aligned(data):
            self.last_flush = now
            self._publish(data)  # the common fast path: no copy at all
            return
        self.pending += data
        if len(self.pending) >= self.settings.batch_bytes or now - self.last_flush >= self.batch_s:
            self._flush()
        elif self.flush_handle is None:
            self.flush_handle = self.loop.call_at(self.last_flush + self.batch_s, self._flush)

    def _flush(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        pending = self.pending
        n = packet_floor(len(pending))
        if n and (pending[0] != SYNC_BYTE or pending[n - 188] != SYNC_BYTE):
            self._resync()
            n = packet_floor(len(pending))
        if n == 0 or self.state == "closed":
            return
        self.last_flush = self.loop.time()
        with memoryview(pending) as view:
            chunk = view[:n].tobytes()
        del pending[:n]
        self._publish(chunk)

    def _resync(self) -> None:
        at = find_sync(self.pending)
        self.metrics.resyncs.inc()
        if at < 0:
            del self.pending[: max(len(self.pending) - 187, 0)]
        else:
            del self.pending[:at]

    def _publish(self, chunk: bytes) -> None:
        buf = self.buffer
        start = buf.head
        buf.append(chunk)
        end = buf.head
        if self.state == "starting":
            self.state = "live"
            self.live_at = time.monotonic()
        if self.hls is not None:
            self.hls.publish(chunk)
        size = len(chunk)
        fanned = 0
        for viewer in tuple(self.viewers):
            if viewer.paused:  # its socket is full: never wait for it (see backpressure.py)
                continue
            if viewer.cursor == start:
                viewer.transport.write(chunk)
                viewer.cursor = end
                viewer.bytes_sent += size
                fanned += 1
            elif viewer.cursor < 0:
                self._start_viewer(viewer)
            elif viewer.cursor != end:
                self.catch_up(viewer)
        self.bytes_out += fanned * size
        self.metrics.bytes_out.inc(fanned * size)

    # --- upstream lifecycle --------------------------------------------------------------------
    async def _run_upstream(self) -> None:
        while True:
            try:
                await self._open_upstream()
                return
            except PlacementError as exc:
                self._fail(exc)
                return
            except UpstreamError as exc:
                self.log.warning("upstream_failed", code=exc.code, error=exc.message)
                self.metrics.upstream_failures.labels(exc.code).inc()
                if self.failover.take(
                    engine_fault=exc.engine_fault, watched=bool(self.viewer_count)
                ):
                    continue
                self._fail(exc)
                return

    async def _open_upstream(self) -> None:
        placement = await self.ctx.placer.place(self.key)
        self.generation += 1
        generation = self.generation
        self.placement = placement
        session: EngineSession | None = None
        pid = uuid.uuid4().hex
        self.log.info("upstream_opening", where=placement.where, source=placement.source)
        try:
            if placement.engine is not None:
                session = await self.ctx.engine.start(
                    placement.engine, self.selector, self.params, pid
                )
                self.session = session
                other = (
                    self.ctx.alias(self, f"infohash:{session.infohash}")
                    if session.infohash
                    else None
                )
                if other is not None:
                    self._merge_into(other)
                    return
                url = session.playback_url
            else:
                assert placement.url is not None
                url = placement.url
            playback = await open_playback(
                url,
                lambda data: self._ingest(generation, data),
                connect_timeout=self.settings.engine_call_timeout_s,
                first_byte_timeout=self.settings.first_byte_timeout_s,
                headers=relay_headers(placement),
            )
        except UpstreamError as exc:
            if session is not None and session.command_url:
                self.ctx.background(self.ctx.engine.stop(session.command_url))
            self.placement = self.session = None
            # released before a retry places again, or this engine's slot would look taken
            await self.ctx.placer.release(
                placement, "engine_failed" if exc.engine_fault else "content"
            )
            raise
        if self.state == "closed":  # every viewer left and the grace ran out meanwhile
            playback.close()
            return
        self.playback = playback
        playback.on_end = lambda reason: self._upstream_died(generation, reason)
        self.failover.upstream_live()
        self.record = StreamRecord(
            stream_id=pid,
            content_key=self.key,
            placement=placement,
            started_at=datetime.now(UTC),
            infohash=session.infohash if session else None,
            viewers=self.viewer_count,
        )
        self.metrics.upstream_sessions.inc()
        self.ctx.placer.confirm(placement, session.stat_url if session else None)
        self.ctx.sink.stream_started(self.record)
        self.log = log.bind(channel=self.key, stream=pid)  # every later line names the session
        self.log.info("upstream_live", where=placement.where, source=placement.source)

    def _merge_into(self, other: Channel) -> None:
        """Our content is already live as ``other`` (it was asked for by infohash, we by id):
        hand our waiting viewers over and end our own session."""
        self.log.info("channel_merged", into=other.key)
        for viewer in tuple(self.viewers):
            self.viewers.remove(viewer)
            self.metrics.viewers.dec()
            other.attach(viewer)
        if self.hls is not None:
            for player in tuple(self.hls.sessions.values()):
                self.detach_hls(player)
                other.attach_hls(player)  # continues its numbers after a discontinuity
        self.close("merged")

    def _upstream_died(self, generation: int, reason: str) -> None:
        if generation != self.generation or self.state == "closed":
            return
        self.log.warning("upstream_died", reason=reason)
        self.metrics.upstream_failures.labels(reason).inc()
        self._retire_upstream(reason, "engine_failed")
        # a dead or stalled upstream is always the source's fault
        if self.failover.take(engine_fault=True, watched=bool(self.viewer_count)):
            self.pending.clear()
            if self.hls is not None:
                self.hls.discontinuity()
            self.task = self.loop.create_task(self._run_upstream())
        else:
            self.close(reason)

    def _retire_upstream(self, reason: str, release_reason: str) -> None:
        """End the current upstream session: playback, engine session (stopped in the
        background), placement (released as ``release_reason``) and its stream record."""
        if self.playback is not None:
            self.playback.close()
            self.playback = None
        if self.placement is not None:
            if self.session is not None and self.session.command_url:
                self.ctx.background(self.ctx.engine.stop(self.session.command_url))
            self.ctx.background(self.ctx.placer.release(self.placement, release_reason))
        if self.record is not None:
            self.ctx.sink.stream_ended(self.record, reason)
        self.placement = self.session = self.record = None

    def _fail(self, error: ServiceError) -> None:
        """No upstream: every waiting viewer gets ``error``, then the channel closes."""
        for viewer in tuple(self.viewers):
            viewer.fail(error)
            self.detach(viewer)
        self._let_players_go(error)
        self.close(error.code)

    def _let_players_go(self, error: ServiceError) -> None:
        """HLS players lose their channel; one still waiting for its first playlist gets
        ``error``, later fetches start the channel again (the sessions are forgotten)."""
        if self.hls is None:
            return
        for player in tuple(self.hls.sessions.values()):
            player.error = error
            self.detach_hls(player)
            self.ctx.hls_gone(player)

    def close(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.log.info("channel_closed", reason=reason)
        self.ctx.ended(self)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        for handle in (self.flush_handle, self.grace_handle, self.tick_handle):
            if handle is not None:
                handle.cancel()
        closed = ServiceError(
            503, "channel_closed", f"channel closed ({reason})", retry_after_s=5.0
        )
        for viewer in tuple(self.viewers):
            viewer.fail(closed)
            self.detach(viewer)
        self._let_players_go(closed)
        self._retire_upstream(reason, reason)
        # Channels sit in reference cycles (viewers, tasks, callbacks) that only the cyclic GC
        # frees, and it runs on object counts, not bytes: free the megabytes of stream now.
        self.buffer.release()
        self.pending = bytearray()
        self.task = None

    def _tick(self) -> None:
        now = time.monotonic()
        self.tick_handle = self.loop.call_later(_TICK_S, self._tick)
        pb = self.playback
        if pb is not None and now - pb.last_data > self.settings.stall_timeout_s:
            self._upstream_died(self.generation, "stall")
        for viewer in tuple(self.viewers):
            reason = self.slow_viewers.overdue(viewer, self.buffer, now)
            if reason is not None:
                self.drop(viewer, reason)
        if self.hls is not None:
            idle = self.settings.hls_session_idle_s
            for player in tuple(self.hls.sessions.values()):
                if not player.waiting and player.idle_for(now) > idle:
                    self.detach_hls(player)
                    self.ctx.hls_gone(player)
        if self.record is not None and self.viewer_count != self.reported_viewers:
            self.reported_viewers = self.record.viewers = self.viewer_count
            self.ctx.sink.viewers_changed(self.record)

    # --- handover (proxy/handover): a new process takes this channel over ---------------------
    def adopt_upstream(
        self,
        placement: Placement,
        session: EngineSession | None,
        playback: Playback,
        record: StreamRecord,
        live_at: float,
    ) -> None:
        """Continue the live upstream session a previous process ran: no placement, no engine
        call, no stream event (central already knows the session by its ``stream_id``).
        ``live_at``: when the channel went live, on this process's ``time.monotonic()``."""
        self.generation += 1
        generation = self.generation
        self.placement, self.session, self.record = placement, session, record
        self.playback = playback
        playback.on_data = lambda data: self._ingest(generation, data)
        playback.on_end = lambda reason: self._upstream_died(generation, reason)
        self.state = "live"
        self.live_at = live_at
        self.reported_viewers = record.viewers
        self.failover.upstream_live()
        self.metrics.upstream_sessions.inc()
        self.log = log.bind(channel=self.key, stream=record.stream_id)

    def adopt_viewer(self, viewer: Viewer, lead: bytes = b"") -> None:
        """A viewer a previous process served: its cursor is already set (the next stream byte
        it needs); it gets ``lead`` (the tail of its headers or PAT/PMT prefix the previous
        process had not yet handed to the kernel), then those bytes, and no headers."""
        viewer.channel = self
        self.viewers.append(viewer)
        self._joined()
        if lead:
            viewer.transport.write(lead)
        cursor, sent = viewer.cursor, viewer.bytes_sent
        self.catch_up(viewer)
        viewer.note_jump(cursor, sent)  # fell out of the buffer meanwhile: skipped

    def status(self) -> dict[str, Any]:
        placement = self.placement
        return {
            "key": self.key,
            "keys": sorted(self.keys),
            "state": self.state,
            "viewers": self.viewer_count,
            "hls_viewers": len(self.hls.sessions) if self.hls is not None else 0,
            "upstream": placement.where if placement else None,
            "source": placement.source if placement else None,
            "stream_id": self.record.stream_id if self.record else None,
            "infohash": self.session.infohash if self.session else None,
            "bytes_in": self.buffer.head,
            "bytes_out": self.bytes_out,
            "skips": self.skips,
            "since": self.since.isoformat(),
        }
