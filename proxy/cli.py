"""``acefleet-proxy``: run the streaming proxy until SIGTERM, then drain.

Holds :func:`start` (wire metrics, engine client, placer, edge and server together and listen;
tests and other embedders call it), :func:`serve`, :func:`drain` and the console entry
:func:`main`. ``acefleet-proxy reload`` asks the running proxy for a hitless takeover
(proxy/handover); a process started with ``ACEFLEET_HANDOVER_FD`` is that takeover's new
process: it takes the sockets over instead of listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import uvloop

from acefleet import config, logs
from proxy.access import Access
from proxy.catalog_cache import CatalogCache, PlayerFiles
from proxy.control.links import ControlLinks, identity, player_base
from proxy.edge import Edge
from proxy.engine_api import EngineClient
from proxy.handover import HANDOVER_FD_ENV
from proxy.handover.command import reload
from proxy.handover.giver import Giver
from proxy.handover.notify import sd_notify
from proxy.handover.taker import Refused, take_over
from proxy.metrics import Metrics
from proxy.placement import EventSink, Placement, Placer
from proxy.placement.static import StaticPlacer
from proxy.server import App, ClientProtocol
from proxy.settings import ProxySettings
from proxy.tls_server import listen_tls

log = logs.get(__name__)

DESCRIPTION = (
    "The acefleet streaming proxy: one engine session per channel, fanned out to every viewer."
)


@dataclass
class Running:
    app: App
    server: asyncio.Server | None  # None until a takeover's new process has taken over
    probes: asyncio.Task[None]
    catalog: CatalogCache
    links: ControlLinks | None = None
    static: StaticPlacer | None = None
    tls_server: asyncio.Server | None = None  # the HTTPS listener on tls_port (tls_server.py)

    def go_live(self, server: asyncio.Server | None) -> None:
        """Serving now (listening, or the listening socket taken over): start what talks to
        the outside, the snapshot to central above all (it must list the adopted streams)."""
        self.server = server
        if self.links is not None:
            self.links.start(self.app.edge)
        self.catalog.start()

    def adopted(self, placement: Placement) -> None:
        """A handed-over upstream runs on ``placement``: a static engine counts it as taken."""
        if self.static is not None and placement.source == "static":
            for engine in self.static.engines:
                if engine.endpoint == placement.engine:
                    engine.active += 1

    async def stop(self, grace_s: float) -> None:
        if self.tls_server is not None:
            self.tls_server.close()  # like the plain listener in drain(): no new connections
        await drain(self.app, self.server, grace_s)
        self.probes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.probes
        await self.catalog.aclose()
        if self.links is not None:
            await self.links.aclose()
        await self.app.edge.engine.aclose()


async def start(
    settings: ProxySettings,
    sink: EventSink | None = None,
    placer: Placer | None = None,
    *,
    listen: bool = True,
) -> Running:
    """Build the proxy and listen; ``sink`` hears upstream sessions; ``placer`` (tests, other
    embedders) replaces the configured placement. ``listen=False``: build only (a takeover
    brings the sockets, then calls :meth:`Running.go_live`)."""
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
    # the catalog copy (player files, token checks, standby flags) is polled over the link to
    # central
    catalog = CatalogCache(settings, metrics, links.central_peer if links else None)
    catalog.load()
    edge = Edge(
        settings,
        metrics,
        placer or (links.placer if links else static),
        engine,
        sink or (links.sink if links else None),
        standby_wanted=catalog.standby_wanted,
        # central's move_off list: sessions leave draining, recycling or degraded engines
        degraded=links.degraded if links else None,
    )
    _, host, _ = identity(settings)
    own_url = player_base(settings)
    access = Access(settings, metrics, catalog, edge.players, host=host)
    files = PlayerFiles(catalog, access.failures, own_url)
    app = App(settings, metrics, edge, access, files)
    probes = loop.create_task(static.run_probes())
    running = Running(app, None, probes, catalog, links, static)
    if not listen:
        return running
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
    if settings.tls_port:
        running.tls_server = await listen_tls(app)
    running.go_live(server)
    return running


async def serve(settings: ProxySettings) -> int:
    handover_fd = os.environ.pop(HANDOVER_FD_ENV, "")
    if handover_fd:
        running = await start(settings, listen=False)
        try:
            counts = await take_over(running, int(handover_fd))
        except Refused as exc:
            log.error("handover_refused", error=str(exc))
            return 1
        except Exception as exc:  # the old process keeps serving unless we committed
            log.error("handover_failed", error=repr(exc))
            return 1
        log.info("handover_taken", **counts)
    else:
        running = await start(settings)
        sd_notify("READY=1")
    giver = Giver(running)
    await giver.start(successor=bool(handover_fd))
    # Everything built so far lives as long as the process: out of the cyclic GC's reach, its
    # full passes only walk what serving creates (a zapping storm's closed channels made them
    # 51-95 ms every 20-25 s; frozen, 16-26 ms: bench/results/zapping.md).
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await giver.aclose()
    await running.stop(settings.drain_timeout_s)
    log.info("stopped")
    return 0


async def drain(app: App, server: asyncio.Server | None, grace_s: float) -> None:
    """readyz → 503 and no new streams, stop accepting, let viewers watch up to ``grace_s``,
    then stop every upstream (engine stop calls included)."""
    edge = app.edge
    edge.draining = True
    if server is not None:
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
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["reload"]:  # acefleet-proxy reload [--config F]: systemd's ExecReload
        settings = config.load(
            ProxySettings, args[1:], prog="acefleet-proxy reload", description=DESCRIPTION
        )
        sys.exit(reload(settings))
    settings = config.load(ProxySettings, args, prog="acefleet-proxy", description=DESCRIPTION)
    logs.configure(settings.log_level, settings.log_format, service="acefleet-proxy")
    # one line per engine call is noise; engine call failures are logged by proxy.engine_api
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(uvloop.run(serve(settings)))
