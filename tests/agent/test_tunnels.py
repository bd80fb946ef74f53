"""Several VPN tunnels per edge, for real: the agent creates one Gluetun stand-in container per
tunnel in the real dockerd, runs engine-sim engines in their network namespaces, reads each
tunnel's control server, and moves engines when a tunnel goes down, changes its forwarded port
or is rotated. The test reaches tunnels and engines at their container addresses, as the agent
and proxy do.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.helpers import (
    AUTH,
    BOOT,
    Agent,
    AgentFactory,
    docker,
    port_range,
    restart,
    wait_for,
)
from tests.support.gluetun import Standin

VPN_KEY = "tunnel-control-key-0123456789"
READY = "/server/api?api_version=3&method=get_status"


def tunnels_file(tmp_path: Path, *specs: dict[str, Any]) -> str:
    path = tmp_path / "tunnels.json"
    path.write_text(json.dumps(list(specs)))
    path.chmod(0o600)
    return str(path)


def tunnel(name: str, engines: int) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "protonvpn",
        "credentials": {"WIREGUARD_PRIVATE_KEY": f"c3RhbmQtaW4ta2V5LW9mLXt{name}="},
        "env": {"STANDIN_CONNECT_S": "0.5"},
        "engines": engines,
    }


def start(
    agent_factory: AgentFactory, gluetun_image: str, path: str, http: int, *flags: str
) -> Agent:
    h_lo, h_hi = port_range(http)
    p_lo, p_hi = port_range(8)
    return agent_factory(
        "--vpn-tunnels-file", path, "--vpn-api-key", VPN_KEY, "--vpn-image", gluetun_image,
        "--vpn-check-interval-s", "0.3", "--vpn-down-after-s", "1",
        "--http-port-range", f"{h_lo}-{h_hi}", "--p2p-port-range", f"{p_lo}-{p_hi}",
        "--free-engines", "0", "--idle-grace-s", "600", *flags,
    )  # fmt: skip


def tunnels(agent: Agent) -> dict[str, dict[str, Any]]:
    r = agent.get("/v1/tunnels")
    r.raise_for_status()
    return {t["container"]: t for t in r.json()["tunnels"]}


def current(agent: Agent) -> dict[str, dict[str, Any]]:
    """Tunnel name → its healthy, non-retiring generation's report."""
    return {t["name"]: t for t in tunnels(agent).values() if t["state"] == "healthy"}


def ip_of(container: str) -> str:
    return docker(
        "inspect", "-f", '{{ (index .NetworkSettings.Networks "bridge").IPAddress }}', container
    )  # fmt: skip


def standin(container: str) -> Standin:
    return Standin(container, ip_of(container), VPN_KEY)


def serving(agent: Agent) -> list[dict[str, Any]]:
    return [e for e in agent.healthy() if not e["draining"]]


