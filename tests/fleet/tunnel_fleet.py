"""A one-edge fleet whose engines run in two VPN tunnels: central, one agent that owns two
Gluetun stand-in tunnels (``t1``, ``t2``, two engines each, the simulator's realistic timing)
and one proxy, all on loopback; tunnels and engines in the real dockerd.

Used by tests/fleet/test_tunnel_moves.py and bench/tunnel_bench.py. Rules:

1. The edge's name (``vpn<run>``) is unique to the run; every container of it (engines and the
   ``acefleet-vpn-<edge>-<tunnel>-g<n>`` tunnels) carries ``acefleet.host=<edge>``, and
   :meth:`TunnelFleet.close` removes them by that label, then by the tunnel name prefix.
2. Engines are published nowhere: the proxy, and the helpers here, reach them at their tunnel's
   address on the Docker bridge, as in production.
3. :func:`open_tunnel_fleet` returns once central lists two placeable engines in each tunnel.
4. Central gets the agents' key (besides the harness's fast settings) so that it can forward an
   operator's rotation to the agent.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fleet.harness import (
    AGENT_KEY,
    HEARTBEAT_S,
    OPERATOR_KEY,
    SERVICE_KEY,
    SIM_IMAGE,
    Edge,
    Fleet,
    docker,
    wait_for,
)
from tests.support import procs
from tests.support.gluetun import STANDIN_IMAGE, Standin, container_ip

# Not used by the other fleet tests and benches (23000-23199, 23400, 23600, 24500).
BASE_PORT = 25300
TUNNELS = ("t1", "t2")
ENGINES_PER_TUNNEL = 2
VPN_KEY = "fleet-tunnel-control-key-0123456789"
REALISTIC = (
    "--engine-extra-args=--timing,realistic,--startup-delay,0,--media,synthetic,--bitrate,1000000"
)


def tunnel_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "protonvpn",
        "credentials": {"WIREGUARD_PRIVATE_KEY": f"c3RhbmQtaW4ta2V5LW9mLXt{name}="},
        "env": {"STANDIN_CONNECT_S": "0.5"},
        "engines": ENGINES_PER_TUNNEL,
    }


@dataclass
class TunnelFleet(Fleet):
    """:class:`Fleet` whose edge agent runs its engines in VPN tunnels (rule 1-4 above)."""

    @property
    def only(self) -> Edge:
        return self.edge(0)

    def start_agent(self, edge: Edge) -> None:
        path = self.log_dir / f"tunnels-{edge.name}.json"
        if not path.exists():
            path.write_text(json.dumps([tunnel_spec(n) for n in TUNNELS]))
            path.chmod(0o600)  # the agent refuses a tunnels file others may read
        edge.agent_port = edge.agent_port or procs.free_port()
        low = edge.ports.start
        edge.agent_args = edge.agent_args or [
            "--host", edge.name,
            "--listen-port", str(edge.agent_port),
            "--agent-check-port", "0",
            "--engine-image", SIM_IMAGE,
            REALISTIC,
            # the HTTP range is where tunnels reserve their engines' ports (each generation
            # its own), the P2P range serves the engines that do not hold a forwarded port
            "--http-port-range", f"{low}-{low + 49}",
            "--p2p-port-range", f"{low + 50}-{low + 99}",
            "--min-engines", str(len(TUNNELS) * ENGINES_PER_TUNNEL),
            "--free-engines", "0",
            # room for a rotation's new generation while the old one's engines drain
            "--max-engines", str(len(TUNNELS) * ENGINES_PER_TUNNEL + 2),
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
            "--vpn-tunnels-file", str(path),
            "--vpn-api-key", VPN_KEY,
            "--vpn-image", STANDIN_IMAGE,
            "--vpn-check-interval-s", "0.3",
            "--vpn-down-after-s", "1",
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

    def close(self) -> None:
        super().close()
        for edge in self.edges.values():  # a tunnel created after the label sweep, if any
            names = docker("ps", "-aq", "--filter", f"name=acefleet-vpn-{edge.name}-").split()
            if names:
                docker("rm", "-f", *names)

    # --- views ----------------------------------------------------------------------------
    def agent_get(self, path: str) -> Any:
        r = httpx.get(f"http://127.0.0.1:{self.only.agent_port}{path}", timeout=5)
        r.raise_for_status()
        return r.json()

    def tunnels(self) -> list[dict[str, Any]]:
        """Every tunnel generation the agent reports (``GET /v1/tunnels``)."""
        reports: list[dict[str, Any]] = self.agent_get("/v1/tunnels")["tunnels"]
        return reports

    def current_tunnel(self, name: str) -> dict[str, Any]:
        """The healthy, not retiring generation of tunnel ``name`` ({} when there is none)."""
        return next(
            (t for t in self.tunnels() if t["name"] == name and t["state"] == "healthy"), {}
        )

    def agent_metric(self, name: str) -> float:
        """Sum of the agent's samples of ``name`` (every label set, or the one given with it)."""
        r = httpx.get(f"http://127.0.0.1:{self.only.agent_port}/metrics", timeout=5)
        total = 0.0
        for line in r.text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == name or (key.startswith(name + "{") and "{" not in name):
                total += float(value)
        return total

    def standin(self, container: str) -> Standin:
        return Standin(container, container_ip(container), VPN_KEY)

    def engine_at(self, endpoint: str) -> dict[str, Any]:
        """The agent's report of the engine serving ``endpoint`` ({} when none does)."""
        return next((e for e in self.agent_engines(self.only) if e["endpoint"] == endpoint), {})

    def tunnel_container_of(self, endpoint: str) -> str:
        """Name of the tunnel generation whose namespace the engine at ``endpoint`` runs in."""
        address = endpoint.rsplit(":", 1)[0]
        for t in self.tunnels():
            if t.get("container") and container_ip(t["container"]) == address:
                return str(t["container"])
        return ""

    def placeable_by_tunnel(self) -> dict[str, int]:
        """Tunnel name → engines central may place work on now."""
        items = self.central_get(f"/v1/engines?host={self.only.name}")["items"]
        out: dict[str, int] = {}
        for e in items:
            if e["placeable"] and e["report"].get("tunnel"):
                out[e["report"]["tunnel"]] = out.get(e["report"]["tunnel"], 0) + 1
        return out

    def wait_tunnel_engines(self, per_tunnel: int, timeout: float = 120) -> None:
        wait_for(
            f"central sees {per_tunnel} placeable engines in each of {TUNNELS}",
            lambda: all(self.placeable_by_tunnel().get(n, 0) >= per_tunnel for n in TUNNELS),
            timeout=timeout,
            every=0.5,
        )

    def rotate(self, tunnel: str) -> httpx.Response:
        """An operator's rotation through central (forwarded to the edge's agent)."""
        return httpx.post(
            f"{self.central_url}/v1/hosts/{self.only.name}/tunnels/{tunnel}/rotate",
            headers={"X-API-Key": OPERATOR_KEY},
            timeout=15,
        )


def open_tunnel_fleet(log_dir: Path, *, base_port: int = BASE_PORT) -> TunnelFleet:
    """Start central, the tunnel agent and a proxy (rules above); close it when done."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fleet = TunnelFleet(
        log_dir,
        log_dir / "central.db",
        central_env={"ACEFLEET_CENTRAL_AGENT_API_KEY": AGENT_KEY},
    )
    name = f"vpn{uuid.uuid4().hex[:6]}"
    fleet.edges[name] = Edge(name, range(base_port, base_port + 100))
    try:
        fleet.start_central()
        fleet.start_agent(fleet.only)
        fleet.start_proxy(fleet.only)
        fleet.wait_tunnel_engines(ENGINES_PER_TUNNEL)
    except BaseException:
        fleet.close()
        raise
    return fleet
