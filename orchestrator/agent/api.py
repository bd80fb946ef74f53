"""HTTP API of acefleet-agent, versioned under /v1 (OpenAPI in docs/openapi/agent.json).

HTTP only: the rules it answers with live in ``pool_state``, ``capacity``, ``fallback_placement``
and ``errors``."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest
from pydantic import Field

from acefleet.api_errors import error_response
from acefleet.wire import (
    ClaimGrant,
    ClaimRequest,
    EngineHealth,
    EngineRef,
    EngineReport,
    EngineStats,
    ProvisioningState,
    SessionReport,
    TunnelReport,
    VpnState,
    Wire,
)
from orchestrator.agent.capacity import Capacity
from orchestrator.agent.dockerops import DockerError
from orchestrator.agent.engine_record import Engine
from orchestrator.agent.errors import AgentError
from orchestrator.agent.fallback_placement import claim_engine
from orchestrator.agent.local_claims import Claim
from orchestrator.agent.pool import Pool
from orchestrator.agent.sessions import Session, SessionFull, stat_path
from orchestrator.agent.tunnel_compat import engine_body, with_engines


class EngineList(Wire):
    host: str
    engines: list[EngineReport]


class EngineDetail(Wire):
    engine: EngineReport
    stats_history: list[EngineStats] = Field(description="Recent stats, oldest first")
    claims: list[str] = Field(description="Ids of the claims holding this engine")


class AgentStatus(Wire):
    host: str
    ready: bool
    not_ready_reason: str | None = None
    draining: bool
    capacity: Capacity
    vpn: VpnState
    provisioning: ProvisioningState
    profile: str
    image: str


class ClaimConfirm(Wire):
    stat_url: str | None = Field(
        default=None, max_length=2000, description="The session's stat_url, for stats polling"
    )


class ClaimInfo(Wire):
    claim_id: str
    content_key: str
    engine_id: str
    confirmed: bool
    stat_url: str | None = None


class SessionInfo(Wire):
    session_id: str
    engine_id: str
    stat_path: str
    content_key: str | None = None


class DrainState(Wire):
    draining: bool


class TunnelList(Wire):
    tunnels: list[TunnelReport] = Field(
        description="Every generation of every VPN tunnel (a retiring one until it is removed)"
    )


def _json(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _respond(body: object, status: int = 200) -> Response:
    return Response(_json(body), status_code=status, media_type="application/json")


def pool_of(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


PoolDep = Annotated[Pool, Depends(pool_of)]


def require_key(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Mutating calls carry ``Authorization: Bearer <api_key>``."""
    expected = pool_of(request).s.api_key.get_secret_value().encode()
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise AgentError(401, "unauthorized", "a valid 'Authorization: Bearer <key>' is required")


Auth = Depends(require_key)


def _engine_or_404(pool: Pool, engine_id: str) -> Engine:
    engine = pool.find(engine_id)
    if engine is None:
        raise AgentError(404, "engine_not_found", f"no engine {engine_id!r} on {pool.s.host}")
    return engine


def _engine_for(pool: Pool, body: SessionReport) -> Engine:
    if body.engine_id:
        engine = pool.find(body.engine_id)
        if engine is not None:
            return engine
    if body.endpoint:
        for engine in pool.live():
            if engine.endpoint == body.endpoint:
                return engine
    if not body.engine_id and not body.endpoint:
        raise AgentError(422, "invalid_request", "name the engine: engine_id or endpoint")
    raise AgentError(
        404, "engine_not_found", f"no engine {body.engine_id or body.endpoint!r} on {pool.s.host}"
    )


def _stat_path_or_422(stat_url: str) -> str:
    path = stat_path(stat_url)
    if path is None:
        raise AgentError(
            422, "bad_stat_url", "stat_url must be an engine stat page: /ace/stat/<infohash>/<id>"
        )
    return path


def _session_info(s: Session) -> SessionInfo:
    return SessionInfo(
        session_id=s.session_id,
        engine_id=s.engine_id,
        stat_path=s.stat_path,
        content_key=s.content_key,
    )


def _claim_info(c: Claim) -> ClaimInfo:
    return ClaimInfo(
        claim_id=c.claim_id,
        content_key=c.content_key,
        engine_id=c.engine_id,
        confirmed=c.confirmed,
        stat_url=c.stat_url,
    )


