"""The agent's FastAPI application: lifespan owns the pool, background loops and agent-check."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from acefleet.api_errors import install_error_handlers
from orchestrator.agent import api
from orchestrator.agent.agentcheck import AgentCheckServer, answer
from orchestrator.agent.heartbeat import HeartbeatLoop
from orchestrator.agent.metrics import AgentMetrics
from orchestrator.agent.pool import Pool
from orchestrator.agent.settings import AgentSettings

DESCRIPTION = (
    "Manages the engine containers of one edge host: provisioning, adoption, health, pool "
    "sizing, stats, VPN, local claims and the HAProxy agent-check."
)


def announced_url(settings: AgentSettings) -> str:
    """The URL the agent tells central to reach its API at: ``agent_url``, else its listen
    address, except a wildcard one (0.0.0.0, ::), which nobody can call: the host's name then
    (central forwards operators' tunnel rotations to this URL)."""
    if settings.agent_url:
        return settings.agent_url
    scheme = "https" if settings.tls_cert_file else "http"
    host = settings.listen_host
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.listen_port}"


def create_app(settings: AgentSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: Pool = app.state.pool
        await pool.start()
        check = None
        if settings.agent_check_port:
            check = AgentCheckServer(
                settings.agent_check_host,
                settings.agent_check_port,
                lambda: answer(pool.draining, pool.capacity().weight_percent),
            )
            await check.start()
        beat = None
        if settings.central_url:
            beat = asyncio.create_task(HeartbeatLoop(pool, announced_url(settings)).run())
        try:
            yield
        finally:
            if beat is not None:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
            if check is not None:
                await check.stop()
            await pool.stop()

    app = FastAPI(
        title="acefleet-agent",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.pool = Pool(settings, AgentMetrics())
    install_error_handlers(app)
    app.include_router(api.v1)
    app.include_router(api.ops)
    return app
