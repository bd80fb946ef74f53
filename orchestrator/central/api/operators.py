"""Endpoints for operators and viewers: the fleet, drain, the warm buffer, history, the audit
log. Every operator change here is recorded in the audit log; claim ids are shown only to
those who may release them (:mod:`orchestrator.central.claim_owner`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from acefleet.wire import ErrorBody
from orchestrator.central import views
from orchestrator.central.api.deps import Audit, Caller, audit_log, central, no_key_in_url
from orchestrator.central.audit import AuditList
from orchestrator.central.auth import Role
from orchestrator.central.claim_owner import may_see
from orchestrator.central.hosts import UnknownTarget
from orchestrator.central.http import (
    ERROR_RESPONSES,
    ApiError,
    any_reader,
    etagged,
    operator_only,
)
from orchestrator.central.schemas import (
    BufferScale,
    ClaimList,
    DrainResult,
    EngineList,
    EngineView,
    FleetSummary,
    HostList,
    HostView,
    ProvisioningLogEntry,
    ProvisioningStatus,
    SessionList,
    SessionRecord,
    StreamList,
)
from orchestrator.central.state import Central

router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(no_key_in_url)],
    responses=ERROR_RESPONSES,
    tags=["operators"],
)
State = Annotated[Central, Depends(central)]
Name = Annotated[str, Path(min_length=1, max_length=200)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "Unknown"}}
Reader = [Depends(any_reader)]
Operator = [Depends(operator_only)]


class Identity(BaseModel):
    name: str = Field(
        description="The key's name: <name> of a <name>:<key> entry, or "
        "<role>-<first 8 hex of its sha256> for a bare key"
    )
    role: Role


@router.get("/whoami", dependencies=Reader)
async def whoami(who: Caller) -> Identity:
    """Who this key is to central (its name and role; after a rotation, whether the new key
    is in place under the old name)."""
    return Identity(name=who.name, role=who.role)


@router.get("/fleet", dependencies=Reader)
async def fleet(c: State) -> FleetSummary:
    """Counts over the whole fleet, and whether central is still warming up."""
    return views.summary(c)


@router.get("/hosts", dependencies=Reader, response_model=HostList)
async def hosts(request: Request, c: State) -> Response:
    """Every edge host that has heartbeated (ETag: send If-None-Match to poll cheaply)."""
    return etagged(request, HostList(warming_up=c.warming_up(), items=views.hosts(c)))


@router.get("/hosts/{host}", dependencies=Reader, responses=NOT_FOUND)
async def host(host: Name, c: State) -> HostView:
    try:
        return views.host_view(c, c.fleet.host(host))
    except UnknownTarget as exc:
        raise ApiError(404, "unknown_host", str(exc)) from None


@router.get("/engines", dependencies=Reader, response_model=EngineList)
async def engines(
    request: Request,
    c: State,
    host: Annotated[str | None, Query(max_length=200, description="Only this host")] = None,
) -> Response:
    """Engines with their load, claims and last reported stats."""
    return etagged(request, EngineList(warming_up=c.warming_up(), items=views.engines(c, host)))


@router.get("/engines/{engine_id}", dependencies=Reader, responses=NOT_FOUND)
async def engine(engine_id: Name, c: State) -> EngineView:
    host = c.fleet.engine_host.get(engine_id)
    for view in views.engines(c, host) if host else []:
        if view.id == engine_id:
            return view
    raise ApiError(404, "unknown_engine", f"no engine {engine_id!r} in any heartbeat")


@router.get("/streams", dependencies=Reader, response_model=StreamList)
async def streams(request: Request, c: State, who: Caller) -> Response:
    """Live upstream sessions with their viewers. ``claim_id`` is null unless the key may
    release that claim (operators; a service for its own)."""
    items = views.streams(c)
    for item in items:
        if not may_see(c.book, item.claim_id, who):
            item.claim_id = None
    return etagged(request, StreamList(warming_up=c.warming_up(), items=items))


@router.get("/streams/history", dependencies=Reader, response_model=SessionList)
async def stream_history(
    request: Request,
    c: State,
    who: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    content_key: Annotated[str | None, Query(max_length=200)] = None,
    host: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Past and present sessions from the history database, newest first (written behind the
    live state, so the last second may be missing). ``claim_id`` as in ``/v1/streams``."""
    rows = await c.history.sessions(limit, content_key, host)
    items = [SessionRecord.model_validate(_utc(r)) for r in rows]
    for item in items:  # a live session's claim id would let anyone end it
        if not may_see(c.book, item.claim_id, who):
            item.claim_id = None
    return etagged(request, SessionList(items=items))


