"""The proxy's live-stream snapshot for central (anti-entropy): ``PUT /v1/proxies/{id}/streams``.

Events can be lost (queue overflow) and central can restart with an empty view; the snapshot is
the full truth of this proxy, so central adds what it missed and ends what is gone (releasing
their claims). Sent at start (a restarted proxy ends its previous incarnation's streams), every
``interval_s``, and right after central answers again following an outage. A channel's warm
standby session is listed too, marked ``standby`` (no viewers: they watch the primary). Each
snapshot carries ``taken_at``, so central can tell a snapshot built before a stream started or
ended (and delivered after that event) from a current one.

Central's answer carries ``move_off``: the engines this proxy's streams should leave
make-before-break (draining, recycling, degraded by stats). The latest list is kept here
(``moving_off``) and forgotten when central has not answered for three periods, so a stale
verdict never moves sessions on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import httpx

from acefleet import logs
from acefleet.wire import LiveStream, ProxySnapshot
from proxy.control.peer import ControlPeer
from proxy.edge import Edge
from proxy.placement import StreamRecord

log = logs.get(__name__)

_STALE_PERIODS = 3  # a move_off list older than this many snapshot periods is forgotten


def _live(record: StreamRecord, viewers: int, players: dict[str, int]) -> LiveStream:
    placement = record.placement
    return LiveStream(
        stream_id=record.stream_id,
        content_key=record.content_key,
        infohash=record.infohash,
        claim_id=placement.claim_id,
        engine_id=placement.engine_id,
        source=placement.source,
        viewers=viewers,
        started_at=record.started_at,
        players=players,
        standby=record.standby,
    )


def snapshot_of(edge: Edge, host: str, url: str) -> ProxySnapshot:
    streams: list[LiveStream] = []
    for channel in edge.live_channels():
        record = channel.record
        if record is None or channel.state == "closed":
            continue
        streams.append(_live(record, channel.viewer_count, edge.players.on(channel)))
        standby = getattr(channel, "standby", None)  # the channel's warm standby, when it has one
        spare: StreamRecord | None = getattr(standby, "record", None)
        if spare is not None and spare.stream_id != record.stream_id:
            streams.append(_live(spare, 0, {}))
    # Stamped with the clock that stamps events (``event_queue``: ``datetime.now(UTC)``): central
    # orders this snapshot against this proxy's own stream_started/stream_ended times, so the
    # hosts' clocks never need to agree. Channels record a stream and queue its event in one
    # step (no await between), so every start and end stamped before this time shows in the list.
    return ProxySnapshot(host=host, url=url, streams=streams, taken_at=datetime.now(UTC))


class SnapshotLoop:
    def __init__(
        self,
        edge: Edge,
        central: ControlPeer,
        *,
        url: str,
        interval_s: float,
    ) -> None:
        self.edge = edge
        self.central = central
        self.target = central.url(f"/v1/proxies/{central.proxy_id}/streams")
        self.url = url
        self.interval_s = interval_s
        self.now = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.sent = 0
        self.move_off: frozenset[str] = frozenset()  # central's latest list of engines to leave
        self.move_off_at = 0.0  # monotonic time of that answer

    def moving_off(self) -> frozenset[str]:
        """Engines central wants this proxy's sessions off now (empty once the answer is old)."""
        if time.monotonic() - self.move_off_at > _STALE_PERIODS * self.interval_s:
            return frozenset()
        return self.move_off

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def send_soon(self) -> None:
        """Central is back (or something changed a lot): do not wait for the next period."""
        self.now.set()

    async def run(self) -> None:
        failing = False
        while True:
            ok = await self.send()
            if ok and failing:
                log.info("snapshot_sent_after_outage")
            failing = not ok
            # While central is away, try more often, so its view is repaired soon after it returns.
            wait = self.interval_s if ok else min(self.interval_s, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.now.wait(), wait)
            self.now.clear()

    async def send(self) -> bool:
        # without defaults: a central that predates a field (standby) still takes the snapshot
        snap = snapshot_of(self.edge, self.central.host, self.url)
        body = snap.model_dump(mode="json", exclude_defaults=True)
        try:
            resp = await self.central.http.put(
                self.target,
                json=body,
                headers=self.central.headers,
                timeout=self.central.timeout_s,
            )
        except httpx.HTTPError:
            return False
        if resp.status_code != 200:
            log.warning("snapshot_refused", status=resp.status_code, body=resp.text[:200])
            return False
        self.sent += 1
        self._take_move_off(resp)
        return True

    def _take_move_off(self, resp: httpx.Response) -> None:
        try:
            listed = resp.json().get("move_off") or []
        except (ValueError, AttributeError):
            listed = []  # a central that predates move_off answers without it
        if not isinstance(listed, list):
            listed = []
        fresh = frozenset(e for e in listed if isinstance(e, str))
        if fresh != self.move_off:
            log.info("move_off", engines=sorted(fresh))
        self.move_off = fresh
        self.move_off_at = time.monotonic()

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
