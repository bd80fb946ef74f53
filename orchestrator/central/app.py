"""The central FastAPI application: routers, the shared error handlers, lifespan (history,
the stores kept in its database, sweeper) and the standby gate (``activity.py``): live state and
stores are opened when this central starts serving — at start, or on taking the control VIP over —
and dropped when it stands by."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

import orchestrator.central as package
from acefleet import logs
from acefleet.api_errors import install_error_handlers
from orchestrator.central import activity, gc_pacing, views
from orchestrator.central.api import (
    channels,
    edge_catalog,
    live,
    operators,
    player_feeds,
    players,
    services,
    tunnels,
)
from orchestrator.central.auth import KeyRing
from orchestrator.central.catalog import Store
from orchestrator.central.catalog.players import PlayerStore
from orchestrator.central.catalog.store import CatalogFiles, CatalogStore
from orchestrator.central.fastpath import ServiceFastPath
from orchestrator.central.history import History
from orchestrator.central.http import RateLimitHeaders
from orchestrator.central.metrics import CentralMetrics, StatsCollector
from orchestrator.central.schemas import Health
from orchestrator.central.settings import CentralSettings
from orchestrator.central.state import Central

log = logs.get(__name__)
SWEEP_INTERVAL_S = 0.25


class CentralApp(FastAPI):
    """FastAPI with ASGI layers in front of its whole stack (``front``). FastAPI's own outer
    layers (server errors, telemetry, body limit) cost every request ~10 % of the claim loop at
    600 claims/s; what runs in front answers the service hot path before them
    (bench/results/central.md, issue 17)."""

    _front: ASGIApp | None = None

    def front(self, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        """Put ``wrap(the FastAPI stack)`` in front of every request."""
        self._front = wrap(self._fastapi)

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self._front or self._fastapi)(scope, receive, send)


def create_app(settings: CentralSettings, clock: Callable[[], float] | None = None) -> FastAPI:
    metrics = CentralMetrics()
    history = History(
        settings.database_url, settings.history_queue_max, metrics.history_dropped.inc
    )
    state = Central(settings, metrics, history, clock or time.monotonic)
    metrics.registry.register(StatsCollector(lambda: views.stats_rows(state)))

    def new_stores() -> tuple[CatalogStore, PlayerStore]:
        catalog = CatalogStore(
            lambda: history.engine,
            CatalogFiles(
                seed_path=settings.catalog_seed_path,
                guide_path=settings.guide_path,
                guide_max_bytes=settings.guide_max_bytes,
                catalog_max_bytes=settings.catalog_max_bytes,
            ),
        )
        return catalog, PlayerStore(lambda: history.engine)

    started: list[Store] = []

    async def serve() -> None:
        """Live state and stores as after a start: drains and the stores read from the database
        (which the other central may have changed while this one stood by), nothing cached from
        before."""
        activity.fresh_live_state(state)
        # Engine drains are the one operator decision no edge reports back: reload them.
        state.fleet.drained = await history.drained_engines()
        # What was live when central last stopped: not placed again until its proxy speaks.
        state.unadopted = await history.open_sessions()
        catalog, players = new_stores()
        app.state.catalog, app.state.players = catalog, players
        # Stores with tables in the history database: started in this order once history has
        # created the tables, stopped in reverse before it closes.
        for store in (catalog, players):
            await store.start()
            started.append(store)

    async def stand_by() -> None:
        activity.fresh_live_state(state)
        while started:
            await started.pop().stop()

    role = activity.Activity(
        activity.vip_probe(settings.standby_state_file, settings.standby_control_vip),
        serve,
        stand_by,
        settings.standby_check_interval_s,
        metrics.registry,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await history.start()
        sweeper: asyncio.Task[None] | None = None
        collector: asyncio.Task[None] | None = None
        try:
            await role.start()
            sweeper = asyncio.create_task(_sweep_forever(state), name="central-sweeper")
            collector = asyncio.create_task(
                gc_pacing.collect_forever(
                    settings.gc_full_interval_s, metrics.gc_pause, metrics.loop_lag
                ),
                name="central-gc",
            )
            log.info("central_started", database=_redact(settings.database_url), role=role.role)
            yield
        finally:
            await role.stop()
            for task in (sweeper, collector):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            while started:
                await started.pop().stop()
            await history.stop()

    app = CentralApp(
        title="acefleet-central",
        version=package.__version__,
        description="Fleet view, engine claims, stream registry and operator API of acefleet.",
        lifespan=lifespan,
    )
    keyring = KeyRing(settings)
    app.state.central = state
    # Replaced by started ones when this central serves (serve above).
    app.state.catalog, app.state.players = new_stores()
    app.state.keyring = keyring
    app.state.activity = role
    install_error_handlers(app)
    app.add_middleware(RateLimitHeaders)
    # In front of FastAPI: well-formed claims, heartbeats and events skip it entirely
    # (fastpath.py); in front of that, a standby answers nothing but health and metrics
    # (activity.py).
    app.front(
        lambda fastapi: activity.StandbyGate(
            ServiceFastPath(fastapi, central=state, keyring=keyring),
            activity=role,
            retry_after_s=settings.standby_retry_after_s,
        )
    )
    app.include_router(services.router)
    app.include_router(operators.router)
    app.include_router(tunnels.router)
    app.include_router(live.router)
    app.include_router(channels.router)
    app.include_router(players.router)
    app.include_router(edge_catalog.router)
    app.include_router(player_feeds.router)

    @app.get("/livez", tags=["health"])
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": Health}})
    async def readyz() -> JSONResponse:
        """Ready when the history database answers; ``warming_up`` says whether live state is
        still being rebuilt from heartbeats and snapshots (claims are answered meanwhile)."""
        db = await history.ping()
        # A standby central (the control VIP is elsewhere) is not ready: 503 status "standby".
        if not role.active:
            standby = Health(status="standby", warming_up=False, database=db)
            return JSONResponse(standby.model_dump(), status_code=503)
        body = Health(
            status="ok" if db else "unavailable", warming_up=state.warming_up(), database=db
        )
        return JSONResponse(body.model_dump(), status_code=200 if db else 503)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics_endpoint(_request: Request) -> Response:
        views.update_metrics(state)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _sweep_forever(state: Central) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            state.sweep()
        except Exception as exc:  # a bug here must not stop claim expiry for good
            log.error("sweep_failed", error=repr(exc))


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
