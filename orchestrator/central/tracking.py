"""Streams as the proxies report them: event batches and snapshots, linked to claims.

Events are applied one by one, idempotent by event id; an event about an unknown stream is that
event's error and never touches another stream. A ``stream_started`` for a known stream id
updates it: a warm standby announced again without ``standby`` was promoted, and its claim
becomes the content's claim (the same holds for a snapshot listing it so). Snapshots are the
anti-entropy: the full list of one proxy's live streams. Both adopt claims central does not
hold (after a restart of central, or for placements the agent made while central was away), so
the live view is rebuilt from them. A proxy is alive while it snapshots: one silent for
``proxy_lost_after_s`` (counted from its first event when it never snapshotted) is lost, and its
streams end with it (reason ``proxy_lost``), releasing their claims.

A snapshot is built before it is sent, and events travel separately, so one can arrive after
events that are newer than it. The rule, for a snapshot stamped ``taken_at``: a stream whose
``stream_started`` is at or after ``taken_at`` is not ended for being absent from it, and a
stream whose ``stream_ended`` (or the end a newer snapshot decided) is at or after ``taken_at``
is not adopted back by it. The next snapshot settles either. A snapshot without ``taken_at``
(an older proxy) is taken as current, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from acefleet import logs
from acefleet.wire import (
    ErrorDetail,
    EventBatch,
    EventBatchResult,
    EventResult,
    ProxySnapshot,
    StreamEvent,
)
from orchestrator.central.claim_book import ClaimBook
from orchestrator.central.history import History
from orchestrator.central.hosts import Fleet
from orchestrator.central.metrics import CentralMetrics
from orchestrator.central.streams import Proxy, Stream, StreamRegistry

log = logs.get(__name__)


def _aware(at: datetime) -> datetime:
    """Times without a zone are taken as UTC, so naive and aware ones can be compared."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _not_before(at: datetime | None, taken: datetime | None) -> bool:
    """Whether a start or end at ``at`` happened at or after a snapshot ``taken`` then (so the
    snapshot cannot know of it). Equal times count as after: either way it is then right not to
    end a started stream, and not to adopt an ended one."""
    return at is not None and taken is not None and at >= taken


@dataclass(slots=True, frozen=True)
class SnapshotOutcome:
    streams: int
    added: int
    ended: int


