"""Gluetun's control server, as the agent reads it: is the VPN up, where does it exit, which port
does the provider forward?

Rules:

1. Every route is tried in its current form first and in its older form when Gluetun does not
   serve the current one, so both sides of a rename work: status ``/v1/vpn/status`` then
   ``/v1/openvpn/status``; forwarded port ``/v1/portforward`` (Gluetun v3.41+) then
   ``/v1/openvpn/portforwarded`` (v3.40 and older; a redirect to the new one since v3.41). The
   public IP has one route, ``/v1/publicip/ip``. "Does not serve" is 404 or 400 (older
   Gluetun), a redirect, or 401/403: Gluetun's auth layer refuses a route it does not know
   before anything else, so v3.40 answers 401 to ``/v1/portforward`` whatever the key.
2. ``GluetunClient.read`` never raises: whatever goes wrong becomes a ``GluetunStatus`` whose
   ``reason`` says it for a human (refused API key, timeout, connection refused, unknown
   answer). ``reachable`` means the control server answered over HTTP at all.
3. The public IP and the forwarded port are read only while the VPN runs: a stopped tunnel has
   neither. A port of 0 (none forwarded, or forwarding off) is ``None``.
4. The API key travels as ``X-API-Key`` on every request (Gluetun's ``apikey`` auth). When no
   form of a route answers and one refused (401/403), the reason names the key.
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
# How a Gluetun without a route answers: 404 in its sub-handlers, 400 ("... not found") for an
# unknown /v1 prefix. (Since v3.39 its auth layer answers 401 first for a route it does not know.)
_ROUTE_MISSING = (400, 404)


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
    """The outcome of one request over a route's forms: a JSON body, or why there is none."""

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
        status = await self._request("GET", STATUS_PATHS)
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
        """Start or stop the VPN (``PUT /v1/vpn/status``, older ``/v1/openvpn/status``); Gluetun
        answers once its VPN loop has reacted. Raises ``GluetunError``."""
        body = {"status": "running" if running else "stopped"}
        answer = await self._request("PUT", STATUS_PATHS, body)
        if answer.problem is not None:
            raise GluetunError(answer.problem)

    async def _public_ip(self) -> str | None:
        answer = await self._request("GET", (PUBLIC_IP_PATH,))
        raw = answer.body.get("public_ip") if isinstance(answer.body, dict) else None
        return raw if isinstance(raw, str) and raw else None  # "" while Gluetun has none

    async def _forwarded_port(self) -> tuple[int | None, str | None]:
        answer = await self._request("GET", PORT_PATHS)
        if answer.problem is not None:
            return None, f"forwarded port unreadable: {answer.problem}"
        body = answer.body if isinstance(answer.body, dict) else {}
        # {"port": N} (older), {"port": N, "ports": [...]}, or {"ports": [...]} alone when a
        # provider forwards several: the first one is the tunnel's.
        raw = body.get("port")
        ports = body.get("ports")
        if (not isinstance(raw, int) or raw == 0) and isinstance(ports, list) and ports:
            raw = ports[0]
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 65535:
            return None, f"unknown forwarded port answer {answer.body!r}"
        if raw == 0:
            return None, "Gluetun forwards no port (0)"
        return raw, None

    async def _request(self, method: str, paths: tuple[str, ...], body: Any = None) -> _Answer:
        """``method`` on the first of ``paths`` Gluetun serves (rule 1)."""
        refused: str | None = None
        missing: list[str] = []
        for path in paths:
            url = self.base + path
            try:
                r = await self.client.request(
                    method, url, json=body, headers=self.headers, timeout=self.timeout_s
                )
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
            if r.status_code == 200:
                try:
                    return _Answer(body=r.json())
                except ValueError:
                    return _Answer(problem=f"{method} {path} answered non-JSON {r.text[:80]!r}")
            if r.status_code in (401, 403):
                # Either the key is wrong, or this Gluetun lacks the route (no auth role covers
                # an unknown route): only the other forms can tell.
                refused = refused or _refused(r.status_code, method, path)
            elif r.status_code in _ROUTE_MISSING or 300 <= r.status_code < 400:
                said = r.text.strip()[:60] if r.status_code == 400 else ""
                missing.append(f"{path} HTTP {r.status_code}" + (f" {said!r}" if said else ""))
            else:
                detail = r.text.strip()[:120]
                return _Answer(problem=f"{method} {path} answered HTTP {r.status_code}: {detail}")
        if refused is not None:
            return _Answer(problem=refused)
        return _Answer(
            problem=f"control server {self.base} serves none of {', '.join(paths)}"
            f" ({'; '.join(missing)}): not Gluetun's control server, or a Gluetun too old"
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
