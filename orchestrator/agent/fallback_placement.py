"""The agent's fallback placement rule: which engine of this host a proxy's local claim gets
(the proxy's fallback when central is away).

In order:

1. A drained host takes no claim (``draining``, 503).
2. Only claimable engines: healthy, not being removed, under ``stream_cap`` (``pool_state``);
   engines in the request's ``avoid`` are skipped (the proxy just saw their session fail, so
   its failover must land elsewhere).
3. None left → ``no_capacity`` (503, retry after ``reconcile_interval_s``); the pool is woken so
   it adds engines when the free buffer is gone.
   A warm standby (``standby``) also skips every engine already holding a claim or a reported
   session of the same content (its primary, another standby): ``no_standby_capacity`` when
   none is left.
4. The least loaded engine, then the one free the longest.
5. The claim is reserved in the same step, with no await between pick and reserve, so two
   claims never take the same last slot.
"""

from __future__ import annotations

from acefleet.wire import ClaimRequest
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.errors import AgentError
from orchestrator.agent.local_claims import Claim
from orchestrator.agent.pool_state import PoolState


def carrying(state: PoolState, content_key: str) -> set[str]:
    """Engines holding a local claim or a reported session of ``content_key``."""
    engines = {c.engine_id for c in state.claims.claims.values() if c.content_key == content_key}
    engines |= {
        s.engine_id for s in state.sessions.sessions.values() if s.content_key == content_key
    }
    return engines


def claim_engine(state: PoolState, req: ClaimRequest) -> tuple[Claim, Engine]:
    """Pick an engine for ``req`` and reserve a slot on it, or raise why none fits."""
    counted = state.metrics.claims
    if state.draining:
        counted.labels(result="draining").inc()
        raise AgentError(503, "draining", f"host {state.s.host} is drained")
    avoid = set(req.avoid)
    if req.standby:
        avoid |= carrying(state, req.content_key)
    candidates = [e for e in state.claimable() if e.id not in avoid]
    if not candidates:
        code = "no_standby_capacity" if req.standby else "no_capacity"
        counted.labels(result=code).inc()
        state.wake()
        raise AgentError(
            503,
            code,
            "no other free engine on this host for a standby"
            if req.standby
            else "no free engine on this host right now",
            retry_after_s=state.s.reconcile_interval_s,
        )
    engine = min(candidates, key=lambda e: (state.streams(e.id), e.idle_since))
    claim = state.claims.add(req.content_key, req.proxy_id, engine.id)
    counted.labels(result="granted").inc()
    state.wake()
    return claim, engine
