"""The static step: a static engine list with per-engine stream caps and get_status probes.

This placer needs nothing but the engines themselves, so it keeps serving when central and the
agent are down (and is the whole of placement in standalone mode). It picks rested engines
first, then the least loaded. An engine whose session failed is picked last for
``failed_static_avoid_s``, but still used when it is the only one left (one flaky engine beats
none). A warm standby (``place_standby``) goes on another engine than the ones named, or
nowhere.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from acefleet import logs
from proxy.engine_api import EngineClient
from proxy.placement import Placement, PlacementError
from proxy.settings import ProxySettings, parse_engine

log = logs.get(__name__)

# Until acefleet-proxy's cli passes failed_static_avoid_s, the setting's default applies.
_FAILED_AVOID_S: float = ProxySettings.model_fields["failed_static_avoid_s"].default


@dataclass
class StaticEngine:
    endpoint: str
    cap: int
    active: int = 0
    healthy: bool = True  # until a probe says otherwise: serve first, ask later
    failures: int = 0
    penalised_until: float = 0.0


class StaticPlacer:
    def __init__(
        self,
        entries: list[str],
        *,
        default_cap: int,
        engine: EngineClient,
        probe_interval_s: float,
        probe_timeout_s: float,
        probe_failures: int,
        failed_avoid_s: float = _FAILED_AVOID_S,
    ) -> None:
        self.engines = [StaticEngine(*parse_engine(e, default_cap)) for e in entries]
        self.engine = engine
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.probe_failures = probe_failures
        # An engine whose session just failed is picked last this long: failed_static_avoid_s.
        self.failed_avoid_s = failed_avoid_s
        self._turn = 0

    async def place(self, content_key: str) -> Placement:
        if not self.engines:
            raise PlacementError("no_engines", "no engines are configured", retry_after_s=30)
        free = [e for e in self.engines if e.healthy and e.active < e.cap]
        if not free:
            healthy = any(e.healthy for e in self.engines)
            raise PlacementError(
                "no_capacity" if healthy else "no_healthy_engine",
                "every engine is at its stream cap"
                if healthy
                else "no engine answers its health probe",
            )
        return self._take(free)

    async def place_standby(self, content_key: str, avoid: frozenset[str]) -> Placement:
        """A second engine for a warm standby: another listed engine with room, none in
        ``avoid`` (the primary's; a static engine's id is its endpoint). A standby on the
        primary's own engine would die with it, so there is no fallback to it."""
        free = [
            e for e in self.engines if e.healthy and e.active < e.cap and e.endpoint not in avoid
        ]
        if not free:
            raise PlacementError(
                "no_standby_capacity",
                "no other healthy engine with room for a standby session",
                retry_after_s=10,
            )
        return self._take(free)

    def _take(self, free: list[StaticEngine]) -> Placement:
        # rested engines first, then the least loaded; rotate among equals
        now = time.monotonic()
        self._turn += 1
        order = {
            id(e): (e.penalised_until > now, e.active, (i - self._turn) % len(free))
            for i, e in enumerate(free)
        }
        chosen = min(free, key=lambda e: order[id(e)])
        chosen.active += 1
        return Placement(source="static", engine=chosen.endpoint, engine_id=chosen.endpoint)

    def confirm(self, placement: Placement, stat_url: str | None) -> None:
        """A static engine has no claim to confirm: the slot was counted when it was placed."""

    async def release(self, placement: Placement, reason: str) -> None:
        for e in self.engines:
            if e.endpoint == placement.engine:
                e.active = max(e.active - 1, 0)
                if reason == "engine_failed":
                    e.penalised_until = time.monotonic() + self.failed_avoid_s
                return

    async def probe_once(self) -> None:
        results = await asyncio.gather(
            *(self.engine.probe(e.endpoint, self.probe_timeout_s) for e in self.engines)
        )
        for e, ok in zip(self.engines, results, strict=True):
            e.failures = 0 if ok else e.failures + 1
            healthy = e.failures < self.probe_failures
            if healthy != e.healthy:
                log.warning("engine_health_changed", engine=e.endpoint, healthy=healthy)
            e.healthy = healthy

    async def run_probes(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.probe_interval_s)

    def status(self) -> list[dict[str, object]]:
        return [
            {"endpoint": e.endpoint, "cap": e.cap, "active": e.active, "healthy": e.healthy}
            for e in self.engines
        ]
