"""``acefleet-proxy``: run the streaming proxy until SIGTERM, then drain.

Holds :func:`start` (wire metrics, engine client, placer, edge and server together and listen;
tests and other embedders call it), :func:`serve`, :func:`drain` and the console entry
:func:`main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import uvloop

from acefleet import config, logs
from proxy.access import Access
from proxy.catalog_cache import CatalogCache, PlayerFiles
from proxy.control.links import ControlLinks, identity
from proxy.edge import Edge
from proxy.engine_api import EngineClient
from proxy.metrics import Metrics
from proxy.placement import EventSink, Placer
from proxy.placement.static import StaticPlacer
from proxy.server import App, ClientProtocol
from proxy.settings import ProxySettings

log = logs.get(__name__)

DESCRIPTION = (
    "The acefleet streaming proxy: one engine session per channel, fanned out to every viewer."
)


@dataclass
class Running:
    app: App
    server: asyncio.Server
    probes: asyncio.Task[None]
    catalog: CatalogCache
    links: ControlLinks | None = None

    async def stop(self, grace_s: float) -> None:
        await drain(self.app, self.server, grace_s)
        self.probes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.probes
        await self.catalog.aclose()
        if self.links is not None:
            await self.links.aclose()
        await self.app.edge.engine.aclose()


async def start(
    settings: ProxySettings, sink: EventSink | None = None, placer: Placer | None = None
) -> Running:
    """Build the proxy and listen; ``sink`` hears upstream sessions; ``placer`` (tests, other
    embedders) replaces the configured placement."""
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    engine = EngineClient(
        call_timeout=settings.engine_call_timeout_s,
        stop_timeout=settings.stop_timeout_s,
        metrics=metrics,
    )
    static = StaticPlacer(
        settings.engines,
        default_cap=settings.engine_stream_cap,
        engine=engine,
        probe_interval_s=settings.probe_interval_s,
        probe_timeout_s=settings.probe_timeout_s,
        probe_failures=settings.probe_failures,
        failed_avoid_s=settings.failed_static_avoid_s,
    )
    # Fleet mode: claims from central, then the local agent, then the static list (links.py).
    links = ControlLinks(settings, metrics, static) if settings.fleet_mode else None
    edge = Edge(
        settings,
        metrics,
        placer or (links.placer if links else static),
        engine,
        sink or (links.sink if links else None),
    )
    # the catalog copy (player files, token checks) is polled over the link to central
    catalog = CatalogCache(settings, metrics, links.central_peer if links else None)
    catalog.load()
    _, host, own_url = identity(settings)
    access = Access(settings, metrics, catalog, edge.players, host=host)
    files = PlayerFiles(catalog, access.failures, own_url)
    app = App(settings, metrics, edge, access, files)
    probes = loop.create_task(static.run_probes())
    server = await loop.create_server(
        lambda: ClientProtocol(app),
        settings.host,
        settings.port,
        reuse_address=True,
        backlog=1024,
    )
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    log.info("listening", host=settings.host, port=settings.port, engines=settings.engines)
    if links is not None:
        links.start(edge)
    catalog.start()
    return Running(app, server, probes, catalog, links)


async def serve(settings: ProxySettings) -> None:
    running = await start(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop(settings.drain_timeout_s)
    log.info("stopped")


async def drain(app: App, server: asyncio.Server, grace_s: float) -> None:
    """readyz → 503 and no new streams, stop accepting, let viewers watch up to ``grace_s``,
    then stop every upstream (engine stop calls included)."""
    edge = app.edge
    edge.draining = True
    server.close()
    log.info("draining", viewers=edge.viewer_count(), grace_s=grace_s)
    if edge.viewer_count():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(edge.no_viewers.wait(), grace_s)
    await edge.close_all("shutdown")
    for conn in list(app.connections):
        if conn.transport is not None:
            conn.transport.close()


def main(argv: Sequence[str] | None = None) -> None:
    settings = config.load(ProxySettings, argv, prog="acefleet-proxy", description=DESCRIPTION)
    logs.configure(settings.log_level, settings.log_format, service="acefleet-proxy")
    # one line per engine call is noise; engine call failures are logged by proxy.engine_api
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvloop.run(serve(settings))
