"""A whole fleet on one machine: central, two agents (each owning simulator engines in the real
dockerd, told apart by host labels and port ranges) and two proxies, all on loopback.

Used by tests/fleet and bench/fleet_bench.py. Every engine carries ``acefleet.host=<edge>``
with edge names unique to the run, and :meth:`Fleet.close` removes them by that label.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import procs
from tests.support.viewers import Viewer

SERVICE_KEY = "fleet-service-key-0123456789abcdef"
OPERATOR_KEY = "fleet-operator-key-0123456789abcdef"
AGENT_KEY = "fleet-agent-key-0123456789"
SIM_IMAGE = "acefleet/engine-sim"
HEARTBEAT_S = 0.5

# Fast timing everywhere, with margins for a loaded 2-core CI box.
CENTRAL_ENV = {
    "ACEFLEET_CENTRAL_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
    "ACEFLEET_CENTRAL_STALE_AFTER_S": "2",
    "ACEFLEET_CENTRAL_LOST_AFTER_S": "20",
    "ACEFLEET_CENTRAL_WARMUP_S": "1",
    "ACEFLEET_CENTRAL_CLAIM_TTL_S": "15",
    "ACEFLEET_CENTRAL_WARM_BUFFER_PER_EDGE": "2",
    "ACEFLEET_CENTRAL_SERVICE_KEYS": SERVICE_KEY,
    "ACEFLEET_CENTRAL_OPERATOR_KEYS": OPERATOR_KEY,
    "ACEFLEET_CENTRAL_LOG_FORMAT": "json",
}


def engine_container(endpoint: str) -> str:
    """The container id of the engine whose HTTP API is published at ``127.0.0.1:<port>``."""
    port = endpoint.rsplit(":", 1)[1]
    return docker("ps", "-q", "--filter", f"label=acefleet.http-port={port}")


def docker(*args: str) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def remove_engines(host: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label=acefleet.host={host}").split()
    if ids:
        docker("rm", "-f", *ids)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = repr(exc)
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Edge:
    name: str
    ports: range  # engine HTTP and P2P ports of this edge's agent
    agent: procs.Service | None = None
    proxy: procs.Service | None = None
    agent_port: int = 0
    proxy_port: int = 0
    agent_args: list[str] = field(default_factory=list)
    proxy_args: list[str] = field(default_factory=list)


@dataclass
class Fleet:
    log_dir: Path
    db: Path
    edges: dict[str, Edge] = field(default_factory=dict)
    central: procs.Service | None = None
    central_port: int = 0
    central_env: dict[str, str] = field(default_factory=dict)
    agent_extra: list[str] = field(default_factory=list)

    # --- start, stop ----------------------------------------------------------------------
    @classmethod
    def up(
        cls,
        log_dir: Path,
        *,
        edges: int = 2,
        base_port: int = 23000,
        engines: int = 2,
        central_env: dict[str, str] | None = None,
        agent_extra: list[str] | None = None,
    ) -> Fleet:
        """Start the fleet; ``central_env`` and ``agent_extra`` override the fast defaults."""
        run = uuid.uuid4().hex[:6]
        fleet = cls(log_dir, log_dir / "central.db", central_env=central_env or {})
        fleet.agent_extra = agent_extra or []
        for i in range(edges):
            low = base_port + i * 100
            name = f"fl{run}{chr(ord('a') + i)}"
            fleet.edges[name] = Edge(name, range(low, low + 100))
        try:
            fleet.start_central()
            for edge in fleet.edges.values():
                fleet.start_agent(edge)
            for edge in fleet.edges.values():
                fleet.start_proxy(edge)
            fleet.wait_engines(per_edge=engines)
        except BaseException:
            fleet.close()
            raise
        return fleet

    def start_central(self) -> None:
        self.central_port = self.central_port or procs.free_port()
        env = {
            **CENTRAL_ENV,
            **self.central_env,
            "ACEFLEET_CENTRAL_LISTEN_PORT": str(self.central_port),
            "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{self.db}",
        }
        self.central = procs.start(
            "acefleet-central",
            [],
            port=self.central_port,
            ready_path="/readyz",
            log_dir=self.log_dir,
            env=env,
        )

    def start_agent(self, edge: Edge) -> None:
        edge.agent_port = edge.agent_port or procs.free_port()
        low = edge.ports.start
        edge.agent_args = edge.agent_args or [
            "--host", edge.name,
            "--listen-port", str(edge.agent_port),
            "--agent-check-port", "0",
            "--engine-image", SIM_IMAGE,
            # 1 Mbit/s keeps many viewers cheap for the test process on a shared 2-core box
            "--engine-extra-args=--timing,fast,--media,synthetic,--bitrate,1000000",
            "--http-port-range", f"{low}-{low + 49}",
            "--p2p-port-range", f"{low + 50}-{low + 99}",
            "--min-engines", "2",
            "--free-engines", "1",
            "--max-engines", "6",
            "--stream-cap", "4",
            "--idle-grace-s", "600",
            "--reconcile-interval-s", "0.5",
            "--probe-interval-s", "0.5",
            "--probe-failures", "2",
            "--ready-poll-s", "0.2",
            "--provision-min-interval-s", "0",
            "--provision-concurrency", "3",
            "--replace-cooldown-s", "1",
            "--central-url", self.central_url,
            "--heartbeat-interval-s", str(HEARTBEAT_S),
            "--state-file", str(self.log_dir / f"agent-{edge.name}.json"),
            "--log-format", "json",
            *self.agent_extra,
        ]  # fmt: skip
        edge.agent = procs.start(
            "acefleet-agent",
            edge.agent_args,
            port=edge.agent_port,
            ready_path="/readyz",
            log_dir=self.log_dir,
            env={
                "ACEFLEET_AGENT_API_KEY": AGENT_KEY,
                "ACEFLEET_AGENT_CENTRAL_API_KEY": SERVICE_KEY,
            },
            timeout=60,
        )

    def start_proxy(self, edge: Edge, *extra: str) -> None:
        edge.proxy_port = edge.proxy_port or procs.free_port()
        edge.proxy_args = edge.proxy_args or [
            "--host", "127.0.0.1",
            "--port", str(edge.proxy_port),
            "--edge-host", edge.name,
            "--proxy-id", f"proxy-{edge.name}",
            "--central-url", self.central_url,
            "--agent-url", f"http://127.0.0.1:{edge.agent_port}",
            "--central-timeout-s", "1",
            "--agent-timeout-s", "2",
            "--breaker-open-s", "2",
            "--snapshot-interval-s", "1",
            "--event-flush-s", "0.1",
            "--grace-s", "1",
            "--stall-timeout-s", "2",
            "--failovers", "3",
            "--engine-call-timeout-s", "3",
            "--first-byte-timeout-s", "15",
            "--client-rate", "1000",
            "--client-burst", "1000",
            "--buffer-bytes", "2097152",
            "--join-max-bytes", "262144",
            "--log-format", "json",
            *extra,
        ]  # fmt: skip
        edge.proxy = procs.start(
            "acefleet-proxy",
            edge.proxy_args,
            port=edge.proxy_port,
            ready_path="/readyz",
            log_dir=self.log_dir,
            env={
                "ACEFLEET_PROXY_CENTRAL_API_KEY": SERVICE_KEY,
                "ACEFLEET_PROXY_AGENT_API_KEY": AGENT_KEY,
            },
        )

    def restart(self, svc: procs.Service) -> procs.Service:
        """Start a stopped service again with the same arguments and port."""
        if self.central is svc:
            self.start_central()
            return self.central
        for edge in self.edges.values():
            if edge.agent is svc:
                self.start_agent(edge)
                assert edge.agent is not None
                return edge.agent
            if edge.proxy is svc:
                self.start_proxy(edge)
                assert edge.proxy is not None
                return edge.proxy
        raise KeyError(svc.name)

    def close(self) -> None:
        for edge in self.edges.values():
            for svc in (edge.proxy, edge.agent):
                if svc is not None:
                    svc.stop(timeout=8)
        if self.central is not None:
            self.central.stop()
        for edge in self.edges.values():
            remove_engines(edge.name)

    # --- views ----------------------------------------------------------------------------
    @property
    def central_url(self) -> str:
        return f"http://127.0.0.1:{self.central_port}"

    def edge(self, i: int) -> Edge:
        return list(self.edges.values())[i]

    def proxy_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.edge(i).proxy_port}"

    def central_get(self, path: str) -> Any:
        r = httpx.get(self.central_url + path, headers={"X-API-Key": OPERATOR_KEY}, timeout=5)
        r.raise_for_status()
        return r.json()

    def agent_engines(self, edge: Edge) -> list[dict[str, Any]]:
        r = httpx.get(f"http://127.0.0.1:{edge.agent_port}/v1/engines", timeout=5)
        r.raise_for_status()
        engines: list[dict[str, Any]] = r.json()["engines"]
        return engines

    def healthy_engines(self, edge: Edge) -> list[dict[str, Any]]:
        return [e for e in self.agent_engines(edge) if e["health"] == "healthy"]

    def wait_engines(self, per_edge: int, timeout: float = 90) -> None:
        for edge in self.edges.values():
            wait_for(
                f"{per_edge} healthy engines on {edge.name}",
                lambda e=edge: len(self.healthy_engines(e)) >= per_edge,  # type: ignore[misc]
                timeout=timeout,
            )

    def engine_endpoints(self) -> list[str]:
        """Every engine of the fleet (``127.0.0.1:port``), from Docker's labels."""
        out: list[str] = []
        for edge in self.edges.values():
            rows = docker(
                "ps",
                "--filter",
                f"label=acefleet.host={edge.name}",
                "--format",
                '{{.Label "acefleet.http-port"}}',
            )
            out += [f"127.0.0.1:{p}" for p in rows.split() if p.isdigit()]
        return out

    def sessions(self) -> dict[str, list[dict[str, Any]]]:
        """Live simulator sessions by engine endpoint (``GET /_sim/sessions`` on every engine)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for endpoint in self.engine_endpoints():
            try:
                r = httpx.get(f"http://{endpoint}/_sim/sessions", timeout=3)
                found[endpoint] = r.json()["sessions"]
            except (httpx.HTTPError, ValueError, KeyError):
                continue
        return found

    def sessions_by_content(self) -> dict[str, list[str]]:
        """content id → the engines carrying a session of it, fleet-wide."""
        found: dict[str, list[str]] = {}
        for endpoint, sessions in self.sessions().items():
            for s in sessions:
                found.setdefault(str(s.get("content_id")), []).append(endpoint)
        return found

    def proxy_status(self, i: int) -> dict[str, Any]:
        r = httpx.get(self.proxy_url(i) + "/ace/status", timeout=5)
        r.raise_for_status()
        status: dict[str, Any] = r.json()
        return status

    def proxy_metric(self, i: int, name: str, labels: str = "") -> float:
        text = httpx.get(self.proxy_url(i) + "/metrics", timeout=5).text
        pattern = re.escape(name + ("{" + labels + "}" if labels else "")) + r" ([0-9.e+-]+)"
        m = re.search(r"^" + pattern + r"$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def central_claims(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.central_get("/v1/claims")["items"]
        return items

    def central_streams(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.central_get("/v1/streams")["items"]
        return items

    def host_status(self, edge: Edge) -> str:
        return str(self.central_get(f"/v1/hosts/{edge.name}")["status"])

    def agent_claims(self, edge: Edge) -> list[dict[str, Any]]:
        r = httpx.get(f"http://127.0.0.1:{edge.agent_port}/v1/claims", timeout=5)
        r.raise_for_status()
        claims: list[dict[str, Any]] = r.json()
        return claims


# --- viewers (tests/support/viewers.py) ------------------------------------------------------


async def watch(urls: Iterable[str]) -> list[Viewer]:
    return [Viewer(u).start() for u in urls]


async def until(what: str, fn: Callable[[], Any], within: float = 20.0) -> Any:
    """Async :func:`wait_for` (keeps the viewers' loop running while it waits)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(fn)
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


async def kill_under_viewers(container: str, viewers: list[Viewer], within: float) -> float:
    """``docker kill`` an engine container while ``viewers`` watch; wait until every one of them
    gets bytes again and return the longest silence any of them saw since the kill."""
    before = [v.received for v in viewers]
    killed_at = time.monotonic()
    await asyncio.to_thread(docker, "kill", container)
    await until(
        "every viewer gets bytes again",
        lambda: all(v.received > b + 64_000 for v, b in zip(viewers, before, strict=True)),
        within=within,
    )
    return max(v.longest_gap_since(killed_at) for v in viewers)


async def churn(
    proxies: list[str], *, joins: int, channels: list[str], span_s: float, seed: int = 6
) -> list[Viewer]:
    """``joins`` viewers spread evenly over ``span_s`` at random proxies (base URLs) and
    channels, each watching 0.3-4 s; returns them all, finished."""
    rng = random.Random(seed)
    live: list[tuple[float, Viewer]] = []
    done: list[Viewer] = []
    began = time.monotonic()
    for n in range(joins):
        await asyncio.sleep(max(0.0, began + n * span_s / joins - time.monotonic()))
        url = stream_url(rng.choice(proxies), rng.choice(channels))
        live.append((time.monotonic() + rng.uniform(0.3, 4.0), Viewer(url).start()))
        now = time.monotonic()
        for _, v in [x for x in live if x[0] <= now]:
            await v.stop()
            done.append(v)
        live = [x for x in live if x[0] > now]
    for _, v in live:
        await v.stop()
        done.append(v)
    return done


def stream_url(proxy_url: str, channel: str) -> str:
    return f"{proxy_url}/ace/getstream?id={channel}"


def process_usage(svc: procs.Service) -> tuple[int, int]:
    """(open file descriptors, resident memory in KiB) of a service process."""
    pid = svc.proc.pid
    return len(list(Path(f"/proc/{pid}/fd").iterdir())), procs.memory_kib(pid)


def tcp_peers(svc: procs.Service) -> dict[str, int]:
    """The service's open TCP connections counted by remote ``address:port`` (listening sockets
    as ``listen``): where its descriptors go, for a failed descriptor bound."""
    pid = svc.proc.pid
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            addr, port = fields[2].rsplit(":", 1)
            key = "listen" if fields[3] == "0A" else f"{_ipv4(addr)}:{int(port, 16)}"
            peers[key] = peers.get(key, 0) + 1
    return peers


def _ipv4(hex_addr: str) -> str:
    """/proc/net/tcp's little-endian hex address (the last 8 digits for a mapped IPv6 one)."""
    raw = bytes.fromhex(hex_addr[-8:])
    return ".".join(str(b) for b in reversed(raw))
