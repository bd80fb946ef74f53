"""The agent's FastAPI application: lifespan owns the pool, background loops and agent-check."""

from __future__ import annotations

import asyncio
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
            scheme = "https" if settings.tls_cert_file else "http"
            url = settings.agent_url or f"{scheme}://{settings.listen_host}:{settings.listen_port}"
            beat = asyncio.create_task(HeartbeatLoop(pool, url).run())
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