def by_tunnel(engines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in engines:
        out.setdefault(e["tunnel"], []).append(e)
    return out


def check_forwarding(agent: Agent) -> None:
    """Each healthy tunnel's forwarded port is the P2P port of exactly one of its engines, whose
    command line carries it; the others have a P2P port from the range."""
    healthy = current(agent)
    for name, engines in by_tunnel(serving(agent)).items():
        port = healthy[name]["forwarded_port"]
        assert port, healthy[name]
        carrying = [e for e in engines if e["vpn_forwarded"]]
        assert [e["p2p_port"] for e in carrying] == [port], (name, engines)
        cmd = json.loads(docker("inspect", "-f", "{{json .Config.Cmd}}", carrying[0]["id"]))
        assert cmd[cmd.index("--port") + 1] == str(port)
        assert all(e["p2p_port"] != port for e in engines if not e["vpn_forwarded"])


@pytest.mark.docker
def test_engines_spread_over_tunnels_survive_a_restart_and_leave_a_tunnel_that_goes_down(
    agent_factory: AgentFactory, gluetun_image: str, tmp_path: Path, log_dir: Path
) -> None:
    path = tunnels_file(tmp_path, tunnel("t1", 4), tunnel("t2", 4))
    agent = start(
        agent_factory, gluetun_image, path, 16, "--min-engines", "0", "--max-engines", "8"
    )
    # engines go to healthy tunnels only: both are, before any engine is asked for
    wait_for("both tunnels healthy", lambda: len(current(agent)) == 2)
    for _ in range(4):
        assert agent.post("/v1/engines").status_code == 202
    wait_for("four engines", lambda: len(serving(agent)) == 4, timeout=BOOT)
    reports = tunnels(agent)
    assert sorted(reports) == [
        f"acefleet-vpn-{agent.host}-t1-g0",
        f"acefleet-vpn-{agent.host}-t2-g0",
    ]
    engines = serving(agent)
    spread = by_tunnel(engines)
    assert sorted((name, len(es)) for name, es in spread.items()) == [("t1", 2), ("t2", 2)]
    for container, report in reports.items():
        assert report["state"] == "healthy", report
        assert (report["engines"], report["engine_cap"], report["generation"]) == (2, 4, 0)
        assert report["public_ip"].startswith("203.0.113.")
        labels = json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", container))
        ports = labels["acefleet.tunnel-ports"].split(",")
        assert len(ports) == 4
        assert labels["acefleet.vpn-tunnel"] == report["name"]
        assert labels["acefleet.tunnel-generation"] == "0"
        env = dict(
            item.split("=", 1)
            for item in json.loads(docker("inspect", "-f", "{{json .Config.Env}}", container))
        )
        assert env["FIREWALL_INPUT_PORTS"] == ",".join(ports)
        assert json.loads(env["HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE"])["apikey"] == VPN_KEY
        assert docker("inspect", "-f", "{{.HostConfig.CapAdd}}", container) == "[NET_ADMIN]"
        assert docker("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", container) == (
            "unless-stopped"
        )
        address = ip_of(container)
        tunnel_id = docker("inspect", "-f", "{{.Id}}", container)
        for e in spread[report["name"]]:
            assert e["endpoint"] == f"{address}:{e['http_port']}"
            assert str(e["http_port"]) in ports
            assert docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", e["id"]) == (
                "container:" + tunnel_id
            )
            assert docker("port", e["id"]) == ""  # nothing published on the host
            # the engine answers at its tunnel's address
            assert httpx.get(f"http://{e['endpoint']}{READY}", timeout=5).json()["result"]
    check_forwarding(agent)
    assert agent.metric('acefleet_agent_tunnel_up{tunnel="t1"}') == 1
    assert agent.metric('acefleet_agent_tunnel_engines{tunnel="t2"}') == 2
    t1_port = current(agent)["t1"]["forwarded_port"]
    assert agent.metric('acefleet_agent_tunnel_forwarded_port{tunnel="t1"}') == t1_port

    # --- an agent restart keeps tunnels and engines (adopted by their labels) --------------
    containers_before = set(
        docker("ps", "-q", "--filter", f"label=acefleet.host={agent.host}").split()
    )
    agent.svc.kill()
    # from now on the pool keeps four engines (replacements of drained ones included)
    agent.args[agent.args.index("--min-engines") + 1] = "4"
    agent = restart(agent, log_dir)
    try:
        wait_for("adopted engines", lambda: len(serving(agent)) == 4, timeout=BOOT)
        assert {e["id"]: e["endpoint"] for e in serving(agent)} == {
            e["id"]: e["endpoint"] for e in engines
        }
        wait_for("tunnels healthy again", lambda: len(current(agent)) == 2)
        assert sorted(tunnels(agent)) == sorted(reports)
        after = set(docker("ps", "-q", "--filter", f"label=acefleet.host={agent.host}").split())
        assert after == containers_before
        check_forwarding(agent)

        # --- t1 goes down: its engines drain ("tunnel"), new engines only go to t2 ------------
        held = spread["t1"][0]
        session = {"engine_id": held["id"], "stat_url": "http://x/ace/stat/abc123/s1"}
        assert agent.client.put("/v1/sessions/s1", json=session, headers=AUTH).status_code == 201
        standin(f"acefleet-vpn-{agent.host}-t1-g0").set_vpn(False)

        def t1_down() -> bool:
            t1 = tunnels(agent)[f"acefleet-vpn-{agent.host}-t1-g0"]
            return t1["state"] == "down" and t1

        down = wait_for("t1 down", t1_down)
        assert "stopped" in down["reason"]
        drained = wait_for(
            "t1's engine with a session draining",
            lambda: [e for e in agent.engines() if e["id"] == held["id"] and e["draining"]],
        )
        assert drained[0]["drain_reason"] == "tunnel"
        wait_for(
            "four engines, all in t2",
            lambda: len(serving(agent)) == 4 and {e["tunnel"] for e in serving(agent)} == {"t2"},
            timeout=BOOT,
        )
        # the idle t1 engine is gone, the one with a session stays until it ends
        t1_left = [e for e in agent.engines() if e["tunnel"] == "t1"]
        assert [e["id"] for e in t1_left] == [held["id"]]
        assert agent.metric('acefleet_agent_tunnel_engine_drains_total{reason="down"}') == 2
        assert agent.metric('acefleet_agent_tunnel_up{tunnel="t1"}') == 0
        status = agent.status()
        assert status["provisioning"]["state"] == "ok"
        assert agent.delete("/v1/sessions/s1").status_code == 204
        wait_for(
            "t1 carries no engine",
            lambda: not [e for e in agent.engines() if e["tunnel"] == "t1"],
        )
        # t2 is full (4): with t1 down nothing more fits
        r = agent.post("/v1/engines")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "tunnels_full"
        # and the capacity HAProxy and central read counts no engine the tunnels cannot take
        # (max_engines is 8: without the tunnels' room it would count four more)
        cap = agent.status()["capacity"]
        assert cap["free_slots"] == cap["engines_free"] * cap["stream_cap"], cap
    finally:
        agent.client.close()
        agent.svc.stop()