class StreamTracker:
    def __init__(
        self,
        fleet: Fleet,
        book: ClaimBook,
        registry: StreamRegistry,
        history: History,
        metrics: CentralMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.fleet = fleet
        self.book = book
        self.registry = registry
        self.history = history
        self.metrics = metrics
        self.clock = clock
        # Proxy-clock times of starts and ends, to order snapshots against. Why not central's
        # own receive times: a snapshot's taken_at is on the proxy's clock, and comparing it
        # with central's would make the rule depend on the two hosts' clock skew. The events'
        # ``at`` come from the very clock (and process) that stamps taken_at, so only the
        # proxy's own ordering matters. Why not a sequence number: it restarts with the proxy
        # (same proxy id), so a restarted proxy's first snapshot would look older than its
        # previous incarnation's streams and not end them; wall-clock time keeps growing across
        # restarts. A forward step of the proxy's clock misorders nothing; a backward one can
        # misorder a snapshot and an event that straddle it (within the step), which costs at
        # worst what the rule prevents, until the next snapshot, or keeps a gone stream until
        # the clock is past its start again.
        self.started_by_proxy: dict[str, datetime] = {}
        self.ended_by_proxy: OrderedDict[str, datetime] = OrderedDict()

    def apply_events(self, batch: EventBatch) -> EventBatchResult:
        self._heard_of(batch)
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
        return EventBatchResult(results=results)

    def _heard_of(self, batch: EventBatch) -> None:
        """A proxy first heard of through events (central restarted, or its snapshots fail) is
        registered as if it had snapshotted now, without a relay URL: if no snapshot follows
        within ``proxy_lost_after_s`` it is lost like any other, and the streams its events
        started end instead of pinning their engines forever. Only snapshots keep it alive."""
        if batch.proxy_id in self.registry.proxies:
            return
        host = next((ev.host for ev in batch.events if ev.host), "")
        self.registry.proxies[batch.proxy_id] = Proxy(batch.proxy_id, host, "", self.clock())

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
                    standby=ev.standby,
                )
                self.registry.streams[ev.stream_id] = stream
                self.started_by_proxy[ev.stream_id] = _aware(ev.at)
                self._attach(stream, ev.claim_id, ev.engine_id)
                self.history.session_started(self._session_row(stream))
            else:
                # first known from a snapshot: a still older snapshot must not end it either
                self.started_by_proxy.setdefault(ev.stream_id, _aware(ev.at))
                if stream.standby and not ev.standby:
                    self._promote(stream)
                if ev.infohash and not stream.infohash:
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
            stream.set_viewers(ev.viewers)
            return None
        self._end(stream, ev.reason or "ended", _aware(ev.at))
        self._ended_at(stream.stream_id, _aware(ev.at))
        return None

    def _attach(self, stream: Stream, claim_id: str | None, engine_id: str | None) -> None:
        """Link a stream to its claim, adopting one when central has none (after a restart)."""
        now = self.clock()
        claim = self.book.claims.get(claim_id) if claim_id else None
        if claim is None and engine_id:
            existing = self.book.for_content(stream.content_key, now)
            if existing is not None and existing.engine_id == engine_id and not stream.standby:
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
                    standby=stream.standby,
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

    def _promote(self, stream: Stream) -> None:
        """A standby became its channel's primary: its claim is now the content's claim."""
        stream.standby = False
        claim = self.book.claims.get(stream.claim_id) if stream.claim_id else None
        if claim is not None and claim.stream_id in (None, stream.stream_id):
            self.book.promote(claim)
        log.info("standby_promoted", stream_id=stream.stream_id, content_key=stream.content_key)

    def _ended_at(self, stream_id: str, at: datetime) -> None:
        """Remember when (proxy clock) a stream ended, as long as event ids are remembered."""
        self.ended_by_proxy[stream_id] = at
        self.ended_by_proxy.move_to_end(stream_id)
        while len(self.ended_by_proxy) > self.registry.events.size:
            self.ended_by_proxy.popitem(last=False)

    def _end(self, stream: Stream, reason: str, at: datetime) -> None:
        self.registry.streams.pop(stream.stream_id, None)
        self.started_by_proxy.pop(stream.stream_id, None)
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
        taken = _aware(snap.taken_at) if snap.taken_at is not None else None
        ended = 0
        for stream in self.registry.of_proxy(proxy_id):
            if stream.stream_id in listed:
                continue
            if _not_before(self.started_by_proxy.get(stream.stream_id), taken):
                log.info("snapshot_older_than_start", stream_id=stream.stream_id)
                continue
            self._end(stream, "absent_from_snapshot", datetime.now(UTC))
            if taken is not None:
                self._ended_at(stream.stream_id, taken)
            ended += 1
        added = 0
        for ls in snap.streams:
            known = self.registry.streams.get(ls.stream_id)
            if known is None and _not_before(self.ended_by_proxy.get(ls.stream_id), taken):
                log.info("snapshot_older_than_end", stream_id=ls.stream_id)
                continue
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
                    standby=ls.standby,
                )
                stream.players = dict(ls.players)
                self.registry.streams[ls.stream_id] = stream
                self._attach(stream, ls.claim_id, ls.engine_id)
                stream.source = ls.source
                self.history.session_started(self._session_row(stream))
                added += 1
            else:
                known.set_viewers(ls.viewers)
                known.players = dict(ls.players)
                if known.standby and not ls.standby:
                    self._promote(known)  # the promotion's event was lost
                if known.claim_id is None and (ls.claim_id or ls.engine_id):
                    self._attach(known, ls.claim_id, ls.engine_id)
                # The proxy knows which step placed it; a stream first known from a queued
                # stream_started event (central was away) was only guessed (e.g. an agent claim
                # adopted as central's).
                known.source = ls.source
        return SnapshotOutcome(streams=len(snap.streams), added=added, ended=ended)

    def forget_lost_proxies(self, now: float, limit: float) -> bool:
        """A proxy that stopped snapshotting is gone with its streams (its edge died, or it
        lost central): relaying to it would fail, and its claims would pin engines forever.
        If it is alive after all, its next snapshot adds everything back."""
        gone = [p for p in self.registry.proxies.values() if now - p.last_snapshot >= limit]
        for proxy in gone:
            log.warning("proxy_lost", proxy_id=proxy.proxy_id, host=proxy.host)
            del self.registry.proxies[proxy.proxy_id]
            if proxy.url and self.registry.proxy_url_by_host.get(proxy.host) == proxy.url:
                del self.registry.proxy_url_by_host[proxy.host]
            for stream in self.registry.of_proxy(proxy.proxy_id):
                self._end(stream, "proxy_lost", datetime.now(UTC))
        return bool(gone)
