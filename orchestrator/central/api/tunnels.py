"""Operator actions on an edge's VPN tunnels: a rotation, forwarded to the edge's agent
(``agent_calls``) and recorded in the audit log whatever the agent answered. The tunnels
themselves are read in ``GET /v1/hosts`` (from the heartbeats)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from acefleet.wire import ErrorBody, TunnelReport
from orchestrator.central import agent_calls
from orchestrator.central.api.deps import Audit, central, no_key_in_url
from orchestrator.central.hosts import UnknownTarget
from orchestrator.central.http import ERROR_RESPONSES, ApiError, operator_only
from orchestrator.central.state import Central

router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(no_key_in_url)],
    responses=ERROR_RESPONSES,
    tags=["operators"],
)
State = Annotated[Central, Depends(central)]
HostName = Annotated[str, Path(min_length=1, max_length=200)]
# The agents' rule for a tunnel's name (docs/vpn.md): what else could never name one.
TunnelName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{0,15}$")]

ROTATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown_host, or the agent's unknown_tunnel"},
    409: {"model": ErrorBody, "description": "The agent's rotation_in_progress"},
    502: {
        "model": ErrorBody,
        "description": "agent_unreachable, agent_refused_key (central's agent_api_key is not "
        "the agents' key) or agent_bad_answer",
    },
    503: {
        "model": ErrorBody,
        "description": "The agent's docker_unavailable, central's agent_key_missing, or "
        "standby_central",
    },
}


@router.post(
    "/hosts/{host}/tunnels/{name}/rotate",
    dependencies=[Depends(operator_only)],
    status_code=202,
    response_model=TunnelReport,
    responses=ROTATE_RESPONSES,
)
async def rotate_tunnel(host: HostName, name: TunnelName, c: State, audit: Audit) -> JSONResponse:
    """Rotate a VPN tunnel blue/green: forwarded to the host's agent, whose answer comes back
    as it came (202 and the new generation, state ``starting``; 404 ``unknown_tunnel``; 409
    ``rotation_in_progress``; 503 ``docker_unavailable``)."""
    try:
        agent_url = c.fleet.host(host).agent_url
    except UnknownTarget as exc:
        raise ApiError(404, "unknown_host", str(exc)) from None
    try:
        answer = await agent_calls.rotate_tunnel(c.settings, agent_url, name)
    except agent_calls.AgentCallFailed as exc:
        if exc.code != "agent_key_missing":  # nothing was asked of the agent then
            audit("tunnel.rotate", f"{host}/{name}", outcome=exc.code)
        raise ApiError(exc.status, exc.code, exc.message) from None
    audit("tunnel.rotate", f"{host}/{name}", outcome=answer.status)
    return JSONResponse(answer.body, status_code=answer.status)
