"""The proxy's links to the control plane: builds each peer (central, the local agent) once and
wires the placement chain, the event queue and the snapshot on them.

Built only when central and/or the agent are configured; a proxy with just a static engine list
runs without any of it (standalone mode).

``degraded(placement)`` is the move-off signal the channels poll (``ChannelContext.degraded``):
true while central's latest snapshot answer names the placement's engine in ``move_off``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import httpx
from pydantic import SecretStr

from acefleet import logs, tls
from acefleet.tokens import TokenKeys
from proxy.access import edge_token
from proxy.control.event_queue import BatchedEventSink
from proxy.control.peer import ControlPeer, PeerName
from proxy.control.snapshot import SnapshotLoop
from proxy.edge import Edge
from proxy.metrics import Metrics
from proxy.placement import EventSink, NullEventSink, Placement, Placer
from proxy.placement.agent import AgentPlacer
from proxy.placement.central import CentralPlacer
from proxy.placement.chain import PlacementChain, PlainStep, Step
from proxy.placement.circuit import Breaker
from proxy.settings import ProxySettings

log = logs.get(__name__)


def _reached_at(settings: ProxySettings) -> tuple[str, str]:
    """(edge host name, the name other hosts reach this proxy by)."""
    host = settings.edge_host or socket.gethostname()
    return host, settings.host if settings.host not in ("0.0.0.0", "::", "") else host


def identity(settings: ProxySettings) -> tuple[str, str, str]:
    """(proxy id, edge host name, URL other edges relay from)."""
    host, listen = _reached_at(settings)
    proxy_id = settings.proxy_id or host
    url = settings.relay_url or (
        # other edges relay over HTTPS when this proxy serves it
        f"https://{listen}:{settings.tls_port}"
        if settings.tls_port
        else f"http://{listen}:{settings.port}"
    )
    return proxy_id, host, url


def player_base(settings: ProxySettings) -> str:
    """The base URL of this proxy in the playlists it serves itself (when the catalog names no
    player_url): the plain port, whatever the relays use — players do not trust the fleet CA."""
    _, listen = _reached_at(settings)
    return settings.relay_url or f"http://{listen}:{settings.port}"


class ControlLinks:
    def __init__(self, settings: ProxySettings, metrics: Metrics, static: Placer | None) -> None:
        self.settings = s = settings
        self.proxy_id, self.host, self.url = identity(settings)
        # trust_env=False: central and the agent are ours; an HTTP(S)_PROXY must not intercept.
        # https peers are verified against tls_ca_file (docs/tls.md).
        self.http = httpx.AsyncClient(
            trust_env=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            verify=tls.client_context(s.tls_ca_file),
        )
        # Each peer is built once; its claim client, event queue and snapshot all take it.
        self.central_peer: ControlPeer | None = None
        self.agent_peer: ControlPeer | None = None
        if s.central_url:
            self.central_peer = self._peer("central", s.central_url, s.central_api_key)
        if s.agent_url:
            self.agent_peer = self._peer("agent", s.agent_url, s.agent_api_key)
        steps: list[tuple[str, Step]] = []
        self.central: CentralPlacer | None = None
        self.agent: AgentPlacer | None = None
        if self.central_peer is not None:
            keys = TokenKeys.parse(s.token_keys)

            def relay_token(content_key: str) -> str:
                assert keys is not None
                return edge_token(keys, content_key, time.time())

            self.central = CentralPlacer(
                self.central_peer,
                Breaker(s.breaker_failures, s.breaker_open_s),
                relay_avoid_s=s.failed_relay_avoid_s,
                # the serving edge may be in token mode: a relay carries an edge token
                relay_token=relay_token if keys else None,
            )
            steps.append(("central", self.central))
        if self.agent_peer is not None:
            self.agent = AgentPlacer(self.agent_peer, Breaker(s.breaker_failures, s.breaker_open_s))
            steps.append(("agent", self.agent))
        if static is not None and s.engines:
            steps.append(("static", PlainStep(static)))
        self.placer = PlacementChain(
            steps, metrics.registry, avoid_s=s.failed_engine_avoid_s, sessions=self.agent
        )
        self.events: BatchedEventSink | None = None
        if self.central_peer is not None:
            self.events = BatchedEventSink(
                self.central_peer,
                queue_max=s.event_queue_max,
                batch_max=s.event_batch_max,
                flush_s=s.event_flush_s,
                registry=metrics.registry,
            )
        # Events go to central only; the agent hears about live upstreams through the chain
        # (confirm, and session reports for the sessions it did not place), not through events.
        self.sink: EventSink = self.events if self.events is not None else NullEventSink()
        self.snapshots: SnapshotLoop | None = None

    def _peer(self, name: PeerName, url: str, api_key: SecretStr) -> ControlPeer:
        timeout_s = self.settings.central_timeout_s
        if name == "agent":
            timeout_s = self.settings.agent_timeout_s
        return ControlPeer(
            name,
            self.http,
            url,
            api_key.get_secret_value(),
            proxy_id=self.proxy_id,
            host=self.host,
            timeout_s=timeout_s,
        )

    def degraded(self, placement: Placement) -> bool:
        """Central wants the session on ``placement`` moved off its engine (draining, recycling,
        degraded stats): the channel opens a replacement first, then switches. Never for a
        relay, and never without central (standalone, or its answer went stale)."""
        if self.snapshots is None or placement.engine_id is None:
            return False
        return placement.engine_id in self.snapshots.moving_off()

    def start(self, edge: Edge) -> None:
        if self.central_peer is not None:
            self.snapshots = SnapshotLoop(
                edge,
                self.central_peer,
                url=self.url,
                interval_s=self.settings.snapshot_interval_s,
            )
            self.snapshots.start()
        if self.events is not None:
            if self.snapshots is not None:
                self.events.on_reconnect = self.snapshots.send_soon
            self.events.start()
        if self.agent is not None:
            self.agent.start_refresh(self.settings.agent_session_refresh_s)
        log.info(
            "control_links",
            steps=[name for name, _ in self.placer.steps],
            proxy_id=self.proxy_id,
            host=self.host,
            relay_url=self.url,
        )

    async def aclose(self) -> None:
        """After the drain: ship the last events (stream_ended) and a final snapshot, briefly."""
        if self.snapshots is not None:
            await self.snapshots.aclose()
        if self.events is not None:
            await self.events.aclose(self.settings.central_timeout_s)
        if self.snapshots is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.snapshots.send(), self.settings.central_timeout_s + 1)
        if self.agent is not None:
            await self.agent.aclose()
        await self.http.aclose()
