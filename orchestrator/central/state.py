"""Central's live state and the operations on it: heartbeats, claims, events, snapshots, drain.

All methods are synchronous: they run on the event loop one at a time, which is what makes a
claim atomic. History rows are handed to the write-behind queue and never awaited here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from acefleet import logs
from acefleet.wire import (
    ClaimGrant,
    ClaimRequest,
    Directive,
    EngineRef,
    ErrorDetail,
    EventBatch,
    EventBatchResult,
    Heartbeat,
    HeartbeatReply,
    ProxySnapshot,
    RelayRef,
)
from orchestrator.central import warm_buffer
from orchestrator.central.claim_book import Claim, ClaimBook
from orchestrator.central.engine_stats import StatsWatch
from orchestrator.central.history import History
from orchestrator.central.hosts import Engine, Fleet, Host, HostStatus
from orchestrator.central.metrics import CentralMetrics
from orchestrator.central.placement_policy import HostFits, NoPlacement, choose, choose_standby
from orchestrator.central.settings import CentralSettings
from orchestrator.central.streams import StreamRegistry
from orchestrator.central.tracking import SnapshotOutcome, StreamTracker

if TYPE_CHECKING:
    from orchestrator.central.live_frame import HostPart

log = logs.get(__name__)
# Retry hint of a claim refused while its content's proxy has not reported since a restart: the
# proxies snapshot at once when central answers again, so this is about one round trip away.
REBUILD_RETRY_S = 1.0


class HostMismatch(ValueError):
    """The host in a heartbeat body differs from the one in its URL."""


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
        self.fleet = Fleet(settings.stale_after_s, settings.lost_after_s, settings.forget_after_s)
        self.book = ClaimBook(settings.claim_ttl_s)
        self.fits = HostFits()  # each host's offer to placement and the fleet summary
        self.registry = StreamRegistry(settings.event_id_memory)
        self.tracker = StreamTracker(self.fleet, self.book, self.registry, history, metrics, clock)
        self.stats = StatsWatch(settings.degraded_after_s)
        self.per_edge = settings.warm_buffer_per_edge
        self.fleet_max = settings.fleet_max_engines
        # Hosts whose proxy has snapshotted since this start: the book holds their sessions.
        self.snapshotted: set[str] = set()
        # Content that was live when central last stopped (its history's open sessions) -> the
        # host whose proxy reported it; dropped per host when that proxy snapshots.
        self.unadopted: dict[str, str] = {}
        self.version = 0  # bumped on every change; live updates push when it moved
        self.frame_cache: tuple[int, str] | None = None  # (version, live-update frame JSON)
        # The dashboard frame's part of each host, rebuilt only when its inputs moved
        # (live_frame)
        self.frame_parts: dict[str, HostPart] = {}

    # --- status ----------------------------------------------------------------------------

    def warming_up(self) -> bool:
        return self.clock() - self.started < self.settings.warmup_s

    def rebuilding(self, host: str, now: float) -> bool:
        """Whether the sessions on ``host``'s engines may still be missing from the claim book:
        its proxy has not snapshotted since central started (which adopts them all), and a proxy
        that silent would not be counted as alive yet either (``proxy_lost_after_s``)."""
        if host in self.snapshotted:
            return False
        return now - self.started < max(self.settings.warmup_s, self.settings.proxy_lost_after_s)

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
        for report in hb.engines:
            self.stats.take(report.id, report.stats, now)
        for engine_id in gone:
            self.stats.forget(engine_id)
        if was is not None and was is not HostStatus.live:
            self.stats.resume(list(host.engines), now)
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
        if self.rebuilding(host.name, now):
            # Central has not heard this host's proxy since it started, so its book lacks that
            # proxy's sessions: an empty list would make the agent forget them (hand their
            # engines out again, reap them as idle). Echo the agent's own counts until then.
            for report in hb.engines:
                if report.streams > claimed.get(report.id, 0):
                    claimed[report.id] = report.streams
        return HeartbeatReply(
            interval_s=self.settings.heartbeat_interval_s,
            directives=directives,
            claimed=claimed,
            free_engines=self.buffer_per_edge(host),
        )

    def buffer_per_edge(self, host: Host) -> int:
        """Free engines wanted warm on ``host``: its operator override, else the fleet default."""
        return warm_buffer.target(host, self.per_edge)

    def _provision(self, host: Host, now: float) -> list[Directive]:
        p = warm_buffer.plan(
            host,
            self.fleet,
            self.book,
            per_edge=self.per_edge,
            fleet_max=self.fleet_max,
            now=now,
            window=warm_buffer.recent_window(self.settings.heartbeat_interval_s),
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
        if req.standby:
            return self._standby(req, now, ttl)
        live = self.book.for_content(req.content_key, now)
        avoid = frozenset(req.avoid)
        if live is not None and live.engine_id in avoid and live.host == req.host:
            # The asking proxy saw this claim's engine fail: its failover needs another engine.
            self.book.release(live.id)
            live = None
        if live is not None and live.host != req.host and f"edge:{live.host}" in avoid:
            # The asking proxy could not relay from that edge (its proxy died or is unreachable):
            # the content moves to the asker instead of being relayed from a dead edge again.
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
                    self.book.redeem(live, req.proxy_id)
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
                self.fits,
            )
        except NoPlacement as exc:
            return self._rejected(exc)
        if self._unadopted(req.content_key, now):
            return self._not_yet_adopted(req.content_key)
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

    def _unadopted(self, content_key: str, now: float) -> bool:
        """Whether ``content_key`` may still be live on an engine this central has not heard
        of: it was live when central last stopped and the proxy that served it has not
        snapshotted since (bounded like ``rebuilding``). Placing it now could start a second
        session of the channel on another engine."""
        host = self.unadopted.get(content_key)
        if host is None:
            return False
        if self.rebuilding(host, now):
            return True
        del self.unadopted[content_key]
        return False

    def _not_yet_adopted(self, content_key: str) -> ErrorDetail:
        """503 ``rebuilding``: not a code the proxies hand to their agent (a local placement
        would be the second session); they answer the viewer with a short Retry-After."""
        self.metrics.claims_total.labels("rejected").inc()
        return ErrorDetail(
            code="rebuilding",
            message=f"{content_key} was live before central restarted; waiting for the proxy "
            "that served it to report it",
            retry_after_s=REBUILD_RETRY_S,
        )

    def _rejected(self, exc: NoPlacement) -> ErrorDetail:
        """No engine fits: say why (while central warms up, that its view is still partial)."""
        code, message = exc.code, exc.message
        if self.warming_up():
            code, message = "warming_up", f"central is rebuilding its fleet view ({message})"
        self.metrics.claims_total.labels("rejected").inc()
        return ErrorDetail(
            code=code, message=message, retry_after_s=self.settings.claim_retry_after_s
        )

    def _standby(self, req: ClaimRequest, now: float, ttl: float) -> ClaimGrant | ErrorDetail:
        """A warm standby: a separate engine claim on the asking host, on no engine in
        ``avoid`` and none already carrying the content (its primary, another standby)."""
        avoid = frozenset(req.avoid) | self.book.engines_of(req.content_key)
        try:
            host, engine = choose_standby(self.fleet, self.book, req.host, now, self.rng, avoid)
        except NoPlacement as exc:
            return self._rejected(exc)
        claim = self.book.reserve(
            kind="engine",
            content_key=req.content_key,
            host=host.name,
            asked_by=req.host,
            proxy_id=req.proxy_id,
            now=now,
            engine_id=engine.id,
            standby=True,
        )
        self.changed()
        self.metrics.claims_total.labels("standby").inc()
        log.info("standby_claimed", content_key=req.content_key, engine=engine.id)
        return self._engine_grant(claim, engine, ttl)

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

    # --- events and snapshots -------------------------------------------------------------

    def apply_events(self, batch: EventBatch) -> EventBatchResult:
        result = self.tracker.apply_events(batch)
        self.changed()
        return result

    def snapshot(self, proxy_id: str, snap: ProxySnapshot) -> SnapshotOutcome:
        outcome = self.tracker.snapshot(proxy_id, snap)
        self.snapshotted.add(snap.host)
        if self.unadopted:  # that proxy told its whole truth: what it still serves is adopted
            self.unadopted = {k: h for k, h in self.unadopted.items() if h != snap.host}
        self.changed()
        return outcome

    # --- periodic ----------------------------------------------------------------------------

    def sweep(self) -> None:
        """Expire unconfirmed claims and notice hosts going stale or lost."""
        now = self.clock()
        expired = self.book.expire(now)
        moved = bool(expired)
        for claim in expired:
            log.info("claim_expired", claim_id=claim.id, content_key=claim.content_key)
        moved = self.tracker.forget_lost_proxies(now, self.settings.proxy_lost_after_s) or moved
        for host in self.fleet.forget_silent(now):
            self._forgotten(host)
            moved = True
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

    def _forgotten(self, host: Host) -> None:
        """A host lost for ``forget_after_s`` left the fleet view: its engines' stats go with it,
        and what was reserved on them but never started can no longer be served."""
        log.warning("host_forgotten", host=host.name, engines=len(host.engines))
        self.history.provisioning(datetime.now(UTC), host.name, "host_forgotten", None, None)
        self.fits.forget(host.name)
        for engine_id in host.engines:
            self.stats.forget(engine_id)
            for claim in self.book.pending_on_engine(engine_id):
                self.book.release(claim.id)

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
