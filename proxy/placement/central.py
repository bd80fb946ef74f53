"""The central step: claims from acefleet-central, one ``POST /v1/claims`` per new upstream.

Central reserves the engine (or names the edge to relay from) before it answers, so two proxies
never share a slot and a channel has one engine session fleet-wide. A claim is confirmed by the
``stream_started`` event (``proxy/control/event_queue.py``) and released here, or by
``stream_ended``. Central answering ``warming_up``/``no_hosts`` lets the chain ask the agent;
any other 503 (the fleet is full) ends the chain. An edge a relay just failed from is named in
the claim's avoid list for that content for ``failed_relay_avoid_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import NoReturn

import httpx

from acefleet import logs
from acefleet.wire import ClaimGrant
from proxy.control.peer import ControlPeer
from proxy.placement import Placement, PlacementError, Unavailable
from proxy.placement.circuit import Breaker
from proxy.placement.claim_call import ClaimClient
from proxy.placement.relay import proxy_base, relay_url

log = logs.get(__name__)

# Central's answers that mean "I cannot decide now" rather than "the fleet is full": the next
# step (the local agent) may still serve the viewer. standby_central: the control VIP is moving
# and the address still reaches the old holder, which no longer decides (docs/standby-central.md).
_NOT_DECIDING = frozenset({"warming_up", "no_hosts", "standby_central"})


class CentralPlacer(ClaimClient):
    def __init__(
        self,
        peer: ControlPeer,
        breaker: Breaker,
        *,
        relay_avoid_s: float,
        relay_token: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(peer, breaker)
        self.relay_token = relay_token  # content key → the edge token a relay carries
        # A failed relay source is avoided for its content this long (a failover's few quick
        # retries): setting failed_relay_avoid_s.
        self.relay_avoid_s = relay_avoid_s
        self.content_of: dict[str, str] = {}  # claim id → content key, until released
        self.relay_from: dict[str, str] = {}  # relay claim id → the edge relayed from
        # (content key, edge) → when relaying that content from that edge failed
        self.failed_relays: dict[tuple[str, str], float] = {}
        # content key → its release in flight: a failover must not be handed the same claim back
        self.releasing: dict[str, asyncio.Task[None]] = {}

    async def place(self, content_key: str, avoid: frozenset[str] = frozenset()) -> Placement:
        pending = self.releasing.get(content_key)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        if not self.breaker.allow():
            raise Unavailable("central_breaker_open", "central failed recently; not asked")
        resp = await self._claim(content_key, avoid | self._failed_relays(content_key))
        if resp.status_code == 200:
            self.breaker.success()
            return self._placement(content_key, self._grant(resp))
        return self._refused(resp)

    def _refused(self, resp: httpx.Response) -> NoReturn:
        """Raise what a refused claim means: the fleet is full (the chain ends) or central
        cannot decide now (the next step is asked)."""
        code, message, retry = self._error_of(resp)
        if resp.status_code == 503 and code not in _NOT_DECIDING:
            self.breaker.success()  # central is fine; the fleet is full
            raise PlacementError(code, f"central: {message}", retry_after_s=retry)
        if resp.status_code >= 500:
            self.breaker.failure()
        log.warning("central_claim_refused", status=resp.status_code, code=code, error=message)
        raise Unavailable(code, f"central: {message}", retry_after_s=retry)

    async def place_standby(self, content_key: str, avoid: frozenset[str]) -> Placement:
        """A warm standby's engine: a separate engine claim on this edge's host, never a relay
        and never on an engine in ``avoid``. Central answering ``no_standby_capacity`` (or any
        other "full" 503) ends the chain like a full fleet does for ``place``."""
        if not self.breaker.allow():
            raise Unavailable("central_breaker_open", "central failed recently; not asked")
        resp = await self._claim(content_key, avoid, standby=True)
        if resp.status_code == 200:
            self.breaker.success()
            grant = self._grant(resp)
            if grant.kind != "engine":
                # the claim (if any) expires unconfirmed; a relay standby would loop
                raise Unavailable(
                    "central_bad_answer", "central granted a standby that is no engine"
                )
            return self._placement(content_key, grant)
        return self._refused(resp)

    def _placement(self, content_key: str, grant: ClaimGrant) -> Placement:
        self.content_of[grant.claim_id] = content_key
        if grant.kind == "relay" and grant.relay is not None:
            self.relay_from[grant.claim_id] = grant.relay.host
            return Placement(
                source="relay",
                url=relay_url(
                    grant.relay.proxy_url,
                    content_key,
                    self.relay_token(content_key) if self.relay_token else None,
                ),
                claim_id=grant.claim_id,
                relay_from=proxy_base(grant.relay.proxy_url),
            )
        if grant.engine is None:
            raise Unavailable("central_bad_answer", "central granted an engine claim without one")
        return Placement(
            source="central",
            engine=grant.engine.endpoint,
            claim_id=grant.claim_id,
            engine_id=grant.engine.id,
        )

    async def release(self, placement: Placement, reason: str) -> None:
        claim_id = placement.claim_id
        if claim_id is None:
            return
        key = self.content_of.pop(claim_id, None)
        edge = self.relay_from.pop(claim_id, None)
        if edge is not None and key is not None and reason == "engine_failed":
            self.failed_relays[(key, edge)] = time.monotonic()
        task = asyncio.ensure_future(self._delete(claim_id))
        if key is not None:
            self.releasing[key] = task
        try:
            await task
        finally:
            if key is not None and self.releasing.get(key) is task:
                del self.releasing[key]

    def confirm(self, placement: Placement, stat_url: str | None) -> None:
        """Nothing to do: central confirms its claim when the ``stream_started`` event (claim id
        inside) reaches it through the event queue (the chain reports ``stat_url`` to the
        agent)."""

    def _failed_relays(self, content_key: str) -> frozenset[str]:
        """Edges this proxy could not relay ``content_key`` from just now: central hands the
        content over to this edge (only that content: other channels there may be fine)."""
        now = time.monotonic()
        for entry, at in list(self.failed_relays.items()):
            if now - at > self.relay_avoid_s:
                del self.failed_relays[entry]
        return frozenset(f"edge:{edge}" for key, edge in self.failed_relays if key == content_key)

    async def _delete(self, claim_id: str) -> None:
        # Best effort: an unconfirmed claim expires by itself and a confirmed one is released
        # by the stream_ended event, which the event queue delivers once central is back.
        if not self.breaker.allow():
            return
        try:
            resp = await self.peer.http.delete(
                self.peer.url(f"/v1/claims/{claim_id}"),
                headers=self.peer.headers,
                timeout=self.peer.timeout_s,
            )
        except httpx.HTTPError as exc:
            self.breaker.failure()
            log.info("central_release_failed", claim_id=claim_id, error=type(exc).__name__)
            return
        self.breaker.success()
        if resp.status_code not in (204, 404):
            log.warning("central_release_refused", claim_id=claim_id, status=resp.status_code)