v1 = APIRouter(prefix="/v1")


@v1.get("/engines", response_model=EngineList, responses={304: {"description": "Not modified"}})
async def list_engines(
    pool: PoolDep, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    listing = EngineList(host=pool.s.host, engines=pool.reports())
    body = _json(with_engines(listing, "engines", tunnels=pool.tunnels is not None))
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


@v1.get("/engines/{engine_id}", response_model=EngineDetail, responses={404: {}})
async def get_engine(engine_id: str, pool: PoolDep) -> Response:
    engine = _engine_or_404(pool, engine_id)
    detail = EngineDetail(
        engine=pool.report(engine),
        stats_history=list(engine.stats),
        claims=[c.claim_id for c in pool.claims.for_engine(engine_id)],
    )
    return _respond(with_engines(detail, "engine", tunnels=pool.tunnels is not None))


@v1.post("/engines", status_code=202, response_model=EngineReport, dependencies=[Auth])
async def create_engine(pool: PoolDep) -> Response:
    """Provision one engine now; it is returned while still ``starting``."""
    engine = await pool.start_provision()
    report = engine_body(pool.report(engine), tunnels=pool.tunnels is not None)
    return _respond(report, 202)


@v1.get("/tunnels", response_model=TunnelList)
async def list_tunnels(pool: PoolDep) -> TunnelList:
    """The edge's VPN tunnels (empty without ``vpn_tunnels_file``), as in the heartbeat."""
    return TunnelList(tunnels=pool.tunnel_reports())


@v1.post(
    "/tunnels/{name}/rotate",
    status_code=202,
    response_model=TunnelReport,
    responses={404: {}, 409: {}, 503: {}},
    dependencies=[Auth],
)
async def rotate_tunnel(name: str, pool: PoolDep) -> TunnelReport:
    """Rotate a tunnel blue/green: its next generation is created (returned, ``starting``); once
    healthy, the old generation's engines are drained and replaced, then it is removed."""
    if pool.rotation is None:
        raise AgentError(404, "unknown_tunnel", f"no tunnel {name!r} on {pool.s.host}")
    gen = await pool.rotation.rotate(name, "operator")
    return pool.rotation.tunnels.report(gen)


@v1.delete("/engines/{engine_id}", status_code=204, dependencies=[Auth])
async def delete_engine(
    engine_id: str,
    pool: PoolDep,
    force: Annotated[bool, Query(description="Remove even while it carries sessions")] = False,
) -> Response:
    engine = _engine_or_404(pool, engine_id)
    if pool.streams(engine_id) and not force:
        raise AgentError(409, "engine_busy", f"engine {engine_id} carries sessions; use force")
    try:
        await pool.remove(engine, "api")
    except DockerError as exc:
        raise AgentError(503, exc.code, exc.message) from None
    pool.wake()
    return Response(status_code=204)


@v1.get("/status", response_model=AgentStatus)
async def status(pool: PoolDep) -> AgentStatus:
    reason = pool.ready_reason()
    return AgentStatus(
        host=pool.s.host,
        ready=reason is None,
        not_ready_reason=reason,
        draining=pool.draining,
        capacity=pool.capacity(),
        vpn=pool.vpn_state(),
        provisioning=pool.provisioning(),
        profile=pool.profile.name,
        image=pool.s.engine_image,
    )


@v1.post("/claims", status_code=201, response_model=ClaimGrant, dependencies=[Auth])
async def claim(req: ClaimRequest, pool: PoolDep) -> ClaimGrant:
    """Reserve an engine slot on this host (the proxy's fallback when central is away)."""
    granted, engine = claim_engine(pool, req)
    return ClaimGrant(
        kind="engine",
        claim_id=granted.claim_id,
        ttl_s=pool.s.claim_ttl_s,
        engine=EngineRef(id=engine.id, host=engine.host, endpoint=engine.endpoint),
    )


@v1.get("/claims", response_model=list[ClaimInfo])
async def list_claims(pool: PoolDep) -> list[ClaimInfo]:
    return [_claim_info(c) for c in pool.claims.claims.values()]


@v1.post("/claims/{claim_id}/confirm", response_model=ClaimInfo, dependencies=[Auth])
async def confirm_claim(
    claim_id: str, pool: PoolDep, body: ClaimConfirm | None = None
) -> ClaimInfo:
    """The session started: the claim no longer expires; ``stat_url`` enables stats polling."""
    stat_url = body.stat_url if body else None
    if stat_url:
        _stat_path_or_422(stat_url)
    c = pool.claims.confirm(claim_id, stat_url)
    if c is None:
        raise AgentError(404, "claim_not_found", f"no claim {claim_id!r} (expired or released)")
    return _claim_info(c)


@v1.delete("/claims/{claim_id}", status_code=204, dependencies=[Auth])
async def release_claim(claim_id: str, pool: PoolDep) -> Response:
    claim_ = pool.claims.release(claim_id)
    if claim_ is None:
        raise AgentError(404, "claim_not_found", f"no claim {claim_id!r} (expired or released)")
    pool.slot_freed(claim_.engine_id)
    pool.wake()
    return Response(status_code=204)


SessionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


@v1.put(
    "/sessions/{session_id}",
    response_model=SessionInfo,
    responses={201: {"model": SessionInfo}, 404: {}, 422: {}, 429: {}},
    dependencies=[Auth],
)
async def put_session(
    session_id: SessionId, body: SessionReport, pool: PoolDep, response: Response
) -> SessionInfo:
    """A live session the agent did not place (central's claim, the static list): the agent
    polls its stat page on the named engine and counts it on that engine. Idempotent."""
    path = _stat_path_or_422(body.stat_url)
    engine = _engine_for(pool, body)
    try:
        session, new = pool.sessions.put(session_id, engine.id, path, body.content_key)
    except SessionFull as exc:
        raise AgentError(429, "too_many_sessions", str(exc)) from None
    response.status_code = 201 if new else 200
    return _session_info(session)


@v1.get("/sessions", response_model=list[SessionInfo])
async def list_sessions(pool: PoolDep) -> list[SessionInfo]:
    return [_session_info(s) for s in pool.sessions.sessions.values()]


@v1.delete("/sessions/{session_id}", status_code=204, responses={404: {}}, dependencies=[Auth])
async def end_session(session_id: SessionId, pool: PoolDep) -> Response:
    """The session ended: its stats are no longer polled."""
    session = pool.sessions.drop(session_id)
    if session is None:
        raise AgentError(404, "session_not_found", f"no session {session_id!r}")
    pool.slot_freed(session.engine_id)
    pool.wake()
    return Response(status_code=204)


@v1.get("/drain", response_model=DrainState)
async def drain_state(pool: PoolDep) -> DrainState:
    return DrainState(draining=pool.draining)


@v1.post("/drain", response_model=DrainState, dependencies=[Auth])
async def drain(pool: PoolDep) -> DrainState:
    """Stop taking new work: local claims are refused, agent-check answers ``drain``."""
    pool.draining = True
    return DrainState(draining=True)


@v1.delete("/drain", response_model=DrainState, dependencies=[Auth])
async def undrain(pool: PoolDep) -> DrainState:
    pool.draining = False
    return DrainState(draining=False)


ops = APIRouter()


@ops.get("/livez", response_class=PlainTextResponse)
async def livez() -> str:
    return "ok\n"


@ops.get("/readyz", response_class=PlainTextResponse, responses={503: {}})
async def readyz(pool: PoolDep) -> Response:
    reason = pool.ready_reason()
    if reason is not None:
        return error_response(503, "not_ready", reason)
    return PlainTextResponse("ready\n")


@ops.get("/metrics", response_class=PlainTextResponse)
async def metrics(pool: PoolDep) -> Response:
    m = pool.metrics
    live = pool.live()
    for health in EngineHealth:
        m.engines.labels(health=health.value).set(sum(1 for e in live if e.health == health))
    m.engines_free.set(len(pool.free()))
    m.streams.set(sum(pool.streams(e.id) for e in live))
    m.breaker_open.set(1 if pool.breaker.current() == "open" else 0)
    m.provisioning_blocked.set(1 if pool.provisioning().state == "blocked" else 0)
    m.sessions_reported.set(len(pool.sessions.sessions))
    return Response(generate_latest(m.registry), media_type="text/plain; version=0.0.4")
