"""Stream events to central in batches, from a bounded queue, with retries.

The data path only appends to a deque (never awaits, never blocks). A background task sends up
to ``batch_max`` events per ``POST /v1/events``; central applies them idempotently by event id,
so a batch whose answer was lost is simply sent again. While central is away events wait; when
the queue is full the oldest event is dropped and counted (the proxy's snapshot repairs central's
view of live streams anyway; the events carry the history).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from acefleet import logs
from acefleet.wire import EventBatch, EventBatchResult, EventResult, StreamEvent
from proxy.control.peer import ControlPeer
from proxy.placement import StreamRecord

log = logs.get(__name__)

_BACKOFF_MAX_S = 5.0


class EventMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "acefleet_proxy_events_sent", "Events central accepted", ["status"], registry=registry
        )
        self.dropped = Counter(
            "acefleet_proxy_events_dropped",
            "Events dropped because the queue was full (oldest first)",
            registry=registry,
        )
        self.failures = Counter(
            "acefleet_proxy_event_batch_failures",
            "Event batches central did not take (retried)",
            registry=registry,
        )
        self.queued = Gauge(
            "acefleet_proxy_events_queued", "Events waiting to be sent", registry=registry
        )


class BatchedEventSink:
    """An :class:`~proxy.placement.EventSink` that ships events to central."""

    def __init__(
        self,
        central: ControlPeer,
        *,
        queue_max: int,
        batch_max: int,
        flush_s: float,
        registry: CollectorRegistry,
    ) -> None:
        self.central = central
        self.url = central.url("/v1/events")
        self.queue: deque[StreamEvent] = deque()
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.flush_s = flush_s
        self.metrics = EventMetrics(registry)
        self.wake = asyncio.Event()
        self.connected = True
        self.on_reconnect: Callable[[], None] | None = None
        self.task: asyncio.Task[None] | None = None

    # --- EventSink ---------------------------------------------------------------------------
    def stream_started(self, stream: StreamRecord) -> None:
        placement = stream.placement
        self._put(
            stream,
            "stream_started",
            content_key=stream.content_key,
            infohash=stream.infohash,
            claim_id=placement.claim_id,
            engine_id=placement.engine_id,
            host=self.central.host,
            viewers=stream.viewers,
            standby=stream.standby,
        )

    def stream_ended(self, stream: StreamRecord, reason: str) -> None:
        self._put(stream, "stream_ended", content_key=stream.content_key, reason=reason[:100])

    def viewers_changed(self, stream: StreamRecord) -> None:
        self._put(stream, "viewers", viewers=stream.viewers)

    def _put(self, stream: StreamRecord, kind: str, **fields: object) -> None:
        event = StreamEvent.model_validate(
            {
                "event_id": uuid.uuid4().hex,
                "type": kind,
                "stream_id": stream.stream_id,
                "at": datetime.now(UTC),
                **fields,
            }
        )
        if len(self.queue) >= self.queue_max:
            self.queue.popleft()
            self.metrics.dropped.inc()
        self.queue.append(event)
        self.metrics.queued.set(len(self.queue))
        self.wake.set()

    # --- sending -----------------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        backoff = self.flush_s
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
            # Let a burst of events gather into one batch.
            await asyncio.sleep(self.flush_s)
            while self.queue:
                if await self.send_batch():
                    backoff = self.flush_s
                else:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def send_batch(self) -> bool:
        batch = [self.queue[i] for i in range(min(self.batch_max, len(self.queue)))]
        # without defaults: a central that predates a field (standby) still takes the batch
        body = EventBatch(proxy_id=self.central.proxy_id, events=batch).model_dump(
            mode="json", exclude_defaults=True
        )
        try:
            resp = await self.central.http.post(
                self.url, json=body, headers=self.central.headers, timeout=self.central.timeout_s
            )
            resp.raise_for_status()
            result = EventBatchResult.model_validate_json(resp.content)
        except (httpx.HTTPError, ValidationError) as exc:
            self.metrics.failures.inc()
            if self.connected:
                log.warning("events_not_sent", error=type(exc).__name__, queued=len(self.queue))
            self.connected = False
            return False
        self._done(batch, result.results)
        if not self.connected:
            self.connected = True
            log.info("events_flowing_again", queued=len(self.queue))
            if self.on_reconnect is not None:
                self.on_reconnect()
        return True

    def _done(self, batch: Sequence[StreamEvent], results: Sequence[EventResult]) -> None:
        sent = {e.event_id for e in batch}
        for r in results:
            self.metrics.sent.labels(r.status).inc()
            if r.status == "error":
                # Not retryable (e.g. viewers of a stream central forgot): the snapshot repairs it.
                log.info("event_refused", event_id=r.event_id, error=str(r.error))
        # The queue may have dropped some of the batch meanwhile; pop only what was sent.
        while self.queue and self.queue[0].event_id in sent:
            self.queue.popleft()
        self.metrics.queued.set(len(self.queue))

    async def aclose(self, flush_timeout_s: float) -> None:
        """Send what is queued (bounded in time), then stop."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_timeout_s):
                while self.queue and await self.send_batch():
                    pass
