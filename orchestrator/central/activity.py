"""Active or standby: of the centrals of a control group, only the holder of the control VIP serves.

keepalived moves the control VIP between the control hosts and runs a notify script on every
change that writes its VRRP state (``MASTER``, ``BACKUP``, ``FAULT``, ``STOP``) into
``standby_state_file``; ``standby_control_vip`` names the VIP itself. With either set, central
serves only while every configured source says this host holds the VIP (the state file reads
MASTER, the address is on a local interface); with neither, it always serves, as a single central
does. The sources are polled every ``standby_check_interval_s``.

A standby answers ``/livez`` (keepalived's health check), ``/readyz`` (503 ``standby``) and
``/metrics``; every other request gets 503 ``standby_central`` with a Retry-After, from
:class:`StandbyGate`, the outermost middleware, so no heartbeat, claim, event or snapshot reaches
the live state. Live state is never carried across a move: on takeover it starts empty, exactly
as in a freshly started process (warm-up, heartbeats and snapshots rebuild it; the agents' busy
counts are echoed until each host's proxy has snapshotted), and the stores re-read the database
the other central wrote; on losing the VIP it is dropped and the stores stop (a standby writes
nothing, not even the guide file it watches).

A request admitted just before the VIP leaves may still finish after the gate closed; whatever it
changes lands in live state that is dropped again before this central next serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from acefleet import logs
from acefleet.errors import error_headers, error_json
from orchestrator.central.state import Central

log = logs.get(__name__)

# What a standby still answers: liveness, readiness (saying "standby") and its metrics.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
# keepalived's VRRP state that means "this host holds the VIP".
MASTER = "MASTER"
# WebSocket close code "try again later" (RFC 6455 registry): the live feed of a standby.
WS_TRY_AGAIN_LATER = 1013

Probe = Callable[[], bool]
Step = Callable[[], Awaitable[None]]


def vrrp_state(path: str) -> str:
    """The state keepalived's notify script last wrote (first word, upper case); a missing or
    unreadable file is ``UNKNOWN`` (keepalived has not decided yet, or is not running)."""
    try:
        words = Path(path).read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return "UNKNOWN"
    return words[0].upper() if words else "UNKNOWN"


def local_addresses() -> set[str]:
    """The IPv4 and IPv6 addresses on this host's interfaces, from the kernel's tables in /proc
    (what ``ip addr`` shows, without a process per check)."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        last = ""
        for line in Path("/proc/net/fib_trie").read_text(encoding="ascii").splitlines():
            text = line.strip()
            if text.startswith("|--"):
                last = text[3:].strip()
            elif text.startswith("/32 host LOCAL") and last:
                found.add(last)
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text(encoding="ascii").splitlines():
            fields = line.split()
            if fields and len(fields[0]) == 32:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return found


def holds_address(vip: str) -> bool:
    """Whether ``vip`` is on one of this host's interfaces (keepalived added it here)."""
    return str(ipaddress.ip_address(vip)) in local_addresses()


def vip_probe(state_file: str, control_vip: str) -> Probe | None:
    """The check that says whether this central should serve now; None when no source is
    configured (a single central: always serves)."""
    if not state_file and not control_vip:
        return None

    def probe() -> bool:
        if state_file and vrrp_state(state_file) != MASTER:
            return False
        return not control_vip or holds_address(control_vip)

    return probe


def fresh_live_state(central: Central) -> None:
    """Central's live state as a newly started process has it (empty fleet, claim book and stream
    registry; warm-up from now). The object stays the one the routes and the claim fast path hold;
    its version only moves forward, so live-update clients see the change."""
    version = central.version
    Central.__init__(
        central, central.settings, central.metrics, central.history, central.clock, central.rng
    )
    central.version = version + 1


class Activity:
    """This central's role, and the steps that move it: ``serve`` (rebuild and open) runs before
    the gate opens, ``stand_by`` (drop) after it has closed."""

    def __init__(
        self,
        probe: Probe | None,
        serve: Step,
        stand_by: Step,
        interval_s: float = 0.5,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.probe = probe
        self.serve = serve
        self.stand_by = stand_by
        self.interval_s = interval_s
        self._active = False
        self.takeovers = 0
        self._task: asyncio.Task[None] | None = None
        self._active_gauge = Gauge(
            "acefleet_central_active",
            "1 while this central serves (holds the control VIP, or has no standby), 0 as standby",
            registry=registry,
        )
        self._takeovers = Counter(
            "acefleet_central_takeovers",
            "Times this central took over from a standby role (not counting its start)",
            registry=registry,
        )

    @property
    def active(self) -> bool:
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = value
        self._active_gauge.set(1 if value else 0)

    @property
    def role(self) -> str:
        return "active" if self.active else "standby"

    async def start(self) -> None:
        """The first decision, at start: a central that should serve does before the first request
        (a failure here fails the start, as it would without a standby)."""
        if self.probe is None or self.probe():
            await self.serve()
            self.active = True
        else:
            log.info("central_standby", reason="the control VIP is elsewhere")
        if self.probe is not None:
            self._task = asyncio.create_task(self._watch(), name="central-activity")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> None:
        """One look at the VIP; a move when this central's role no longer matches it."""
        if self.probe is None:
            return
        wanted = self.probe()
        if wanted and not self.active:
            log.warning("central_takeover", takeovers=self.takeovers + 1)
            try:
                await self.serve()
            except Exception:
                await self.stand_by()  # half-opened stores closed again; the next check retries
                raise
            self.active = True
            self.takeovers += 1
            self._takeovers.inc()
        elif not wanted and self.active:
            self.active = False  # first: the gate closes before the state goes
            log.warning("central_standby", reason="the control VIP left this host")
            await self.stand_by()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception as exc:  # e.g. the database refused the takeover: stay standby
                log.error("central_takeover_failed", error=repr(exc))


class StandbyGate:
    """Outermost ASGI middleware: while this central is standby, only :data:`OPEN_PATHS` pass;
    HTTP gets 503 ``standby_central``, a live WebSocket is refused (1013)."""

    def __init__(self, app: ASGIApp, activity: Activity, retry_after_s: float) -> None:
        self.app = app
        self.activity = activity
        self.retry_after_s = retry_after_s
        body = error_json(
            "standby_central",
            "this central is the standby; the active one holds the control VIP",
            retry_after_s,
        )
        headers = {**error_headers(503, retry_after_s), "Content-Type": "application/json"}
        headers["Content-Length"] = str(len(body))
        self._body = body
        self._headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.activity.active
            or scope["type"] not in ("http", "websocket")
            or scope["path"] in OPEN_PATHS
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER})
            return
        await send({"type": "http.response.start", "status": 503, "headers": self._headers})
        await send({"type": "http.response.body", "body": self._body})
