"""Central's live state and the operations on it: heartbeats, claims, events, snapshots, drain.

All methods are synchronous: they run on the event loop one at a time, which is what makes a
claim atomic. History rows are handed to the write-behind queue and never awaited here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from acefleet import logs
from acefleet.wire import (
    ClaimGrant,
    ClaimRequest,
    Directive,
    EngineRef,
    ErrorDetail,
    EventBatch,
    EventBatchResult,
    EventResult,
    Heartbeat,
    HeartbeatReply,
    ProxySnapshot,
    RelayRef,
    StreamEvent,
)
from orchestrator.central import buffer
from orchestrator.central.claims import Claim, ClaimBook
from orchestrator.central.history import History
from orchestrator.central.hosts import Engine, Fleet, Host, HostStatus
from orchestrator.central.metrics import CentralMetrics
from orchestrator.central.placement import NoPlacement, choose
from orchestrator.central.settings import CentralSettings
from orchestrator.central.streams import Proxy, Stream, StreamRegistry

log = logs.get(__name__)


def _aware(at: datetime) -> datetime:
    """Times without a zone are taken as UTC, so naive and aware ones can be compared."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class HostMismatch(ValueError):
    """The host in a heartbeat body differs from the one in its URL."""


@dataclass(slots=True, frozen=True)
class SnapshotOutcome:
    streams: int
    added: int
    ended: int


