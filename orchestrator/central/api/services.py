"""Endpoints for agents and proxies (role ``service``): the contracts of ``acefleet.wire``.

A claim belongs to the service key it was handed to: only that key releases it, or an operator
(audited); see :mod:`orchestrator.central.claim_owner`.
"""

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
    EventResult,
    Heartbeat,
    HeartbeatReply,
    ProxySnapshot,
)
from orchestrator.central import views
from orchestrator.central.api.deps import Audit, Caller, central, no_key_in_url
from orchestrator.central.auth import Principal, Role
from orchestrator.central.claim_owner import (
    foreign_events,
    may_release,
    not_claim_owner,
    not_proxy_owner,
)
from orchestrator.central.http import (
    ERROR_RESPONSES,
    ApiError,
    claim_refused,
    require,
    service_only,
    unknown_claim,
)
from orchestrator.central.schemas import SnapshotResult
from orchestrator.central.state import Central, HostMismatch

router = APIRouter(prefix="/v1", dependencies=[Depends(no_key_in_url)], responses=ERROR_RESPONSES)
Service = [Depends(service_only)]
service_or_operator = require(Role.service, Role.operator)
State = Annotated[Central, Depends(central)]
Name = Annotated[str, Path(min_length=1, max_length=200)]


def take_heartbeat(c: Central, host: str, body: Heartbeat) -> HeartbeatReply:
    """A heartbeat posted to ``host``'s URL (this route and the fast path)."""
    try:
        return c.heartbeat(host, body)
    except HostMismatch as exc:
        raise ApiError(422, "host_mismatch", str(exc)) from None


def take_events(c: Central, body: EventBatch, who: Principal) -> EventBatchResult:
    """A proxy's event batch sent with ``who``'s key (this route and the fast path)."""
    if not c.book.speaks_for(body.proxy_id, who.name):
        raise not_proxy_owner(body.proxy_id)
    refused = foreign_events(c.book, c.registry.streams, body, who)
    if refused:
        allowed = [ev for ev in body.events if ev.event_id not in refused]
        applied = iter(c.apply_events(body.model_copy(update={"events": allowed})).results)
        result = EventBatchResult(
            results=[
                EventResult(event_id=ev.event_id, status="error", error=refused[ev.event_id])
                if ev.event_id in refused
                else next(applied)
                for ev in body.events
            ]
        )
    else:
        result = c.apply_events(body)
    c.book.adopt(body.proxy_id, who.name)  # claims rebuilt from them (after a restart)
    return result


@router.post("/hosts/{host}/heartbeat", tags=["services"], dependencies=Service)
async def heartbeat(host: Name, body: Heartbeat, c: State) -> HeartbeatReply:
    """An agent reports its host; the reply carries the interval and directives."""
    return take_heartbeat(c, host, body)


@router.post(
    "/claims",
    tags=["services"],
    dependencies=Service,
    responses={
        413: {"model": ErrorBody, "description": "The body is larger than 16 KiB"},
        503: {"model": ErrorBody, "description": "Nothing fits; see Retry-After"},
    },
)
async def claim(body: ClaimRequest, c: State, who: Caller) -> ClaimGrant:
    """Reserve an engine for a content, or name the edge to relay it from. The claim belongs
    to the calling key (its name)."""
    answer = c.claim(body)
    if isinstance(answer, ErrorDetail):
        raise claim_refused(answer, c.settings.claim_retry_after_s)
    c.book.own(answer.claim_id, who.name)
    return answer


@router.delete(
    "/claims/{claim_id}",
    tags=["services"],
    status_code=204,
    dependencies=[Depends(service_or_operator)],
    responses={
        403: {
            "model": ErrorBody,
            "description": "The key's role may not do this, or the claim is another service "
            "instance's (not_claim_owner)",
        },
        404: {"model": ErrorBody, "description": "No such claim"},
    },
)
async def release(
    claim_id: Annotated[str, Path(max_length=100)], c: State, who: Caller, audit: Audit
) -> Response:
    """Release a claim (the proxy stopped the upstream, or gave up before starting it). A
    service may release only its own claims; an operator any (recorded in the audit log)."""
    held = c.book.claims.get(claim_id)
    if held is None:
        raise unknown_claim(claim_id)
    if not may_release(held, who):
        raise not_claim_owner(claim_id)
    c.release(claim_id)
    if who.role is Role.operator:
        audit(
            "claim.release",
            claim_id,
            owner=held.owner,
            content_key=held.content_key,
            host=held.host,
            engine_id=held.engine_id,
        )
    return Response(status_code=204)


@router.post("/events", tags=["services"], dependencies=Service)
async def events(body: EventBatch, c: State, who: Caller) -> EventBatchResult:
    """Stream events in a batch, idempotent by event id; each event gets its own result. A
    batch for another key's proxy id is refused (403); an event on another proxy's stream or
    another key's claim gets an error result (not_stream_owner, not_claim_owner)."""
    return take_events(c, body, who)


@router.put("/proxies/{proxy_id}/streams", tags=["services"], dependencies=Service)
async def snapshot(
    proxy_id: Annotated[str, Path(min_length=1, max_length=100)],
    body: ProxySnapshot,
    c: State,
    who: Caller,
) -> SnapshotResult:
    """The full list of a proxy's live streams (anti-entropy): streams missing from it end.
    The answer names the engines its primary streams should move off (``move_off``). Only the
    key that speaks for this proxy id may send it (403 not_proxy_owner)."""
    if not c.book.speaks_for(proxy_id, who.name):
        raise not_proxy_owner(proxy_id)
    outcome = c.snapshot(proxy_id, body)
    c.book.adopt(proxy_id, who.name)  # claims rebuilt from it (after a restart)
    return SnapshotResult(
        streams=outcome.streams,
        added=outcome.added,
        ended=outcome.ended,
        move_off=views.move_off(c, proxy_id),
    )
