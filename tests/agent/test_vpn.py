"""VPN mode against a stand-in for Gluetun: its control API on loopback, and a plain container
holding the network namespace the engines join (a real Gluetun cannot run here)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from orchestrator.agent.vpn import VpnMonitor
from tests.agent.helpers import BOOT, AgentFactory, docker, port_range, wait_for


class GluetunStandIn:
    """Gluetun's control server as far as the agent reads it."""

    def __init__(self) -> None:
        self.status = "running"
        self.status_path = "/v1/vpn/status"  # older Gluetun: /v1/openvpn/status
        self.port = 0
        self.requests: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                stand_in.requests.append(self.path)
                if self.path == stand_in.status_path:
                    body: dict[str, Any] = {"status": stand_in.status}
                elif self.path == "/v1/openvpn/portforwarded":
                    body = {"port": stand_in.port if stand_in.status == "running" else 0}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gluetun() -> Iterator[GluetunStandIn]:
    g = GluetunStandIn()
    yield g
    g.close()


@pytest.mark.docker
def test_vpn_forwarded_port_and_provisioning_gate(
    agent_factory: AgentFactory, engine_image: str, gluetun: GluetunStandIn
) -> None:
    h_lo, h_hi = port_range(4)
    p_lo, p_hi = port_range(4)
    forwarded = port_range(1)[0]
    gluetun.port = forwarded
    holder = f"acefleet-agent-test-vpn-{uuid.uuid4().hex[:6]}"
    # Like a Gluetun container: it owns the namespace and publishes the engines' HTTP ports.
    docker(
        "run", "-d", "--name", holder, "--label", "acefleet.test=agent",
        "-p", f"127.0.0.1:{h_lo}-{h_hi}:{h_lo}-{h_hi}",
        "--entrypoint", "sleep", engine_image, "600",
    )  # fmt: skip
    try:
        agent = agent_factory(
            "--http-port-range", f"{h_lo}-{h_hi}", "--p2p-port-range", f"{p_lo}-{p_hi}",
            "--vpn-container", holder, "--vpn-control-url", gluetun.url,
            "--vpn-check-interval-s", "0.3", "--min-engines", "2", "--free-engines", "0",
        )  # fmt: skip
        engines = wait_for(
            "two engines", lambda: len(agent.healthy()) == 2 and agent.healthy(), timeout=BOOT
        )
        carrying = [e for e in engines if e["vpn_forwarded"]]
        assert len(carrying) == 1
        assert carrying[0]["p2p_port"] == forwarded
        other = next(e for e in engines if not e["vpn_forwarded"])
        assert p_lo <= other["p2p_port"] <= p_hi
        cmd = json.loads(docker("inspect", "-f", "{{json .Config.Cmd}}", carrying[0]["id"]))
        assert cmd[cmd.index("--port") + 1] == str(forwarded)
        mode = docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", carrying[0]["id"])
        assert mode == "container:" + docker("inspect", "-f", "{{.Id}}", holder)
        assert docker("port", carrying[0]["id"]) == ""  # nothing published by the engine
        assert carrying[0]["endpoint"] == f"127.0.0.1:{carrying[0]['http_port']}"
        status = agent.status()
        assert status["vpn"] == {"enabled": True, "connected": True, "forwarded_port": forwarded}
        assert status["provisioning"]["state"] == "ok"
        assert agent.metric("acefleet_agent_vpn_connected") == 1

        gluetun.status = "stopped"
        prov = wait_for(
            "provisioning blocked",
            lambda: (p := agent.status()["provisioning"])["state"] == "blocked" and p,
        )
        assert prov["reason"].startswith("vpn_down")
        assert agent.status()["vpn"]["connected"] is False
        r = agent.post("/v1/engines")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "vpn_down"
        assert len(agent.engines()) == 2  # running engines are left alone

        gluetun.status = "running"
        wait_for("VPN back", lambda: agent.status()["provisioning"]["state"] == "ok")
        assert "/v1/vpn/status" in gluetun.requests
    finally:
        docker("rm", "-f", holder, check=False)


async def test_vpn_monitor_reads_old_gluetun_and_trusts_the_engines_second_opinion(
    gluetun: GluetunStandIn,
) -> None:
    gluetun.status_path = "/v1/openvpn/status"  # /v1/vpn/status answers 404 here
    gluetun.port = 45000
    async with httpx.AsyncClient() as client:
        monitor = VpnMonitor(client, gluetun.url, api_key="")
        state = await monitor.check(engines_say_connected=True)
        assert (state.connected, state.forwarded_port) == (True, 45000)
        assert monitor.reason is None
        # Gluetun says running, but the engine cannot reach the network through it.
        state = await monitor.check(engines_say_connected=False)
        assert state.connected is False
        assert monitor.reason is not None
        assert "engines report no network connection" in monitor.reason
        gluetun.close()
        state = await monitor.check(engines_say_connected=None)
        assert state.connected is False
        assert monitor.reason is not None
        assert "unreachable" in monitor.reason
