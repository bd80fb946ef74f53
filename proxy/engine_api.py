"""The client of an engine's HTTP API: start (``format=json``), stop, health probe.

Holds :class:`EngineClient`, the :class:`EngineSession` a start call returns, and
:class:`UpstreamError`, how any upstream failure (these calls or the playback in upstream.py)
reaches the viewers waiting for it.

Each call has its own timeout: the JSON start call (~10 s) is not the playback first byte
(prebuffering, >= 30 s, see upstream.py), and neither is the stop call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from acefleet import logs
from acefleet.errors import ServiceError
from proxy.metrics import Metrics

log = logs.get(__name__)


class UpstreamError(ServiceError):
    """Starting or keeping an upstream failed; viewers waiting for it get ``status`` + ``code``.

    ``engine_fault`` says the source misbehaved (another placement may work), as opposed to the
    content being unavailable (no other engine will do better).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        engine_fault: bool,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(status, code, message, retry_after_s=retry_after_s)
        self.engine_fault = engine_fault


@dataclass(frozen=True)
class EngineSession:
    playback_url: str
    command_url: str | None
    stat_url: str | None
    infohash: str | None
    playback_session_id: str | None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class EngineClient:
    def __init__(self, *, call_timeout: float, stop_timeout: float, metrics: Metrics) -> None:
        self.call_timeout = call_timeout
        self.stop_timeout = stop_timeout
        self.metrics = metrics
        # trust_env=False: engines are on loopback/LAN; an HTTP(S)_PROXY meant for the
        # internet must never sit between us and them.
        self.http = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def start(
        self, endpoint: str, selector: tuple[str, str], params: Mapping[str, str], pid: str
    ) -> EngineSession:
        kind, value = selector
        query = {**params, kind: value, "format": "json", "pid": pid}
        url = f"http://{endpoint}/ace/getstream"
        body = await self._json("start", url, query, self.call_timeout)
        error = body.get("error")
        response = body.get("response")
        if error or not isinstance(response, dict):
            reason = str(error or "no response")
            self.metrics.engine_errors.labels("start", "content").inc()
            raise UpstreamError(502, "content_unavailable", f"engine: {reason}", engine_fault=False)
        playback = _str_or_none(response.get("playback_url"))
        if playback is None:
            self.metrics.engine_errors.labels("start", "bad_answer").inc()
            raise UpstreamError(
                502, "engine_bad_answer", "engine answered without playback_url", engine_fault=True
            )
        return EngineSession(
            playback_url=playback,
            command_url=_str_or_none(response.get("command_url")),
            stat_url=_str_or_none(response.get("stat_url")),
            infohash=(_str_or_none(response.get("infohash")) or "").lower() or None,
            playback_session_id=_str_or_none(response.get("playback_session_id")),
        )

    async def stop(self, command_url: str) -> None:
        """Best effort: an engine also ends a session on its own once nobody reads."""
        try:
            body = await self._json("stop", command_url, {"method": "stop"}, self.stop_timeout)
        except UpstreamError as exc:
            log.warning("engine_stop_failed", url=command_url, error=exc.message)
            return
        if body.get("error"):
            log.info("engine_stop_refused", url=command_url, error=str(body["error"]))

    async def probe(self, endpoint: str, limit_s: float) -> bool:
        """Readiness via get_status: never playback (opening streams to check overloads engines)."""
        url = f"http://{endpoint}/server/api"
        try:
            body = await self._json(
                "probe", url, {"api_version": "3", "method": "get_status"}, limit_s
            )
        except UpstreamError:
            return False
        return isinstance(body.get("result"), dict) and not body.get("error")

    async def _json(
        self, call: str, url: str, query: Mapping[str, str], limit_s: float
    ) -> dict[str, Any]:
        started = time.monotonic()
        try:
            resp = await self.http.get(url, params=dict(query), timeout=limit_s)
        except httpx.TimeoutException:
            self.metrics.engine_errors.labels(call, "timeout").inc()
            raise UpstreamError(
                504,
                "engine_timeout",
                f"engine {call} call got no answer within {limit_s:g} s",
                engine_fault=True,
            ) from None
        except httpx.HTTPError as exc:
            self.metrics.engine_errors.labels(call, "unreachable").inc()
            raise UpstreamError(
                502,
                "engine_unreachable",
                f"engine {call} call failed: {type(exc).__name__}",
                engine_fault=True,
            ) from None
        finally:
            self.metrics.engine_call.labels(call).observe(time.monotonic() - started)
        if resp.status_code != 200:
            self.metrics.engine_errors.labels(call, "http_status").inc()
            raise UpstreamError(
                502,
                "engine_error",
                f"engine {call} call answered HTTP {resp.status_code}",
                engine_fault=True,
            )
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.metrics.engine_errors.labels(call, "bad_answer").inc()
            raise UpstreamError(
                502,
                "engine_bad_answer",
                f"engine {call} call answered no JSON object",
                engine_fault=True,
            )
        return body
