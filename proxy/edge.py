"""The edge: every channel of this proxy, keyed by content, and the limits that guard them.

Holds :class:`Edge` (channels by content key, id→infohash aliases, background tasks, status;
it builds the one ``ChannelContext`` its channels share), :class:`RateLimiter` (new streams per
client address) and :class:`Refused` (a limit said no).
Lookups and channel creation never await, so concurrent first viewers of a content find the
channel the first one created (single-flight) and no lock is ever held across engine I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from acefleet import logs
from acefleet.errors import ServiceError
from proxy.access import PlayerStreams
from proxy.backpressure import SlowViewerRule
from proxy.channel import Channel, ChannelContext
from proxy.engine_api import EngineClient
from proxy.hls.sessions import HlsSession, SessionTable
from proxy.metrics import Metrics
from proxy.placement import EventSink, NullEventSink, Placement, Placer
from proxy.placement.relay import RelayLoop, proxy_base
from proxy.settings import ProxySettings
from proxy.viewer import Viewer

log = logs.get(__name__)

_LEARNED_MAX = 10_000
_BUCKETS_MAX = 50_000


class Refused(ServiceError):
    """A new stream may not start now (draining, a limit); always carries ``retry_after_s``."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float) -> None:
        super().__init__(status, code, message, retry_after_s=retry_after_s)