@pytest.mark.docker
def test_forwarded_port_change_and_rotation_move_engines(
    agent_factory: AgentFactory, gluetun_image: str, tmp_path: Path
) -> None:
    path = tunnels_file(tmp_path, tunnel("t1", 3))
    agent = start(agent_factory, gluetun_image, path, 8, "--min-engines", "2", "--max-engines", "4")
    g0 = f"acefleet-vpn-{agent.host}-t1-g0"
    wait_for("two engines", lambda: len(serving(agent)) == 2, timeout=BOOT)
    check_forwarding(agent)
    old = next(e for e in serving(agent) if e["vpn_forwarded"])

    # --- the provider forwards another port: the engine holding the old one is replaced -----
    new_port = 40000 + uuid.uuid4().int % 20000
    standin(g0).set_forwarded_port(new_port)

    def new_forwarded() -> list[dict[str, Any]]:
        return [e for e in serving(agent) if e["vpn_forwarded"] and e["p2p_port"] == new_port]

    (carrier,) = wait_for("an engine on the new port", new_forwarded, timeout=BOOT)
    # a new container (it may reuse the freed HTTP port, hence the id)
    assert carrier["created_at"] != old["created_at"]
    assert old["p2p_port"] not in {e["p2p_port"] for e in agent.engines()}
    assert agent.metric('acefleet_agent_tunnel_engine_drains_total{reason="port_changed"}') == 1
    assert current(agent)["t1"]["forwarded_port"] == new_port
    check_forwarding(agent)

    # --- rotation: a new generation, engines move to it, the old container goes ------------
    assert agent.client.post("/v1/tunnels/t1/rotate").status_code == 401
    assert agent.post("/v1/tunnels/nope/rotate").json()["error"]["code"] == "unknown_tunnel"
    r = agent.post("/v1/tunnels/t1/rotate")
    assert r.status_code == 202, r.text
    g1 = f"acefleet-vpn-{agent.host}-t1-g1"
    assert (r.json()["container"], r.json()["generation"], r.json()["state"]) == (g1, 1, "starting")
    again = agent.post("/v1/tunnels/t1/rotate")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "rotation_in_progress"
    assert tunnels(agent)[g0]["state"] == "retiring"
    wait_for(
        "the old generation removed",
        lambda: docker("ps", "-aq", "--filter", f"name=^{g0}$") == "" and g0 not in tunnels(agent),
        timeout=BOOT,
    )
    g1_ip = ip_of(g1)
    wait_for("two engines in g1", lambda: len(serving(agent)) == 2, timeout=BOOT)
    assert all(e["endpoint"].startswith(g1_ip + ":") for e in agent.engines())
    assert tunnels(agent)[g1]["state"] == "healthy"
    check_forwarding(agent)
    assert agent.metric('acefleet_agent_tunnel_rotations_total{reason="operator",tunnel="t1"}') == 1
    assert agent.metric('acefleet_agent_tunnel_engine_drains_total{reason="rotation"}') == 2

    # --- a tunnel container that vanishes is recreated (next generation) -------------------
    docker("rm", "-f", g1)
    g2 = f"acefleet-vpn-{agent.host}-t1-g2"
    wait_for("g2 healthy", lambda: current(agent).get("t1", {}).get("container") == g2)
    wait_for("two engines in g2", lambda: len(serving(agent)) == 2, timeout=BOOT)
    assert all(e["endpoint"].startswith(ip_of(g2) + ":") for e in agent.engines())


@pytest.mark.docker
def test_a_tunnel_with_rotate_after_s_rotates_on_schedule(
    agent_factory: AgentFactory, gluetun_image: str, tmp_path: Path
) -> None:
    path = tunnels_file(tmp_path, {**tunnel("t1", 2), "rotate_after_s": 5})
    agent = start(agent_factory, gluetun_image, path, 4, "--min-engines", "1", "--max-engines", "2")
    g0 = f"acefleet-vpn-{agent.host}-t1-g0"
    wait_for("an engine in g0", lambda: len(serving(agent)) == 1, timeout=BOOT)
    g0_id = docker("inspect", "-f", "{{.Id}}", g0)

    def namespace() -> str:
        """Id of the container whose namespace the serving engine joined ("" between two)."""
        engines = serving(agent)
        mode = docker(
            "inspect", "-f", "{{.HostConfig.NetworkMode}}", engines[0]["id"], check=False
        ) if engines else ""  # fmt: skip
        return mode.removeprefix("container:")

    assert namespace() == g0_id
    wait_for(
        "g0 removed", lambda: docker("ps", "-aq", "--filter", f"name=^{g0}$") == "", timeout=BOOT
    )
    # the engine runs in a later generation (the schedule keeps rotating: whichever is current)
    wait_for("an engine again", lambda: len(serving(agent)) == 1, timeout=BOOT)
    later = docker(
        "ps", "-q", "--no-trunc", "--filter", f"label=acefleet.host={agent.host}",
        "--filter", "label=acefleet.vpn-tunnel=t1",
    ).split()  # fmt: skip
    assert g0_id not in later
    wait_for("the engine in a later generation", lambda: namespace() in later)
    assert agent.metric('acefleet_agent_tunnel_rotations_total{reason="schedule",tunnel="t1"}') >= 1
    assert agent.metric('acefleet_agent_tunnel_engine_drains_total{reason="rotation"}') >= 1
