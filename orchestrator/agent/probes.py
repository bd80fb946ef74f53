"""Talking to engines over HTTP: ``get_status``, liveness, network status and session stats.

Transport only: what the answers mean for an engine's health is ``engine_health``'s rule."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from acefleet.wire import EngineStats
from orchestrator.agent.engine_record import Engine, now_utc
from orchestrator.agent.profiles import NETWORK_PATH, EngineProfile


class EngineProbe:
    def __init__(self, client: httpx.AsyncClient, timeout_s: float) -> None:
        self.client = client
        self.timeout = timeout_s

    async def _json(self, url: str) -> Any:
        r = await self.client.get(url, timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    async def get_status(self, engine: Engine, profile: EngineProfile) -> Any:
        """The engine's ``get_status`` body, or None when it gave no JSON answer."""
        try:
            return await self._json(engine.base_url + profile.ready_path)
        except (httpx.HTTPError, ValueError):
            return None

    async def answers(self, engine: Engine, profile: EngineProfile) -> bool:
        """Does the engine's HTTP server answer at all (any status)?"""
        try:
            await self.client.get(engine.base_url + profile.live_path, timeout=self.timeout)
        except httpx.HTTPError:
            return False
        return True

    async def network_connected(self, engine: Engine) -> bool | None:
        """The engine's own view of its connectivity (a second opinion on the VPN)."""
        try:
            body = await self._json(engine.base_url + NETWORK_PATH)
        except (httpx.HTTPError, ValueError):
            return None
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict) or "connected" not in result:
            return None
        return bool(result["connected"])

    async def stats(self, engine: Engine, stat_url: str) -> EngineStats | None:
        """Poll a session's stat_url; only its path is used, always against this engine."""
        parts = urlsplit(stat_url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            body = await self._json(engine.base_url + path)
        except (httpx.HTTPError, ValueError):
            return None
        resp = body.get("response") if isinstance(body, dict) else None
        if not isinstance(resp, dict):
            return None
        return EngineStats(
            status=_str(resp.get("status")),
            peers=_int(resp.get("peers")),
            speed_down_kbps=_int(resp.get("speed_down")),
            speed_up_kbps=_int(resp.get("speed_up")),
            downloaded_bytes=_int(resp.get("downloaded")),
            uploaded_bytes=_int(resp.get("uploaded")),
            at=now_utc(),
        )


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float | str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