class Central:
    def __init__(
        self,
        settings: CentralSettings,
        metrics: CentralMetrics,
        history: History,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.history = history
        self.clock = clock
        self.rng = rng or random.Random()
        self.started = clock()
        self.started_at = datetime.now(UTC)
        self.fleet = Fleet(settings.stale_after_s, settings.lost_after_s)
        self.book = ClaimBook(settings.claim_ttl_s)
        self.registry = StreamRegistry(settings.event_id_memory)
        self.per_edge = settings.warm_buffer_per_edge
        self.fleet_max = settings.fleet_max_engines
        self.version = 0  # bumped on every change; live updates push when it moved
        self.frame_cache: tuple[int, str] | None = None  # (version, live-update frame JSON)

    # --- status ----------------------------------------------------------------------------

    def warming_up(self) -> bool:
        return self.clock() - self.started < self.settings.warmup_s

    def changed(self) -> None:
        self.version += 1

    def relay_url(self, host: str) -> str | None:
        url = self.registry.proxy_url_by_host.get(host)
        if url is None and self.settings.proxy_url_template:
            url = self.settings.proxy_url_template.format(host=host)
        return url

    # --- heartbeats --------------------------------------------------------------------------

    def heartbeat(self, path_host: str, hb: Heartbeat) -> HeartbeatReply:
        if hb.host != path_host:
            raise HostMismatch(f"heartbeat for {hb.host!r} posted to the URL of {path_host!r}")
        now = self.clock()
        previous = self.fleet.hosts.get(hb.host)
        was = self.fleet.status(previous, now) if previous else None
        if previous is not None and hb.seq < previous.seq:
            log.info("agent_restarted", host=hb.host, seq=hb.seq, previous_seq=previous.seq)
        host, gap, gone = self.fleet.ingest(hb, now)
        self.metrics.heartbeats_total.inc()
        if gap is not None:
            self.metrics.heartbeat_lag.observe(gap)
        if was is None:
            log.info("host_joined", host=host.name, engines=len(host.engines))
        elif was is not HostStatus.live:
            log.info("host_back", host=host.name, was=str(was))
        host.status_seen = HostStatus.live
        for engine_id in gone:
            # A vanished engine cannot serve what was reserved on it but not yet started.
            for claim in self.book.pending_on_engine(engine_id):
                self.book.release(claim.id)
        directives = self.fleet.take_directives(host)
        directives.extend(self._provision(host, now))
        self.changed()
        claimed = {eid: n for eid in host.engines if (n := self.book.held(eid))}
        return HeartbeatReply(
            interval_s=self.settings.heartbeat_interval_s, directives=directives, claimed=claimed
        )

    def _provision(self, host: Host, now: float) -> list[Directive]:
        p = buffer.plan(
            host,
            self.fleet,
            self.book,
            per_edge=self.per_edge,
            fleet_max=self.fleet_max,
            now=now,
            window=2 * self.settings.heartbeat_interval_s,
            warming_up=self.warming_up(),
        )
        if p.blocked_reason != host.blocked_reason:
            if p.blocked_reason is not None or host.blocked_reason is not None:
                action = "blocked" if p.blocked_reason else "unblocked"
                self.history.provisioning(
                    datetime.now(UTC), host.name, action, None, p.blocked_reason
                )
            host.blocked_reason = p.blocked_reason
        if p.provision <= 0:
            return []
        host.provision_sent = p.outstanding + p.provision
        host.provision_sent_at = now
        self.metrics.provision_total.inc(p.provision)
        self.history.provisioning(datetime.now(UTC), host.name, "provision", p.provision, None)
        log.info("provision", host=host.name, count=p.provision, free=p.free, target=p.target)
        return [Directive(kind="provision", count=p.provision)]

    # --- claims ------------------------------------------------------------------------------

    def claim(self, req: ClaimRequest) -> ClaimGrant | ErrorDetail:
        started = time.perf_counter()
        try:
            return self._claim(req)
        finally:
            self.metrics.claim_seconds.observe(time.perf_counter() - started)

    def _claim(self, req: ClaimRequest) -> ClaimGrant | ErrorDetail:
        now = self.clock()
        ttl = self.settings.claim_ttl_s
        live = self.book.for_content(req.content_key, now)
        avoid = frozenset(req.avoid)
        if live is not None and live.engine_id in avoid and live.host == req.host:
            # The asking proxy saw this claim's engine fail: its failover needs another engine.
            self.book.release(live.id)
            live = None
        if live is not None and live.engine_id is not None:
            own = self.fleet.hosts.get(req.host)
            held = own.engines.get(live.engine_id) if own is not None else None
            if live.host == req.host and held is not None:
                # The edge that holds the session asks again: a retry of its own claim, or its
                # proxy redeeming a placement made for another edge's relay. Same claim.
                self.book.extend(live, now)
                if not live.proxy_id:
                    live.proxy_id = req.proxy_id
                self.metrics.claims_total.labels("engine").inc()
                return self._engine_grant(live, held, ttl)
            if live.host != req.host:
                return self._relay(req, live.host, now, ttl)
            # Its engine is no longer in any heartbeat: that session cannot be served from
            # here any more, so the content is placed afresh.
            self.book.release(live.id)
        try:
            host, engine = choose(
                self.fleet,
                self.book,
                req.host,
                now,
                lambda h: self.relay_url(h) is not None,
                self.rng,
                avoid,
            )
        except NoPlacement as exc:
            code, message = exc.code, exc.message
            if self.warming_up():
                code, message = "warming_up", f"central is rebuilding its fleet view ({message})"
            self.metrics.claims_total.labels("rejected").inc()
            return ErrorDetail(
                code=code, message=message, retry_after_s=self.settings.claim_retry_after_s
            )
        same = host.name == req.host
        claim = self.book.reserve(
            kind="engine",
            content_key=req.content_key,
            host=host.name,
            asked_by=req.host,
            proxy_id=req.proxy_id if same else "",
            now=now,
            engine_id=engine.id,
        )
        self.changed()
        if same:
            self.metrics.claims_total.labels("engine").inc()
            return self._engine_grant(claim, engine, ttl)
        # Engines listen only on their own host: the other edge's proxy will claim this content,
        # find this reservation and serve it; the asking edge relays from that proxy.
        return self._relay(req, host.name, now, ttl)

    @staticmethod
    def _engine_grant(claim: Claim, engine: Engine, ttl: float) -> ClaimGrant:
        ref = EngineRef(id=engine.id, host=claim.host, endpoint=engine.report.endpoint)
        return ClaimGrant(kind="engine", claim_id=claim.id, ttl_s=ttl, engine=ref)

    def _relay(
        self, req: ClaimRequest, from_host: str, now: float, ttl: float
    ) -> ClaimGrant | ErrorDetail:
        url = self.relay_url(from_host)
        if url is None:
            self.metrics.claims_total.labels("rejected").inc()
            return ErrorDetail(
                code="no_relay_route",
                message=f"the content is live on {from_host}, whose proxy URL is not known yet",
                retry_after_s=self.settings.claim_retry_after_s,
            )
        relay = self.book.reserve(
            kind="relay",
            content_key=req.content_key,
            host=req.host,
            asked_by=req.host,
            proxy_id=req.proxy_id,
            now=now,
            relay_from=from_host,
        )
        self.metrics.claims_total.labels("relay").inc()
        self.changed()
        return ClaimGrant(
            kind="relay",
            claim_id=relay.id,
            ttl_s=ttl,
            relay=RelayRef(host=from_host, proxy_url=url),
        )

    def release(self, claim_id: str) -> Claim | None:
        claim = self.book.release(claim_id)
        if claim is not None:
            self.changed()
        return claim

    # --- events ------------------------------------------------------------------------------

    def apply_events(self, batch: EventBatch) -> EventBatchResult:
        results: list[EventResult] = []
        memory = self.registry.events
        for ev in batch.events:
            if memory.seen(ev.event_id):
                results.append(EventResult(event_id=ev.event_id, status="duplicate"))
                self.metrics.events_total.labels("duplicate").inc()
                continue
            error = self._apply(batch.proxy_id, ev)
            if error is None:
                memory.remember(ev.event_id)
                self.history.event(
                    {
                        "event_id": ev.event_id,
                        "proxy_id": batch.proxy_id,
                        "type": ev.type,
                        "stream_id": ev.stream_id,
                        "at": _aware(ev.at),
                        "payload": ev.model_dump(mode="json"),
                    }
                )
                results.append(EventResult(event_id=ev.event_id, status="accepted"))
                self.metrics.events_total.labels("accepted").inc()
            else:
                results.append(EventResult(event_id=ev.event_id, status="error", error=error))
                self.metrics.events_total.labels("error").inc()
        self.changed()
        return EventBatchResult(results=results)

    def _proxy_host(self, proxy_id: str, fallback: str | None) -> str:
        if fallback:
            return fallback
        proxy = self.registry.proxies.get(proxy_id)
        return proxy.host if proxy else ""

    def _apply(self, proxy_id: str, ev: StreamEvent) -> ErrorDetail | None:
        stream = self.registry.streams.get(ev.stream_id)
        if ev.type == "stream_started":
            if stream is None:
                if not ev.content_key:
                    return ErrorDetail(
                        code="missing_content_key",
                        message="stream_started needs the content_key of the new stream",
                    )
                stream = Stream(
                    stream_id=ev.stream_id,
                    proxy_id=proxy_id,
                    host=self._proxy_host(proxy_id, ev.host),
                    content_key=ev.content_key,
                    started_at=_aware(ev.at),
                    source="adopted",
                    viewers=ev.viewers or 0,
                    infohash=ev.infohash,
                )
                self.registry.streams[ev.stream_id] = stream
                self._attach(stream, ev.claim_id, ev.engine_id)
                self.history.session_started(self._session_row(stream))
            elif ev.infohash and not stream.infohash:
                stream.infohash = ev.infohash
                self._attach(stream, stream.claim_id, stream.engine_id)
            return None
        if stream is None:
            # Never guess: an unknown stream id is this event's error and touches nothing else.
            return ErrorDetail(
                code="unknown_stream", message=f"no live stream {ev.stream_id!r} is known"
            )
        if ev.type == "viewers":
            if ev.viewers is None:
                return ErrorDetail(code="missing_viewers", message="a viewers event needs viewers")
            stream.viewers = ev.viewers
            stream.peak_viewers = max(stream.peak_viewers, ev.viewers)
            return None
        self._end(stream, ev.reason or "ended", _aware(ev.at))
        return None

    def _attach(self, stream: Stream, claim_id: str | None, engine_id: str | None) -> None:
        """Link a stream to its claim, adopting one when central has none (after a restart)."""
        now = self.clock()
        claim = self.book.claims.get(claim_id) if claim_id else None
        if claim is None and engine_id:
            existing = self.book.for_content(stream.content_key, now)
            if existing is not None and existing.engine_id == engine_id:
                claim = existing
            else:
                engine_host = self.fleet.engine_host.get(engine_id, stream.host)
                claim = self.book.reserve(
                    kind="engine",
                    content_key=stream.content_key,
                    host=engine_host,
                    asked_by=stream.host,
                    proxy_id=stream.proxy_id,
                    now=now,
                    engine_id=engine_id,
                    confirmed=True,
                    claim_id=claim_id,
                )
        if claim is None:
            stream.source = "relay" if engine_id is None else stream.source
            return
        self.book.confirm(claim, stream.stream_id)
        if stream.infohash:
            self.book.alias(claim, f"infohash:{stream.infohash.lower()}")
        stream.claim_id = claim.id
        stream.engine_id = claim.engine_id
        if stream.source == "adopted" and claim_id == claim.id:
            stream.source = "central" if claim.kind == "engine" else "relay"

    def _end(self, stream: Stream, reason: str, at: datetime) -> None:
        self.registry.streams.pop(stream.stream_id, None)
        if stream.claim_id is not None:
            claim = self.book.claims.get(stream.claim_id)
            if claim is not None and claim.stream_id in (None, stream.stream_id):
                self.book.release(claim.id)
        self.history.session_updated(
            stream.stream_id,
            {"ended_at": at, "end_reason": reason, "peak_viewers": stream.peak_viewers},
        )

    @staticmethod
    def _session_row(stream: Stream) -> dict[str, object]:
        return {
            "stream_id": stream.stream_id,
            "proxy_id": stream.proxy_id,
            "host": stream.host,
            "content_key": stream.content_key,
            "infohash": stream.infohash,
            "claim_id": stream.claim_id,
            "engine_id": stream.engine_id,
            "source": stream.source,
            "started_at": stream.started_at,
            "peak_viewers": stream.peak_viewers,
        }

    # --- proxy snapshots (anti-entropy) ------------------------------------------------------

    def snapshot(self, proxy_id: str, snap: ProxySnapshot) -> SnapshotOutcome:
        now = self.clock()
        self.registry.proxies[proxy_id] = Proxy(proxy_id, snap.host, snap.url, now)
        self.registry.proxy_url_by_host[snap.host] = snap.url
        listed = {ls.stream_id for ls in snap.streams}
        ended = 0
        for stream in self.registry.of_proxy(proxy_id):
            if stream.stream_id not in listed:
                self._end(stream, "absent_from_snapshot", datetime.now(UTC))
                ended += 1
        added = 0
        for ls in snap.streams:
            known = self.registry.streams.get(ls.stream_id)
            if known is None:
                stream = Stream(
                    stream_id=ls.stream_id,
                    proxy_id=proxy_id,
                    host=snap.host,
                    content_key=ls.content_key,
                    started_at=_aware(ls.started_at),
                    source=ls.source,
                    viewers=ls.viewers,
                    peak_viewers=ls.viewers,
                    infohash=ls.infohash,
                )
                self.registry.streams[ls.stream_id] = stream
                self._attach(stream, ls.claim_id, ls.engine_id)
                stream.source = ls.source
                self.history.session_started(self._session_row(stream))
                added += 1
            else:
                known.viewers = ls.viewers
                known.peak_viewers = max(known.peak_viewers, ls.viewers)
                if known.claim_id is None and (ls.claim_id or ls.engine_id):
                    self._attach(known, ls.claim_id, ls.engine_id)
        self.changed()
        return SnapshotOutcome(streams=len(snap.streams), added=added, ended=ended)

    # --- periodic ----------------------------------------------------------------------------

    def sweep(self) -> None:
        """Expire unconfirmed claims and notice hosts going stale or lost."""
        now = self.clock()
        expired = self.book.expire(now)
        moved = bool(expired)
        for claim in expired:
            log.info("claim_expired", claim_id=claim.id, content_key=claim.content_key)
        moved = self._forget_lost_proxies(now) or moved
        for host in self.fleet.hosts.values():
            status = self.fleet.status(host, now)
            if status is not host.status_seen:
                log.warning("host_status", host=host.name, status=str(status))
                self.history.provisioning(
                    datetime.now(UTC), host.name, f"host_{status}", None, None
                )
                host.status_seen = status
                moved = True
        if moved:
            self.changed()

    def _forget_lost_proxies(self, now: float) -> bool:
        """A proxy that stopped snapshotting is gone with its streams (its edge died, or it
        lost central): relaying to it would fail, and its claims would pin engines forever.
        If it is alive after all, its next snapshot adds everything back."""
        limit = self.settings.proxy_lost_after_s
        gone = [p for p in self.registry.proxies.values() if now - p.last_snapshot >= limit]
        for proxy in gone:
            log.warning("proxy_lost", proxy_id=proxy.proxy_id, host=proxy.host)
            del self.registry.proxies[proxy.proxy_id]
            if self.registry.proxy_url_by_host.get(proxy.host) == proxy.url:
                del self.registry.proxy_url_by_host[proxy.host]
            for stream in self.registry.of_proxy(proxy.proxy_id):
                self._end(stream, "proxy_lost", datetime.now(UTC))
        return bool(gone)

    # --- operators ---------------------------------------------------------------------------

    def drain_host(self, name: str, drain: bool) -> Host:
        host = self.fleet.drain_host(name, drain)
        self.history.provisioning(
            datetime.now(UTC), name, "drain" if drain else "undrain", None, "operator"
        )
        self.changed()
        return host

    def drain_engine(self, engine_id: str, drain: bool) -> None:
        self.fleet.drain_engine(engine_id, drain)
        self.history.engine_drain(engine_id, drain, datetime.now(UTC))
        self.changed()

    def set_buffer(self, per_edge: int | None, fleet_max: int | None, host: str | None) -> None:
        if host is not None:
            self.fleet.host(host).buffer_target = per_edge
        elif per_edge is not None:
            self.per_edge = per_edge
        if fleet_max is not None:
            self.fleet_max = fleet_max
        self.changed()
