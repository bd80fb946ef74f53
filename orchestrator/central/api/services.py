"""Endpoints for agents and proxies (role ``service``): the contracts of ``acefleet.wire``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from acefleet.wire import (
    ClaimGrant,
    ClaimRequest,
    ErrorBody,
    ErrorDetail,
    EventBatch,
    EventBatchResult,
    Heartbeat,
    HeartbeatReply,
    ProxySnapshot,
)
from orchestrator.central import views
from orchestrator.central.api.deps import central
from orchestrator.central.http import (
    ERROR_RESPONSES,
    ApiError,
    claim_refused,
    service_only,
    unknown_claim,
)
from orchestrator.central.schemas import SnapshotResult
from orchestrator.central.state import Central, HostMismatch

router = APIRouter(prefix="/v1", dependencies=[Depends(service_only)], responses=ERROR_RESPONSES)
State = Annotated[Central, Depends(central)]
Name = Annotated[str, Path(min_length=1, max_length=200)]


@router.post("/hosts/{host}/heartbeat", tags=["services"])
async def heartbeat(host: Name, body: Heartbeat, c: State) -> HeartbeatReply:
    """An agent reports its host; the reply carries the interval and directives."""
    try:
        return c.heartbeat(host, body)
    except HostMismatch as exc:
        raise ApiError(422, "host_mismatch", str(exc)) from None


@router.post(
    "/claims",
    tags=["services"],
    responses={503: {"model": ErrorBody, "description": "Nothing fits; see Retry-After"}},
)
async def claim(body: ClaimRequest, c: State) -> ClaimGrant:
    """Reserve an engine for a content, or name the edge to relay it from."""
    answer = c.claim(body)
    if isinstance(answer, ErrorDetail):
        raise claim_refused(answer, c.settings.claim_retry_after_s)
    return answer


@router.delete(
    "/claims/{claim_id}",
    tags=["services"],
    status_code=204,
    responses={404: {"model": ErrorBody, "description": "No such claim"}},
)
async def release(claim_id: Annotated[str, Path(max_length=100)], c: State) -> Response:
    """Release a claim (the proxy stopped the upstream, or gave up before starting it)."""
    if c.release(claim_id) is None:
        raise unknown_claim(claim_id)
    return Response(status_code=204)


@router.post("/events", tags=["services"])
async def events(body: EventBatch, c: State) -> EventBatchResult:
    """Stream events in a batch, idempotent by event id; each event gets its own result."""
    return c.apply_events(body)


@router.put("/proxies/{proxy_id}/streams", tags=["services"])
async def snapshot(
    proxy_id: Annotated[str, Path(min_length=1, max_length=100)], body: ProxySnapshot, c: State
) -> SnapshotResult:
    """The full list of a proxy's live streams (anti-entropy): streams missing from it end.
    The answer names the engines its primary streams should move off (``move_off``)."""
    outcome = c.snapshot(proxy_id, body)
    return SnapshotResult(
        streams=outcome.streams,
        added=outcome.added,
        ended=outcome.ended,
        move_off=views.move_off(c, proxy_id),
    )
