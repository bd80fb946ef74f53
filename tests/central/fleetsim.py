"""Simulated agents and proxies that speak central's wire contracts over real HTTP."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from acefleet.wire import (
    ClaimRequest,
    EngineHealth,
    EngineReport,
    EventBatch,
    Heartbeat,
    HeartbeatReply,
    LiveStream,
    ProvisioningState,
    ProxySnapshot,
    StreamEvent,
    VpnState,
)

SERVICE_KEY = "service-key-for-tests-0001"
OPERATOR_KEY = "operator-key-for-tests-0001"
VIEWER_KEY = "viewer-key-for-tests-00001"
_ids = itertools.count(1)


def engine(
    host: str,
    n: int,
    *,
    cap: int = 1,
    streams: int = 0,
    health: EngineHealth = EngineHealth.healthy,
    vpn_forwarded: bool = False,
    draining: bool = False,
) -> EngineReport:
    return EngineReport(
        id=f"{host}-eng{n}",
        host=host,
        endpoint=f"127.0.0.1:{19000 + n}",
        http_port=19000 + n,
        profile="sim",
        health=health,
        draining=draining,
        stream_cap=cap,
        streams=streams,
        vpn_forwarded=vpn_forwarded,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


class Agent:
    """One edge host's agent: a list of engine reports and a heartbeat sequence number."""

    def __init__(self, host: str, engines: int = 2, *, cap: int = 1, max_engines: int = 10):
        self.host = host
        self.seq = 0
        self.max_engines = max_engines
        self.draining = False
        self.vpn = VpnState()
        self.provisioning = ProvisioningState()
        self.engines = [engine(host, i, cap=cap) for i in range(engines)]
        self.replies: list[HeartbeatReply] = []

    def heartbeat_body(self) -> Heartbeat:
        return Heartbeat(
            host=self.host,
            agent_url=f"http://127.0.0.1:8100/{self.host}",
            seq=self.seq,
            engines=self.engines,
            max_engines=self.max_engines,
            draining=self.draining,
            vpn=self.vpn,
            provisioning=self.provisioning,
        )

    def beat(self, client: httpx.Client) -> HeartbeatReply:
        r = client.post(
            f"/v1/hosts/{self.host}/heartbeat",
            content=self.heartbeat_body().model_dump_json(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        self.seq += 1
        reply = HeartbeatReply.model_validate_json(r.content)
        self.replies.append(reply)
        for d in reply.directives:
            if d.kind == "drain":
                self.draining = True
            elif d.kind == "undrain":
                self.draining = False
        return reply

    async def abeat(self, client: httpx.AsyncClient) -> HeartbeatReply:
        r = await client.post(
            f"/v1/hosts/{self.host}/heartbeat",
            content=self.heartbeat_body().model_dump_json(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        self.seq += 1
        return HeartbeatReply.model_validate_json(r.content)


def proxy_url(host: str) -> str:
    return f"http://127.0.0.1:6880/{host}"


def claim_body(content: str, host: str, proxy_id: str | None = None) -> dict[str, Any]:
    req = ClaimRequest(content_key=content, proxy_id=proxy_id or f"proxy-{host}", host=host)
    return req.model_dump()


def snapshot(
    client: httpx.Client, host: str, streams: list[LiveStream] | None = None
) -> dict[str, Any]:
    body = ProxySnapshot(host=host, url=proxy_url(host), streams=streams or [])
    r = client.put(
        f"/v1/proxies/proxy-{host}/streams",
        content=body.model_dump_json(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def event(kind: str, stream_id: str, **fields: Any) -> StreamEvent:
    return StreamEvent(
        event_id=f"ev-{next(_ids)}",
        type=kind,  # type: ignore[arg-type]
        stream_id=stream_id,
        at=datetime.now(UTC),
        **fields,
    )


def send_events(client: httpx.Client, host: str, *events: StreamEvent) -> list[dict[str, Any]]:
    batch = EventBatch(proxy_id=f"proxy-{host}", events=list(events))
    r = client.post(
        "/v1/events", content=batch.model_dump_json(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def ended_history(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    """``GET /v1/streams/history`` with ``params``, once every row has ended (central writes
    history behind: a few seconds at most); the last rows read if that does not happen."""
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = client.get("/v1/streams/history", params=params).json()["items"]
        if rows and all(r["ended_at"] for r in rows):
            break
        time.sleep(0.2)
    return rows
