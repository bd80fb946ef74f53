"""Gluetun's control server: is the VPN up, and which port does it forward?

Gluetun answers ``GET /v1/vpn/status`` (older: ``/v1/openvpn/status``) with
``{"status": "running"}`` and ``GET /v1/openvpn/portforwarded`` (newer: ``/v1/portforward``) with
``{"port": N}``; an optional API key travels as ``X-API-Key``.
"""

from __future__ import annotations

from typing import Any

import httpx

from acefleet import logs
from acefleet.wire import VpnState

log = logs.get(__name__)

STATUS_PATHS = ("/v1/vpn/status", "/v1/openvpn/status")
PORT_PATHS = ("/v1/openvpn/portforwarded", "/v1/portforward")


class VpnMonitor:
    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.state = VpnState(enabled=True, connected=None, forwarded_port=None)
        self.reason: str | None = "VPN status not checked yet"

    async def _first(self, paths: tuple[str, ...]) -> Any:
        last: Exception | None = None
        for path in paths:
            try:
                r = await self.client.get(self.base + path, headers=self.headers, timeout=5)
            except httpx.HTTPError as exc:
                last = exc
                continue
            if r.status_code == 404:
                continue
            r.raise_for_status()
            return r.json()
        raise httpx.HTTPError(f"no Gluetun control endpoint answered ({last or 'all 404'})")

    async def check(self, engines_say_connected: bool | None) -> VpnState:
        try:
            status = await self._first(STATUS_PATHS)
            running = isinstance(status, dict) and status.get("status") == "running"
            port: int | None = None
            if running:
                body = await self._first(PORT_PATHS)
                raw = body.get("port") if isinstance(body, dict) else None
                port = int(raw) if isinstance(raw, int) and raw > 0 else None
        except (httpx.HTTPError, ValueError) as exc:
            self.state = VpnState(enabled=True, connected=False, forwarded_port=None)
            self.reason = f"VPN control server unreachable: {exc}"
            return self.state
        if not running:
            self.reason = f"VPN is not running (Gluetun says {status!r})"
        elif engines_say_connected is False:
            # Gluetun says up, but the engines cannot reach the network through it.
            running = False
            self.reason = "VPN up per Gluetun, but engines report no network connection"
        else:
            self.reason = None
        self.state = VpnState(enabled=True, connected=running, forwarded_port=port)
        return self.state
