"""The fallback chain: central, then the local agent, then the static engine list.

Each step has its own short timeout and breaker (inside its placer). A step that cannot answer
(unreachable, breaker open, central still rebuilding its view) raises :class:`Unavailable` and
the next step is asked; a step that answers "no" for the whole fleet (central: every engine is
busy) ends the chain, because a lower step would only bypass central's one-session-per-channel
rule. Which step placed each upstream is counted in ``acefleet_proxy_placements_total{source}``.

A failover avoids what just failed: an engine released as ``engine_failed`` is named in every
claim's avoid list for ``failed_engine_avoid_s``, so central and the agent place elsewhere.
Releases and confirms go back to the step that placed (a relay belongs to central). Every live
engine session (the agent's own claims included) is also reported to the local agent when it
goes live and when it ends, so the agent polls its stats whatever placed it, and counts the
engine busy even if the claim behind the session is lost (``SessionReporter``). A warm standby
(``place_standby``) is asked down the same chain, avoiding the primary's engine as well.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from acefleet import logs
from proxy.placement import Placement, PlacementError, Placer, Source, Unavailable

log = logs.get(__name__)

_AVOID_MAX = 64  # ClaimRequest.avoid takes at most 100 entries


class Step(Protocol):
    """A placer that can be told which engines to avoid (those that just failed), and that hears
    when the upstream on one of its placements is live (``confirm``)."""

    async def place(self, content_key: str, avoid: frozenset[str] = frozenset()) -> Placement: ...

    async def place_standby(self, content_key: str, avoid: frozenset[str]) -> Placement: ...

    async def release(self, placement: Placement, reason: str) -> None: ...

    def confirm(self, placement: Placement, stat_url: str | None) -> None: ...


class SessionReporter(Protocol):
    """The local agent, told about live engine sessions it did not place (must not block)."""

    def report_session(self, placement: Placement, stat_url: str) -> None: ...

    def end_session(self, placement: Placement) -> None: ...


class PlainStep:
    """A placer that knows nothing of engines to avoid (the static list) as a chain step."""

    def __init__(self, placer: Placer) -> None:
        self.placer = placer

    async def place(self, content_key: str, avoid: frozenset[str] = frozenset()) -> Placement:
        return await self.placer.place(content_key)

    async def place_standby(self, content_key: str, avoid: frozenset[str]) -> Placement:
        return await self.placer.place_standby(content_key, avoid)

    async def release(self, placement: Placement, reason: str) -> None:
        await self.placer.release(placement, reason)

    def confirm(self, placement: Placement, stat_url: str | None) -> None:
        self.placer.confirm(placement, stat_url)


class PlacementChain:
    def __init__(
        self,
        steps: Sequence[tuple[str, Step]],
        registry: CollectorRegistry,
        *,
        avoid_s: float,
        sessions: SessionReporter | None = None,
    ) -> None:
        self.steps = list(steps)
        self.sessions = sessions
        # An engine whose session just failed is not asked for again this long (so a failover
        # goes elsewhere): setting failed_engine_avoid_s.
        self.avoid_s = avoid_s
        self.placements = Counter(
            "acefleet_proxy_placements",
            "Upstream placements by the step that made them (central, relay, agent, static)",
            ["source"],
            registry=registry,
        )
        self.misses = Counter(
            "acefleet_proxy_placement_fallbacks",
            "Placement steps skipped because they could not answer",
            ["step"],
            registry=registry,
        )
        self.failed: OrderedDict[str, float] = OrderedDict()  # engine id → when it failed

    def avoid(self) -> frozenset[str]:
        now = time.monotonic()
        while self.failed and next(iter(self.failed.values())) < now - self.avoid_s:
            self.failed.popitem(last=False)
        return frozenset(self.failed)

    async def place(self, content_key: str) -> Placement:
        return await self._ask(content_key, self.avoid(), standby=False)

    async def place_standby(self, content_key: str, avoid: frozenset[str]) -> Placement:
        """A warm standby's source: asked down the chain like ``place``, on none of the engines
        in ``avoid`` (the primary's) nor of those that just failed."""
        return await self._ask(content_key, avoid | self.avoid(), standby=True)

    async def _ask(self, content_key: str, avoid: frozenset[str], *, standby: bool) -> Placement:
        last: PlacementError | None = None
        for name, step in self.steps:
            try:
                if standby:
                    placement = await step.place_standby(content_key, avoid)
                else:
                    placement = await step.place(content_key, avoid)
            except Unavailable as exc:
                self.misses.labels(name).inc()
                log.info("placement_step_unavailable", step=name, code=exc.code, key=content_key)
                last = exc
                continue
            self.placements.labels(placement.source).inc()
            log.info(
                "placed",
                key=content_key,
                source=placement.source,
                where=placement.where,
                claim_id=placement.claim_id,
                standby=standby,
            )
            return placement
        if last is None:
            raise PlacementError("no_placer", "no placement step is configured")
        raise PlacementError(last.code, last.message, retry_after_s=last.retry_after_s)

    async def release(self, placement: Placement, reason: str) -> None:
        if reason == "engine_failed" and placement.engine_id:
            self.failed[placement.engine_id] = time.monotonic()
            self.failed.move_to_end(placement.engine_id)
            while len(self.failed) > _AVOID_MAX:
                self.failed.popitem(last=False)
        if self.sessions is not None:
            self.sessions.end_session(placement)
        step = self._owner(placement.source)
        if step is not None:
            await step.release(placement, reason)

    def confirm(self, placement: Placement, stat_url: str | None) -> None:
        """The upstream on ``placement`` is live: the step that placed it hears it (the agent
        confirms its claim, which expires otherwise, with the session's ``stat_url``); a session
        and every engine session is reported to the agent. Must not block."""
        step = self._owner(placement.source)
        if step is not None:
            step.confirm(placement, stat_url)
        # the agent's own claims too: a claim whose confirm is lost must not free the engine
        if self.sessions is not None and stat_url and placement.engine:
            self.sessions.report_session(placement, stat_url)

    def _owner(self, source: Source) -> Step | None:
        wanted = "central" if source == "relay" else source
        for name, step in self.steps:
            if name == wanted:
                return step
        return None