class RateLimiter:
    """Token bucket per client address; the table is bounded (oldest entries go first)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str) -> float:
        """0 if allowed, else the seconds until a token is available."""
        now = time.monotonic()
        tokens, at = self.buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self.buckets[address] = (tokens, now)
        while len(self.buckets) > _BUCKETS_MAX:
            self.buckets.popitem(last=False)
        return wait


def _never(_: object) -> bool:
    return False


class Edge:
    def __init__(
        self,
        settings: ProxySettings,
        metrics: Metrics,
        placer: Placer,
        engine: EngineClient,
        sink: EventSink | None = None,
        *,
        standby_wanted: Callable[[str], bool] | None = None,
        degraded: Callable[[Placement], bool] | None = None,
    ) -> None:
        """``standby_wanted``: the catalog's per-channel standby flag; ``degraded``: the
        control plane's move-off signal (see ``ChannelContext``); both off when None."""
        self.settings = settings
        self.metrics = metrics
        self.placer = placer
        self.engine = engine
        self.sink: EventSink = sink or NullEventSink()
        self.channels: dict[str, Channel] = {}
        # id → infohash keys the engines told us, so a later request by id joins a live
        # infohash channel instead of opening a second engine session (which would kill it).
        self.learned: OrderedDict[str, str] = OrderedDict()
        self.limiter = RateLimiter(settings.client_rate, settings.client_burst)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.draining = False
        self.no_viewers = asyncio.Event()  # set whenever the last viewer of all has left
        # this proxy in relay chains: the URL other edges relay from (as central hands it out)
        from proxy.control.links import identity  # links builds on this module

        self.self_url = proxy_base(identity(settings)[2])
        self.hls_sessions = SessionTable()
        self.players = PlayerStreams()  # streams started with a player's token (token mode)
        self.channel_context = ChannelContext(
            settings=settings,
            metrics=metrics,
            placer=placer,
            engine=engine,
            sink=self.sink,
            slow_viewers=SlowViewerRule(settings, metrics),
            background=self.background,
            alias=self.alias,
            ended=self.forget,
            viewer_left=self.viewer_left,
            hls_gone=self.hls_sessions.remove,
            self_url=self.self_url,
            standby_wanted=standby_wanted or _never,
            degraded=degraded or _never,
        )

    # --- channels ------------------------------------------------------------------------------
    def live_channels(self) -> list[Channel]:
        return list({id(c): c for c in self.channels.values()}.values())

    def viewer_count(self) -> int:
        return sum(c.viewer_count for c in self.live_channels())

    def viewer_left(self) -> None:
        if not self.viewer_count():
            self.no_viewers.set()

    def find(self, key: str) -> Channel | None:
        channel = self.channels.get(key)
        if channel is None and key in self.learned:
            channel = self.channels.get(self.learned[key])
        return channel

    def check(self, address: str, key: str, *, relay: bool = False) -> None:
        """Raise :class:`Refused` when a new stream for ``key`` may not start now. ``relay``:
        a fellow proxy pulls (its relay credential checked): not a client of its address, so
        the per-client rate limit does not apply."""
        if self.draining:
            raise Refused(503, "draining", "this proxy is shutting down", 5)
        wait = 0.0 if relay else self.limiter.take(address)
        if wait:
            self.metrics.rejections.labels("client_rate").inc()
            raise Refused(429, "too_many_streams", "too many new streams from this client", wait)
        if self.viewer_count() >= self.settings.max_viewers:
            self.metrics.rejections.labels("max_viewers").inc()
            raise Refused(503, "max_viewers", "this proxy serves its maximum of viewers", 5)
        if self.find(key) is None and len(self.live_channels()) >= self.settings.max_upstreams:
            self.metrics.rejections.labels("max_upstreams").inc()
            raise Refused(503, "max_upstreams", "this proxy runs its maximum of upstreams", 5)

    def check_loop(self, key: str, chain: tuple[str, ...]) -> None:
        """Raise :class:`RelayLoop` when a relay request that came through ``chain`` would
        loop: this proxy is in the chain, or the live channel of ``key`` relays from a proxy in
        it (proxy/placement/relay.py)."""
        if not chain:
            return
        if self.self_url in chain:
            self.metrics.rejections.labels("relay_loop").inc()
            raise RelayLoop(f"{self.self_url} is already in this relay chain")
        channel = self.find(key)
        placement = channel.placement if channel is not None else None
        if placement is not None and placement.relay_from in chain:
            self.metrics.rejections.labels("relay_loop").inc()
            raise RelayLoop(f"this channel relays from {placement.relay_from}, in this chain")

    def attach(
        self,
        viewer: Viewer,
        key: str,
        selector: tuple[str, str],
        params: dict[str, str],
        player: int | None = None,
        *,
        chain: tuple[str, ...] = (),
    ) -> Channel:
        """Attach ``viewer`` to the channel of ``key``, creating it (after :meth:`check`);
        ``player``: whose token it came with (counted towards that player's limit); ``chain``:
        the proxies a relay request comes through (a channel it creates never relays from
        them)."""
        channel = self.find(key)
        if channel is None:
            channel = Channel(self.channel_context, key, selector, params, chain=chain)
            self.channels[key] = channel
            self.metrics.upstreams.set(len(self.live_channels()))
        channel.attach(viewer)
        if player is not None:
            self.players.add(player, viewer)
        return channel

    def attach_hls(
        self,
        session: HlsSession,
        selector: tuple[str, str],
        params: dict[str, str],
        player: int | None = None,
    ) -> Channel:
        """Attach an HLS player to the channel of its key, creating it (after :meth:`check`)."""
        channel = self.find(session.key)
        if channel is None:
            channel = Channel(self.channel_context, session.key, selector, params)
            self.channels[session.key] = channel
            self.metrics.upstreams.set(len(self.live_channels()))
        self.hls_sessions.add(session)
        channel.attach_hls(session)
        if player is not None:
            self.players.add(player, session)
        return channel

    def alias(self, channel: Channel, key: str) -> Channel | None:
        """The engine reported ``key`` (an infohash) for ``channel``: requests for it share.

        Returns the other channel when ``key`` is already live there (the caller merges)."""
        for own in channel.keys:
            if own != key:
                self.learned[own] = key
                self.learned.move_to_end(own)
        while len(self.learned) > _LEARNED_MAX:
            self.learned.popitem(last=False)
        other = self.channels.get(key)
        if other is None:
            self.channels[key] = channel
            channel.keys.add(key)
            return None
        return other if other is not channel else None

    def forget(self, channel: Channel) -> None:
        for key in channel.keys:
            if self.channels.get(key) is channel:
                del self.channels[key]
        self.metrics.upstreams.set(len(self.live_channels()))

    # --- housekeeping ----------------------------------------------------------------------
    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` without anyone waiting for it; keep a reference until it finishes."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", error=repr(task.exception()))

    async def close_all(self, reason: str) -> None:
        for channel in self.live_channels():
            channel.close(reason)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.settings.stop_timeout_s + 1)

    def status(self) -> dict[str, Any]:
        channels = [c.status() for c in self.live_channels()]
        return {
            "draining": self.draining,
            "viewers": sum(c["viewers"] for c in channels),
            "hls_viewers": sum(c["hls_viewers"] for c in channels),
            "upstreams": len(channels),
            "bytes_out": sum(c["bytes_out"] for c in channels),
            "channels": channels,
        }