@router.get("/claims", dependencies=Reader, response_model=ClaimList)
async def claims(request: Request, c: State, who: Caller) -> Response:
    """The claims central holds that this key may release: all of them for an operator, its
    own for a service, none for a viewer (a claim id lets its holder end the stream)."""
    items = [cl for cl in views.claims(c) if may_see(c.book, cl.claim_id, who)]
    return etagged(request, ClaimList(warming_up=c.warming_up(), items=items))


@router.get("/provisioning", dependencies=Reader)
async def provisioning(
    c: State, log_limit: Annotated[int, Query(ge=0, le=1000)] = 50
) -> ProvisioningStatus:
    """The warm buffer per edge, why provisioning is blocked where it is, and the recent log."""
    entries = await c.history.provisioning_entries(log_limit) if log_limit else []
    return ProvisioningStatus(
        warming_up=c.warming_up(),
        warm_buffer_per_edge=c.per_edge,
        fleet_max_engines=c.fleet_max,
        fleet_engines=sum(len(h.engines) for h in c.fleet.hosts.values()),
        hosts=views.provisioning(c),
        log=[
            ProvisioningLogEntry.model_validate(_utc({k: v for k, v in e.items() if k != "id"}))
            for e in entries
        ],
    )


@router.put("/provisioning/buffer", dependencies=Operator, responses=NOT_FOUND)
async def scale_buffer(body: BufferScale, c: State, audit: Audit) -> ProvisioningStatus:
    """Scale the warm buffer (fleet-wide or for one edge) and the fleet-wide engine maximum."""
    try:
        c.set_buffer(body.warm_buffer_per_edge, body.fleet_max_engines, body.host)
    except UnknownTarget as exc:
        raise ApiError(404, "unknown_host", str(exc)) from None
    audit("buffer.scale", body.host or "fleet", **body.model_dump(exclude_none=True))
    return await provisioning(c, 0)


async def _drain_host(c: Central, host: str, drain: bool, audit: Audit) -> DrainResult:
    try:
        c.drain_host(host, drain)
    except UnknownTarget as exc:
        raise ApiError(404, "unknown_host", str(exc)) from None
    audit("host.drain" if drain else "host.undrain", host)
    return DrainResult(target=host, draining=drain)


@router.post("/hosts/{host}/drain", dependencies=Operator, responses=NOT_FOUND)
async def drain_host(host: Name, c: State, audit: Audit) -> DrainResult:
    """No new work on this edge; its agent is told to drain. Live streams continue."""
    return await _drain_host(c, host, True, audit)


@router.post("/hosts/{host}/undrain", dependencies=Operator, responses=NOT_FOUND)
async def undrain_host(host: Name, c: State, audit: Audit) -> DrainResult:
    return await _drain_host(c, host, False, audit)


async def _drain_engine(c: Central, engine_id: str, drain: bool, audit: Audit) -> DrainResult:
    try:
        c.drain_engine(engine_id, drain)
    except UnknownTarget as exc:
        raise ApiError(404, "unknown_engine", str(exc)) from None
    audit("engine.drain" if drain else "engine.undrain", engine_id)
    return DrainResult(target=engine_id, draining=drain)


@router.post("/engines/{engine_id}/drain", dependencies=Operator, responses=NOT_FOUND)
async def drain_engine(engine_id: Name, c: State, audit: Audit) -> DrainResult:
    """No new work on this engine (central-side; its live streams continue)."""
    return await _drain_engine(c, engine_id, True, audit)


@router.post("/engines/{engine_id}/undrain", dependencies=Operator, responses=NOT_FOUND)
async def undrain_engine(engine_id: Name, c: State, audit: Audit) -> DrainResult:
    return await _drain_engine(c, engine_id, False, audit)


@router.get("/audit", dependencies=Operator)
async def audit_entries(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    since: Annotated[datetime | None, Query(description="Only entries at or after this")] = None,
    actor: Annotated[str | None, Query(max_length=100, description="Only this key name")] = None,
    action: Annotated[
        str | None,
        Query(max_length=60, description="Only this action (engine.drain), or a family (engine.)"),
    ] = None,
) -> AuditList:
    """The audit log of operator changes (and operators' releases of claims), newest first."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    entries = await audit_log(request.app).entries(
        limit=limit,
        since=since.astimezone(UTC) if since is not None else None,
        actor=actor,
        action=action,
    )
    return AuditList(items=entries)


def _utc(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return {
        k: v.replace(tzinfo=UTC) if hasattr(v, "tzinfo") and v.tzinfo is None else v
        for k, v in row.items()
    }
