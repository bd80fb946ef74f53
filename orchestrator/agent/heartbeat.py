"""Heartbeats to acefleet-central: report the inventory, apply the directives in the reply."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
from pydantic import ValidationError

from acefleet import logs
from acefleet.wire import Directive, Heartbeat, HeartbeatReply
from orchestrator.agent.dockerops import DockerError
from orchestrator.agent.errors import ProvisionRefused
from orchestrator.agent.pool import Pool
from orchestrator.agent.tunnel_compat import heartbeat_body

log = logs.get(__name__)


class HeartbeatLoop:
    def __init__(self, pool: Pool, agent_url: str) -> None:
        self.pool = pool
        s = pool.s
        self.url = f"{s.central_url.rstrip('/')}/v1/hosts/{s.host}/heartbeat"
        self.agent_url = agent_url
        self.headers = {"Authorization": f"Bearer {s.central_api_key.get_secret_value()}"}
        self.interval = s.heartbeat_interval_s
        self.seq = 0

    def heartbeat(self) -> Heartbeat:
        pool = self.pool
        return Heartbeat(
            host=pool.s.host,
            agent_url=self.agent_url,
            seq=self.seq,
            engines=pool.reports(),
            max_engines=pool.s.max_engines,
            vpn=pool.vpn_state(),
            provisioning=pool.provisioning(),
            draining=pool.draining,
            tunnels=pool.tunnel_reports(),
        )

    def body(self) -> dict[str, Any]:
        """The heartbeat as sent: without tunnel keys when the agent runs no tunnels."""
        return heartbeat_body(self.heartbeat(), tunnels=self.pool.tunnels is not None)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                reply = await self.send()
                failures = 0
                # Sessions central placed here; kept while central is away (still live, likely).
                for engine_id in set(self.pool.central_claims) - set(reply.claimed):
                    engine = self.pool.engines.get(engine_id)
                    if engine is not None:
                        engine.idle_since = time.monotonic()  # free from now, not since ready
                self.pool.central_claims = reply.claimed
                if reply.free_engines is not None:
                    self.pool.central_free_engines = reply.free_engines
                self.interval = reply.interval_s if reply.interval_s > 0 else self.interval
                for directive in reply.directives:
                    await self.apply(directive)
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, ValidationError, ValueError) as exc:
                failures += 1
                self.pool.metrics.heartbeats.labels(result="error").inc()
                log.warning("heartbeat_failed", error=str(exc), failures=failures)
            # Back off while central is away, but never by more than 30 s.
            await asyncio.sleep(min(30.0, self.interval * (2 ** min(failures, 4))))

    async def send(self) -> HeartbeatReply:
        body = self.body()
        self.seq += 1
        r = await self.pool.http.post(self.url, json=body, headers=self.headers, timeout=10)
        r.raise_for_status()
        self.pool.metrics.heartbeats.labels(result="ok").inc()
        return HeartbeatReply.model_validate(r.json())

    async def apply(self, d: Directive) -> None:
        pool = self.pool
        log.info("directive", kind=d.kind, count=d.count, engine=d.engine_id)
        if d.kind == "provision":
            for _ in range(max(0, min(d.count or 1, pool.s.max_engines))):
                try:
                    pool.start_provision()
                except ProvisionRefused as exc:
                    log.warning("directive_refused", kind=d.kind, code=exc.code)
                    break
        elif d.kind == "stop_engine" and d.engine_id:
            engine = pool.find(d.engine_id)
            if engine is not None:
                with contextlib.suppress(DockerError):
                    await pool.remove(engine, "central")
        elif d.kind in ("drain", "undrain"):
            pool.draining = d.kind == "drain"
