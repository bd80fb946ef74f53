"""Gluetun's control server, as the agent reads it: is the VPN up, where does it exit, which port
does the provider forward?

Rules:

1. Every route is tried in its current form first and in its older form when the server answers
   404, so a Gluetun from before a route was renamed still works: status ``/v1/vpn/status`` then
   ``/v1/openvpn/status``; forwarded port ``/v1/portforward`` then
   ``/v1/openvpn/portforwarded``. The public IP has one route, ``/v1/publicip/ip``.
2. ``GluetunClient.read`` never raises: whatever goes wrong becomes a ``GluetunStatus`` whose
   ``reason`` says it for a human (refused API key, timeout, connection refused, unknown
   answer). ``reachable`` means the control server answered over HTTP at all.
3. The public IP and the forwarded port are read only while the VPN runs: a stopped tunnel has
   neither. A port of 0 (none forwarded, or forwarding off) is ``None``.
4. The API key travels as ``X-API-Key`` on every request (Gluetun's ``apikey`` auth); 401 and 403
   name the key as the likely cause.
5. ``VpnMonitor`` is the legacy single-VPN mode (``vpn_container``) on top of the same client: an
   engine's own view of its network is a second opinion that can only say "down".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from acefleet import logs
from acefleet.wire import VpnState

log = logs.get(__name__)

STATUS_PATHS = ("/v1/vpn/status", "/v1/openvpn/status")
PORT_PATHS = ("/v1/portforward", "/v1/openvpn/portforwarded")
PUBLIC_IP_PATH = "/v1/publicip/ip"
DEFAULT_TIMEOUT_S = 5.0


class GluetunError(Exception):
    """A control request Gluetun did not carry out (unreachable, refused, or unknown answer)."""


@dataclass(frozen=True, slots=True)
class GluetunStatus:
    reachable: bool  # the control server answered
    running: bool  # VPN status "running"
    public_ip: str | None
    forwarded_port: int | None  # None when 0/absent or not asked
    reason: str | None  # why not reachable/running, for a human (None when running)
    # Why ``forwarded_port`` is None although the VPN runs and the port was asked for: the
    # provider forwards none (0), or the port route failed. None otherwise.
    port_reason: str | None = None


class _Answer:
    """The outcome of one GET over a route's forms: a JSON body, or why there is none."""

    __slots__ = ("body", "problem", "reachable")

    def __init__(self, body: Any = None, problem: str | None = None, reachable: bool = True):
        self.body = body
        self.problem = problem
        self.reachable = reachable


class GluetunClient:
    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.timeout_s = timeout_s

    async def read(self, *, want_port: bool = True) -> GluetunStatus:
        """The tunnel as Gluetun sees it now. Never raises."""
        status = await self._get(STATUS_PATHS)
        if status.problem is not None:
            return GluetunStatus(status.reachable, False, None, None, status.problem)
        word = status.body.get("status") if isinstance(status.body, dict) else None
        if not isinstance(word, str):
            reason = f"unknown VPN status answer {status.body!r}"
            return GluetunStatus(True, False, None, None, reason)
        if word != "running":
            return GluetunStatus(True, False, None, None, f"VPN is {word} (Gluetun's status)")
        public_ip = await self._public_ip()
        port: int | None = None
        port_reason: str | None = None
        if want_port:
            port, port_reason = await self._forwarded_port()
        return GluetunStatus(True, True, public_ip, port, None, port_reason)

    async def set_vpn(self, running: bool) -> None:
        """Start or stop the VPN (``PUT /v1/vpn/status``, older ``/v1/openvpn/status``)."""
        body = {"status": "running" if running else "stopped"}
        for path in STATUS_PATHS:
            url = self.base + path
            try:
                r = await self.client.put(
                    url, json=body, headers=self.headers, timeout=self.timeout_s
                )
            except httpx.TimeoutException as exc:
                raise GluetunError(f"{url} timed out after {self.timeout_s:g} s") from exc
            except httpx.HTTPError as exc:
                raise GluetunError(f"{url} unreachable: {_describe(exc)}") from exc
            if r.status_code == 404:
                continue
            if r.status_code in (401, 403):
                raise GluetunError(_refused(r.status_code, "PUT", path))
            if r.status_code >= 300:
                raise GluetunError(f"PUT {path} answered HTTP {r.status_code}: {r.text[:200]}")
            return
        routes = ", ".join(STATUS_PATHS)
        raise GluetunError(f"control server {self.base} has none of {routes} (all 404)")

    async def _public_ip(self) -> str | None:
        answer = await self._get((PUBLIC_IP_PATH,))
        raw = answer.body.get("public_ip") if isinstance(answer.body, dict) else None
        return raw if isinstance(raw, str) and raw else None

    async def _forwarded_port(self) -> tuple[int | None, str | None]:
        answer = await self._get(PORT_PATHS)
        if answer.problem is not None:
            return None, f"forwarded port unreadable: {answer.problem}"
        raw = answer.body.get("port") if isinstance(answer.body, dict) else None
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 65535:
            return None, f"unknown forwarded port answer {answer.body!r}"
        if raw == 0:
            return None, "Gluetun forwards no port (0)"
        return raw, None

    async def _get(self, paths: tuple[str, ...]) -> _Answer:
        """GET the first of ``paths`` that is not 404 (rule 1)."""
        for path in paths:
            url = self.base + path
            try:
                r = await self.client.get(url, headers=self.headers, timeout=self.timeout_s)
            except httpx.TimeoutException:
                return _Answer(
                    problem=f"control server {self.base} timed out after {self.timeout_s:g} s",
                    reachable=False,
                )
            except httpx.HTTPError as exc:
                return _Answer(
                    problem=f"control server {self.base} unreachable: {_describe(exc)}",
                    reachable=False,
                )
            if r.status_code == 404:
                continue
            if r.status_code in (401, 403):
                return _Answer(problem=_refused(r.status_code, "GET", path))
            if r.status_code != 200:
                return _Answer(problem=f"GET {path} answered HTTP {r.status_code}")
            try:
                return _Answer(body=r.json())
            except ValueError:
                return _Answer(problem=f"GET {path} answered non-JSON {r.text[:80]!r}")
        return _Answer(
            problem=f"control server {self.base} has none of {', '.join(paths)} (all 404):"
            " not Gluetun's control server, or a Gluetun too old"
        )


def _refused(code: int, method: str, path: str) -> str:
    return (
        f"control server refused {method} {path} (HTTP {code}): the API key (X-API-Key, agent"
        " setting vpn_api_key) does not match Gluetun's HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE"
        " or its auth config"
    )


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class VpnMonitor:
    """The legacy single VPN (``vpn_container``): one Gluetun, polled by ``upkeep.vpn_tick``."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self.gluetun = GluetunClient(client, base_url, api_key)
        self.state = VpnState(enabled=True, connected=None, forwarded_port=None)
        self.reason: str | None = "VPN status not checked yet"

    async def check(self, engines_say_connected: bool | None) -> VpnState:
        status = await self.gluetun.read(want_port=True)
        running = status.running
        if not status.reachable:
            self.reason = f"VPN control server unreachable: {status.reason}"
        elif not running:
            self.reason = f"VPN is not running: {status.reason}"
        elif engines_say_connected is False:
            # Gluetun says up, but the engines cannot reach the network through it.
            running = False
            self.reason = "VPN up per Gluetun, but engines report no network connection"
        else:
            self.reason = None
        self.state = VpnState(enabled=True, connected=running, forwarded_port=status.forwarded_port)
        return self.state
