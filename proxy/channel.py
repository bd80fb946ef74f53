"""One channel: a content's upstream session and the viewers it fans out to.

Holds :class:`Channel` (batching upstream bytes into packet-aligned chunks, fan-out, late
joiners, grace, the failover loop, the warm standby) and :class:`ChannelContext`, the few
collaborators every channel of an edge shares. The upstream can be replaced (engine died,
stalled, moved) without touching the viewers: the buffer's offsets keep growing across upstreams
and every chunk starts on a packet boundary.
What happens to a viewer that cannot keep up is decided in ``backpressure.py``; whether a
failed upstream is replaced, in ``failover.py``; when a standby is kept, promoted or retired,
and when a gap is filled, in the "standby and gaps" section below (the session itself is
``standby.py``, how a new source is joined on, ``splice.py``).
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
from proxy.splice import LateMarks, null_packets, pids_of, splice
from proxy.standby import Standby
from proxy.stream_buffer import StreamBuffer, aligned
from proxy.upstream import Playback, open_playback
from proxy.viewer import Viewer

log = logs.get(__name__)

_TICK_S = 1.0
# a standby no longer wanted (audience fell, flag cleared) is kept this long in case it comes back
_STANDBY_LINGER_S = 30.0
# after a standby could not be placed or opened, wait this long before asking again
_STANDBY_RETRY_S = 10.0
# ... unless the standby is a move's (the primary's engine is being emptied: tunnel down, drain,
# rotation): the engine may soon be removed under the viewers, so ask again sooner
_MOVE_RETRY_S = 2.0
# a failover refused for want of capacity (503) is asked again this often, within failover_wait_s
_CAPACITY_RETRY_S = 1.0
# null packets per gap fill: ~1.5 KiB, enough for a player's read to return
_FILL_PACKETS = 8
# the old source's PIDs are learnt from this much of its latest bytes when a new one is spliced on
_PID_SCAN = 2 * 1024 * 1024
# the smallest bitrate-sized buffer (a joiner's keyframe must fit even on a slow channel)
_BUFFER_FLOOR = 512 * 1024
# viewers written per loop pass in a fan-out: 64 writes of a 50-kB chunk take about 1 ms, so a
# joiner's request waits that long, not the ~30 ms of a whole 2,000-viewer fan-out (issue 17).
# Measured at 2,000 viewers (bench/results/proxy.md): 32 cost ~20 % more CPU per GB, 128 gave
# the slower joins; the spread between runs on the shared 2-core box was as large as either.
_FAN_SLICE = 64


def _cursor(viewer: Viewer) -> int:
    return viewer.cursor


def _taken(viewer: Viewer) -> int:
    """The stream offset the viewer's socket has taken: its cursor less what still waits in the
    transport (the cursor itself moves in chunk-sized steps, when the transport drains)."""
    return viewer.cursor - viewer.transport.get_write_buffer_size()


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
    # this proxy's base URL, as central hands it out (relay chains: proxy/placement/relay.py)
    self_url: str
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
        chain: tuple[str, ...] = (),
    ) -> None:
        """``start=False``: no upstream is opened (a handover adopts one, see
        :meth:`adopt_upstream`). ``chain``: the proxies the relay request that opens the channel
        came through; the channel never relays from them (the loop guard, relay.py)."""
        self.ctx = ctx
        self.settings = ctx.settings
        self.metrics = ctx.metrics
        self.slow_viewers = ctx.slow_viewers
        self.loop = asyncio.get_running_loop()
        self.key = key
        self.keys = {key}
        self.relay_chain = (*chain, ctx.self_url)
        self.selector = selector
        self.params = params
        self.buffer = StreamBuffer(self.settings.buffer_bytes)
        self.metrics.buffer_bytes.inc(self.buffer.capacity)
        self.rate = 0.0  # bytes/s the upstream delivers, smoothed (sizes the buffer)
        self.rate_mark = (0, time.monotonic())  # (buffer head, when) at the last tick
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
        # backpressure.py rule 5: since when the upstream is not read (None: it is), the slowest
        # pacing viewer the hold waits for, and the timer of a viewer waiting at the head
        self.held_since: float | None = None
        self.pacer: Viewer | None = None
        self.pacer_from = (0, 0.0)  # what the pacer had taken when it became the pacer, and when
        self.starve_handle: asyncio.TimerHandle | None = None
        self.reported_viewers = -1
        # standby and gaps (see that section)
        self.standby: Standby | None = None
        self.standby_retry_at = 0.0
        self.standby_unwanted_since: float | None = None
        self.standby_task: asyncio.Task[None] | None = None
        # the primary died while the standby was starting: the standby is awaited (rule 5), and
        # promoted for this reason ("died" or "stalled") once it has a keyframe
        self.awaiting: str | None = None
        self.awaiting_since = 0.0
        self.watch_handle: asyncio.TimerHandle | None = None
        self.last_in = self.loop.time()  # the latest upstream bytes arrived (loop clock)
        self.last_fill = 0.0
        self.fill_handle: asyncio.TimerHandle | None = None
        self.mark_next = False  # the next published bytes come from a new source: splice them
        self.late_marks: LateMarks | None = None  # PIDs of the old source still owed a mark
        self.gap_since: float | None = None  # the old source's last byte (monotonic)
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
        if viewer is self.pacer:
            self._next_pacer()
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
        if not self.viewers:
            self._release_hold("left")  # nobody to wait for: read on (grace, HLS players)
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
        if self.held_since is not None:
            if viewer is self.pacer and buf.head - viewer.cursor <= buf.capacity // 4:
                self._next_pacer()
            elif viewer.cursor == buf.head and self.starve_handle is None and not viewer.paused:
                self.starve_handle = self.loop.call_later(
                    self.settings.upstream_hold_starve_s, self._starved
                )

    # --- holding the upstream (backpressure.py, rule 5) -----------------------------------------
    def _slowest_pacer(self) -> Viewer | None:
        pacers = [v for v in self.viewers if v.paces and v.cursor >= 0]
        return min(pacers, key=_cursor) if pacers else None

    def _maybe_hold(self, end: int, fanned: int) -> None:
        """After a fan-out (``fanned`` viewers took it whole, so wait at the head now): hold
        the upstream if the slowest viewer that still paces it lags by half the buffer (it
        would fall out of it next)."""
        pb = self.playback
        if (
            pb is None
            or self.held_since is not None
            or not self.settings.upstream_hold_max_s
            or (self.hls is not None and self.hls.sessions)
        ):
            return
        slowest = self._slowest_pacer()
        if slowest is None or end - slowest.cursor < self.buffer.capacity // 2:
            return
        self.held_since = time.monotonic()
        self._wait_for(slowest)
        pb.hold()
        if fanned:
            self.starve_handle = self.loop.call_later(
                self.settings.upstream_hold_starve_s, self._starved
            )

    def _next_pacer(self) -> None:
        """The viewer the hold waited for caught up (or left): wait for the next slowest, or
        read on when every pacing viewer is within a quarter of the buffer."""
        slowest = self._slowest_pacer()
        buf = self.buffer
        if slowest is None or buf.head - slowest.cursor <= buf.capacity // 4:
            self._release_hold("caught_up" if slowest is not None else "left")
        else:
            self._wait_for(slowest)

    def _wait_for(self, pacer: Viewer) -> None:
        self.pacer = pacer
        self.pacer_from = (_taken(pacer), time.monotonic())

    def _starved(self) -> None:
        """A viewer waited ``upstream_hold_starve_s`` at the head. Wait on only if the pacer,
        at the pace it has read since the hold began waiting for it, is within another
        ``upstream_hold_starve_s`` of catching up (viewers of unequal speed, all slower than
        the source); a viewer slower than the stream is not, and the hold ends for it."""
        self.starve_handle = None
        pacer, buf, wait = self.pacer, self.buffer, self.settings.upstream_hold_starve_s
        if pacer is not None:
            taken, since = self.pacer_from
            now_taken = _taken(pacer)
            pace = (now_taken - taken) / max(time.monotonic() - since, 1e-3)
            if pace * wait >= buf.head - buf.capacity // 4 - now_taken:
                self.starve_handle = self.loop.call_later(wait, self._starved)
                return
        self._give_up_hold("starved")

    def _give_up_hold(self, end: str) -> None:
        """End a hold the slow viewers did not make good: they no longer pace the upstream."""
        buf = self.buffer
        for viewer in self.viewers:
            if viewer.paces and buf.head - viewer.cursor > buf.capacity // 4:
                viewer.paces = False
        self._release_hold(end)

    def _release_hold(self, end: str) -> None:
        if self.held_since is None:
            return
        self._forget_hold()
        self.metrics.upstream_holds.labels(end).inc()
        if self.playback is not None:
            self.playback.release()

    def _forget_hold(self) -> None:
        self.held_since = None
        self.pacer = None
        if self.starve_handle is not None:
            self.starve_handle.cancel()
            self.starve_handle = None

    # --- upstream bytes → viewers --------------------------------------------------------------
    def _ingest(self, generation: int, data: bytes) -> None:
        if generation != self.generation or self.state == "closed":
            return
        self.metrics.bytes_in.inc(len(data))
        now = self.last_in = self.loop.time()
        if not self.pending and now - self.last_flush >= self.batch_s and aligned(data):
            self.last_flush = now
            self._publish(data)  # the common fast path: no copy at all
            return
        self.pending += data
        if len(self.pending) >= self.settings.batch_bytes or now - self.last_flush >= self.batch_s:
            self.flush()
        elif self.flush_handle is None:
            self.flush_handle = self.loop.call_at(self.last_flush + self.batch_s, self.flush)

    def flush(self) -> None:
        """Publish what waits for its batch now (its timer, or a handover before its pause)."""
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
        if self.mark_next:  # the first bytes of a replacement upstream (no standby)
            self.mark_next = False
            chunk = self._spliced(splice(b"", chunk))
            if self.gap_since is not None:
                self.metrics.failover_gap.observe(time.monotonic() - self.gap_since)
                self.gap_since = None
            if not chunk:
                return
        elif self.late_marks is not None:  # only for a few seconds after a splice
            chunk = self.late_marks.apply(chunk)
            if self.late_marks.done:
                self.late_marks = None
        self._fan_out(chunk)

    def _spliced(self, data: bytes) -> bytes:
        """Spliced bytes of a new source about to be published: the old source's PIDs they do
        not show yet are marked when they appear (splice.py, rule 5)."""
        buf = self.buffer
        old = pids_of(b"".join(buf.since(max(buf.tail, buf.head - packet_floor(_PID_SCAN)))))
        self.late_marks = LateMarks(old - pids_of(data))
        return data

    def _fan_out(self, chunk: bytes, *, hls: bool = True) -> None:
        buf = self.buffer
        start = buf.head
        buf.append(chunk)
        if self.state == "starting":
            self.state = "live"
            self.live_at = time.monotonic()
        if hls and self.hls is not None:
            self.hls.publish(chunk)
        self._fan_slice(tuple(self.viewers), 0, chunk, start, 0)

    def _fan_slice(
        self, viewers: tuple[Viewer, ...], first: int, chunk: bytes, start: int, fanned: int
    ) -> None:
        """Hand ``chunk`` (at ``start``) to ``viewers[first:]``, ``_FAN_SLICE`` at a time: the
        rest goes on at the next loop pass, so a joiner or another channel waits for one slice,
        not for thousands of writes. A viewer's cursor is always what its socket was handed,
        so a viewer not yet reached is simply behind (catch_up serves it if more arrives)."""
        if self.state == "closed":
            return
        size = len(chunk)
        end = start + size
        last = min(first + _FAN_SLICE, len(viewers))
        direct = 0
        for i in range(first, last):
            viewer = viewers[i]
            if viewer.paused or viewer.channel is not self:  # a full socket: never wait for it
                continue
            if viewer.cursor == start:
                viewer.transport.write(chunk)
                viewer.cursor = end
                viewer.bytes_sent += size
                direct += 1
            elif viewer.cursor < 0:
                self._start_viewer(viewer)
            elif viewer.cursor < self.buffer.head:
                self.catch_up(viewer)
        self.bytes_out += direct * size
        self.metrics.bytes_out.inc(direct * size)
        fanned += direct
        if last < len(viewers):
            self.loop.call_soon(self._fan_slice, viewers, last, chunk, start, fanned)
        elif fanned < len(viewers):  # someone lags (all at the head is the usual live case)
            self._maybe_hold(self.buffer.head, fanned)

    # --- upstream lifecycle --------------------------------------------------------------------
    async def _run_upstream(self) -> None:
        refused_since: float | None = None
        while True:
            try:
                await self._open_upstream()
                return
            except PlacementError as exc:
                now = time.monotonic()
                refused_since = now if refused_since is None else refused_since
                if self._wait_for_capacity(exc, now - refused_since):
                    await asyncio.sleep(_CAPACITY_RETRY_S)
                    continue
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

    def _wait_for_capacity(self, exc: PlacementError, waited: float) -> bool:
        """A failover (viewers had bytes from an earlier source) refused because no engine is
        free right now (503: the fleet is replacing engines, a tunnel is down, claims are all
        taken) is asked again for ``failover_wait_s``: the viewers' connections are kept with
        gap fills meanwhile. A first start is not: its player gets the 503 and retries itself."""
        if not (
            exc.status == 503
            and self.buffer.head > 0
            and self.viewer_count
            and waited < self.settings.failover_wait_s
        ):
            return False
        self.metrics.failover_capacity_waits.labels(exc.code).inc()
        self.log.info("failover_waits_for_capacity", code=exc.code, waited_s=round(waited, 1))
        return True

    async def _open_upstream(self) -> None:
        # The claim call and the engine's start call run as their own tasks, shielded: when
        # the channel closes meanwhile (its last viewer left during placement or prebuffer, and
        # the grace ran out), this task is cancelled, but what they reserve arrives anyway and
        # is given back as soon as it does (see _give_back), not left to a TTL.
        placing = self.loop.create_task(self.ctx.placer.place(self.key))
        try:
            placement = await asyncio.shield(placing)
        except asyncio.CancelledError:
            self.ctx.background(self._give_back(placing, None))
            raise
        if placement.source == "relay" and placement.relay_from in self.relay_chain:
            # central (after a state loss) names a proxy this channel's own relay viewer comes
            # through: relaying from it would close a loop. The requester places elsewhere.
            self.ctx.background(self.ctx.placer.release(placement, "relay_loop"))
            raise PlacementError(
                "relay_loop",
                f"central named {placement.relay_from}, in this channel's relay chain",
                status=508,
                retry_after_s=None,
            )
        self.generation += 1
        generation = self.generation
        self.mark_next = self.buffer.head > 0  # viewers had another source before: splice
        self.placement = placement
        session: EngineSession | None = None
        pid = uuid.uuid4().hex
        self.log.info("upstream_opening", where=placement.where, source=placement.source)
        try:
            if placement.engine is not None:
                starting = self.loop.create_task(
                    self.ctx.engine.start(placement.engine, self.selector, self.params, pid)
                )
                try:
                    session = await asyncio.shield(starting)
                except asyncio.CancelledError:
                    # close() released the placement already unless someone else cancelled
                    held = placement if self.placement is placement else None
                    self.placement = None
                    self.ctx.background(self._give_back(held, starting))
                    raise
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
                headers=relay_headers(placement, self.relay_chain),
                ca_file=self.settings.tls_ca_file,
            )
        except UpstreamError as exc:
            if self.state == "closed":
                # close() stopped this session and released its placement already (the opening
                # went on after it: a lost cancellation); doing it again is a second stop
                raise
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

    async def _give_back(
        self,
        placing: asyncio.Task[Placement] | Placement | None,
        starting: asyncio.Task[EngineSession] | None,
    ) -> None:
        """What a cancelled opening reserved: the engine session it started is stopped, then
        its placement (a claim) is released, each once it has arrived."""
        placement: Placement | None = None
        try:
            placement = await placing if isinstance(placing, asyncio.Task) else placing
            session = await starting if starting is not None else None
        except (PlacementError, UpstreamError):
            session = None  # nothing reserved, or the start failed (the claim still goes back)
        if session is not None and session.command_url:
            await self.ctx.engine.stop(session.command_url)
        if placement is not None:
            self.log.info("placement_given_back", where=placement.where, claim=placement.claim_id)
            await self.ctx.placer.release(placement, "cancelled")

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
        if self._promote("stalled" if reason == "stall" else "died", reason):
            return
        if self.playback is not None:
            self.gap_since = self.playback.last_data
        self._retire_upstream(reason, "engine_failed")
        if self.fill_handle is None:  # a gap for sure: fill it from its first second on
            self.fill_handle = self.loop.call_later(self.settings.gap_fill_after_s, self._fill_gap)
        sb = self.standby
        if sb is not None and sb.state == "starting" and self.viewer_count:
            # rule 5: the standby already has an engine and is prebuffering; a new claim would
            # only start another prebuffer (or be refused: a move's engines are all taken)
            self.awaiting = "stalled" if reason == "stall" else "died"
            self.awaiting_since = time.monotonic()
            self.metrics.standby_awaited.inc()
            self.log.info("failover_awaits_standby", reason=reason)
            return
        self._fail_over(reason)

    def _fail_over(self, reason: str) -> None:
        """No standby to take over: place the channel again (the failover rule) or close it."""
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
        self._forget_hold()  # a hold was the closed playback's
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
        self.retire_standby(reason)
        for handle in (
            self.flush_handle,
            self.grace_handle,
            self.tick_handle,
            self.watch_handle,
            self.fill_handle,
        ):
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
        self.metrics.buffer_bytes.dec(self.buffer.capacity)
        self.buffer.release()
        self.pending = bytearray()
        self.task = None

    def _size_buffer(self, now: float) -> None:
        """The buffer holds ``buffer_seconds`` of the measured bitrate, at least two keyframe
        intervals and ``_BUFFER_FLOOR``, at most ``buffer_bytes``: what a joiner (from the latest
        keyframe) and a viewer catching up can use, not a fixed 4 MiB per channel. Measured
        only while bytes flow freely (a hold or a gap would read as a low bitrate)."""
        head, then = self.rate_mark
        buf = self.buffer
        self.rate_mark = (buf.head, now)
        seconds = self.settings.buffer_seconds
        if not seconds or self.held_since is not None or self.playback is None or now <= then:
            return
        sample = (buf.head - head) / (now - then)
        self.rate = sample if not self.rate else 0.7 * self.rate + 0.3 * sample
        keyframes = buf.keyframes
        gop = keyframes[-1] - keyframes[-2] if len(keyframes) >= 2 else 0
        want = max(int(self.rate * seconds), 2 * gop, _BUFFER_FLOOR)
        size = min(want, self.settings.buffer_bytes)
        if size != buf.capacity:
            self.metrics.buffer_bytes.inc(size - buf.capacity)
            buf.capacity = size  # a smaller one sheds its oldest chunks on the next append

    def _tick(self) -> None:
        now = time.monotonic()
        self.tick_handle = self.loop.call_later(_TICK_S, self._tick)
        self._size_buffer(now)
        pb = self.playback
        if (
            self.held_since is not None
            and now - self.held_since > self.settings.upstream_hold_max_s
        ):
            self._give_up_hold("timeout")
        held = self.held_since is not None  # a silence of our own making is no stall
        if pb is not None and not held and now - pb.last_data > self.settings.stall_timeout_s:
            self._upstream_died(self.generation, "stall")
        self._keep_standby(now)
        self._fill_gap()
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

    # --- standby and gaps ------------------------------------------------------------------------
    # 1. A live channel wants a warm standby when ``viewer_count >= standby_min_viewers > 0``,
    #    when the catalog flags one of its keys, or when its primary's engine is degraded
    #    (make-before-break). Only an engine primary gets one: a relay's source edge keeps its own.
    # 2. The standby is promoted (spliced in at its latest keyframe) when the primary dies, sends
    #    nothing for ``standby_promote_after_s`` while the standby flows, or is degraded; a new
    #    standby is prepared on the next tick.
    # 3. One no longer wanted is retired after ``_STANDBY_LINGER_S`` (an audience hovering at the
    #    threshold does not open and close sessions); a failed one is asked again after
    #    ``_STANDBY_RETRY_S``.
    # 4. While a watched channel gets no upstream bytes for ``gap_fill_after_s``, its TS viewers
    #    get a few null packets that often, so players with read timeouts keep the connection.
    # 5. A primary that dies or stalls while a standby is still starting (placed, prebuffering:
    #    typically a move off a tunnel or engine being emptied) waits for that standby instead of
    #    placing again, and it is promoted at its first keyframe. Only if the standby fails, or
    #    is not live within ``engine_call_timeout_s + first_byte_timeout_s``, does the failover
    #    rule place the channel again. A move's standby that failed is asked again after
    #    ``_MOVE_RETRY_S`` (not ``_STANDBY_RETRY_S``): its primary may be removed any moment.
    def _standby_wanted(self) -> bool:
        wanted = self.settings.standby_min_viewers
        if wanted and self.viewer_count >= wanted:
            return True
        return any(self.ctx.standby_wanted(key) for key in self.keys)

    def _keep_standby(self, now: float) -> None:
        sb = self.standby
        if sb is not None and sb.state == "closed":  # it died: ask again later
            self.standby = sb = None
            self.standby_retry_at = now + self._standby_retry_s()
        if self.awaiting is not None:
            self._keep_awaiting(now)
            return
        placement = self.placement
        if self.state != "live" or placement is None or self.playback is None:
            return
        degraded = self.ctx.degraded(placement)
        if degraded and sb is not None and sb.live and self._promote("moved", "moved"):
            return
        if sb is not None and sb.placement is not None and self.ctx.degraded(sb.placement):
            # the standby's own engine is being emptied (drain, recycling): a standby there
            # would keep it from ever emptying; another is prepared after the retry delay
            self.retire_standby("moved")
            sb = None
        if degraded or self._standby_wanted():
            self.standby_unwanted_since = None
            if sb is None and placement.engine is not None and now >= self.standby_retry_at:
                self._open_standby(placement)
        elif sb is not None:
            if self.standby_unwanted_since is None:
                self.standby_unwanted_since = now
            elif now - self.standby_unwanted_since >= _STANDBY_LINGER_S:
                self.retire_standby("unwanted")

    def _standby_retry_s(self) -> float:
        moving = self.placement is not None and self.ctx.degraded(self.placement)
        return _MOVE_RETRY_S if moving else _STANDBY_RETRY_S

    def _keep_awaiting(self, now: float) -> None:
        """Rule 5, each tick: promote the awaited standby once it can be, or give up on it."""
        reason = self.awaiting
        assert reason is not None
        sb = self.standby
        if sb is not None and sb.live and self._promote(reason, reason):
            return
        limit = self.settings.engine_call_timeout_s + self.settings.first_byte_timeout_s
        if sb is None or sb.state == "closed" or now - self.awaiting_since > limit:
            self._awaited_standby_failed()

    def _awaited_standby_failed(self) -> None:
        reason = self.awaiting
        if reason is None or self.state == "closed":
            return
        self.awaiting = None
        self.log.warning("awaited_standby_failed", reason=reason)
        self.retire_standby("engine_failed")
        self._fail_over("stall" if reason == "stalled" else reason)

    def _open_standby(self, primary: Placement) -> None:
        sb = self.standby = Standby(self.ctx, self.key, self.selector, self.params)
        avoid = frozenset({primary.engine_id or primary.engine or ""})
        self.standby_task = self.loop.create_task(self._run_standby(sb, avoid))

    async def _run_standby(self, sb: Standby, avoid: frozenset[str]) -> None:
        try:
            await sb.open(avoid)
        except (PlacementError, UpstreamError) as exc:
            self.metrics.standby_failures.labels(exc.code).inc()
            self.log.info("standby_failed", code=exc.code, error=exc.message)
            if self.standby is sb:
                self.standby = None
                self.standby_retry_at = time.monotonic() + self._standby_retry_s()
                self._awaited_standby_failed()
            return
        if sb.live and self.awaiting is not None and self._promote(self.awaiting, self.awaiting):
            return
        if sb.live and self.watch_handle is None:
            self._watch_primary()

    def _watch_primary(self) -> None:
        """While a standby is live, check the primary often enough to promote within
        ``standby_promote_after_s`` of its last byte (the 1-s tick is too coarse)."""
        self.watch_handle = None
        sb, pb = self.standby, self.playback
        if sb is None or not sb.live or self.state == "closed":
            return
        limit = self.settings.standby_promote_after_s
        if self.awaiting is not None and self._promote(self.awaiting, self.awaiting):
            return  # rule 5: the standby now has a keyframe
        placement = self.placement
        if (
            placement is not None
            and self.ctx.degraded(placement)
            and self._promote("moved", "moved")
        ):
            return  # a move: as soon as the standby has a keyframe, not at the next 1-s tick
        if (
            pb is not None
            and self.held_since is None
            and time.monotonic() - pb.last_data > limit
            and sb.flowing_for < limit
            and self._promote("stalled", "stall")
        ):
            return
        self.watch_handle = self.loop.call_later(limit / 4, self._watch_primary)

    def _promote(self, reason: str, detail: str) -> bool:
        """Replace the primary by the live standby at the standby's latest keyframe; False (and
        nothing changed) when there is none ready. ``reason``: died, stalled or moved."""
        sb = self.standby
        if sb is None or not sb.live or self.state == "closed":
            return False
        data = sb.splice_bytes()
        if data is None:
            return False
        if self.playback is not None:
            last = self.playback.last_data
        else:  # rule 5: the primary is gone already; the gap began at its last byte
            last = self.gap_since if self.gap_since is not None else time.monotonic()
        self.standby = None
        self.awaiting = None
        self._retire_upstream(detail, "moved" if reason == "moved" else "engine_failed")
        placement, session, playback, record, rest = sb.hand_over()
        self.generation += 1
        generation = self.generation
        self.placement, self.session, self.playback, self.record = (
            placement,
            session,
            playback,
            record,
        )
        playback.on_data = lambda data: self._ingest(generation, data)
        playback.on_end = lambda why: self._upstream_died(generation, why)
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self.pending = bytearray(rest)  # the old source's partial packet is dropped
        self.mark_next = False
        self.gap_since = None
        record.viewers = self.reported_viewers = self.viewer_count
        self.failover.upstream_live()
        self.metrics.upstream_sessions.inc()
        if reason != "moved":
            self.metrics.failovers.inc()
        self.metrics.promotions.labels(reason).inc()
        gap = time.monotonic() - last
        self.metrics.failover_gap.observe(gap)
        self.ctx.sink.stream_started(record)  # a known stream id: central updates it
        if self.hls is not None:
            self.hls.discontinuity()
        self.last_in = self.last_flush = self.loop.time()
        self._fan_out(self._spliced(data))
        self.log = log.bind(channel=self.key, stream=record.stream_id)
        self.log.info("standby_promoted", reason=reason, gap_s=round(gap, 3), where=placement.where)
        return True

    def retire_standby(self, reason: str) -> None:
        """End the standby session, if any (the channel closes, it is no longer wanted, or a
        handover is about to pause this process). A new one is not asked for within
        ``_STANDBY_RETRY_S``: a process being handed over must not open another meanwhile."""
        if self.standby is not None:
            self.standby.close(reason)
            self.standby = None
        self.standby_unwanted_since = None
        self.standby_retry_at = time.monotonic() + _STANDBY_RETRY_S

    def _fill_gap(self) -> None:
        """Called by the tick, and by its own timer while a gap lasts (so silences last about
        ``gap_fill_after_s``, not up to a tick more)."""
        if self.fill_handle is not None:
            self.fill_handle.cancel()
            self.fill_handle = None
        if self.state != "live" or not self.viewers or self.pending or self.held_since is not None:
            return  # (a stalled upstream's partial packet is waiting: never cut into it; a held
            # upstream is silent because the viewers are full)
        now = self.loop.time()
        every = self.settings.gap_fill_after_s
        if now - self.last_in < every:
            if self.playback is None:  # a failover is on: the gap has begun, fill it on time
                self.fill_handle = self.loop.call_at(self.last_in + every, self._fill_gap)
            return  # (bytes flow again: the timer stops)
        if now - self.last_fill >= every * 0.9:  # the tick and the timer may both come
            self.last_fill = now
            self.metrics.gap_fill_packets.inc(_FILL_PACKETS)
            self._fan_out(null_packets(_FILL_PACKETS), hls=False)
        self.fill_handle = self.loop.call_at(self.last_fill + every, self._fill_gap)

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
            "standby": self.standby.status() if self.standby is not None else None,
            "infohash": self.session.infohash if self.session else None,
            "bytes_in": self.buffer.head,
            "bytes_out": self.bytes_out,
            "skips": self.skips,
            "buffer_bytes": self.buffer.capacity,
            "bitrate_bps": round(self.rate * 8),
            "since": self.since.isoformat(),
        }
