"""VPN tunnels that restart, and an agent that restarts around them, for real (Gluetun stand-ins
and engine-sim engines in the real dockerd): a tunnel restarted by Docker has its older engines
replaced; adoption keeps a tunnel Docker is restarting, never reuses a generation and sweeps
tunnel containers it does not track; a rotation whose new generation never gets healthy is
aborted back to the old one.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.helpers import (
    BOOT,
    Agent,
    AgentFactory,
    docker,
    port_range,
    remove_by_label,
    wait_for,
)
from tests.agent.test_tunnels import (
    READY,
    VPN_KEY,
    serving,
    start,
    tunnel,
    tunnels,
    tunnels_file,
)
from tests.support.gluetun import standin_env


def started_at(container: str) -> datetime:
    return datetime.fromisoformat(docker("inspect", "-f", "{{.State.StartedAt}}", container))


def created(engine: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(engine["created_at"])


@pytest.mark.docker
def test_a_restarted_tunnel_has_the_engines_of_its_earlier_start_replaced(
    agent_factory: AgentFactory, gluetun_image: str, tmp_path: Path
) -> None:
    path = tunnels_file(tmp_path, tunnel("t1", 4))
    # Only the restart rule may move engines here: the tunnel is down for far less than
    # vpn_down_after_s, and failing probes never replace an engine.
    agent = start(
        agent_factory, gluetun_image, path, 8, "--min-engines", "2", "--max-engines", "4",
        "--vpn-down-after-s", "300", "--probe-failures", "100000",
    )  # fmt: skip
    g0 = f"acefleet-vpn-{agent.host}-t1-g0"
    wait_for("two engines", lambda: len(serving(agent)) == 2, timeout=BOOT)
    before = {e["id"]: created(e) for e in serving(agent)}

    docker("restart", "-t", "5", g0)
    restarted = started_at(g0)
    assert all(when < restarted for when in before.values()), (before, restarted)

    def replaced() -> list[dict[str, Any]]:
        """The serving engines, once both were created after the restart."""
        now = serving(agent)
        return now if len(now) == 2 and all(created(e) > restarted for e in now) else []

    after = wait_for("two engines created after the restart", replaced, timeout=BOOT)
    # the engines of the earlier start are drained ("tunnel"), then removed once idle
    wait_for(
        "the earlier start's engines gone",
        lambda: not {e["id"] for e in agent.engines() if created(e) < restarted},
        timeout=BOOT,
    )
    assert agent.metric('acefleet_agent_tunnel_engine_drains_total{reason="restarted"}') == 2
    assert agent.metric('acefleet_agent_tunnel_engine_drains_total{reason="down"}') == 0
    # the new ones run in the tunnel's new namespace: they answer, and are kept
    for e in after:
        assert httpx.get(f"http://{e['endpoint']}{READY}", timeout=5).json()["result"]
    assert {e["id"] for e in serving(agent)} == {e["id"] for e in after}
    assert all(not e["draining"] for e in agent.engines())
    assert started_at(g0) == restarted


def run_tunnel(
    image: str,
    host: str,
    name: str,
    generation: int,
    ports: list[int],
    env: dict[str, str],
    *opts: str,
) -> str:
    """A tunnel container as the agent labels them (as an earlier agent process left it)."""
    container = f"acefleet-vpn-{host}-{name}-g{generation}"
    labels = {
        "acefleet.host": host,
        "acefleet.vpn-tunnel": name,
        "acefleet.tunnel-generation": str(generation),
        "acefleet.tunnel-ports": ",".join(str(p) for p in ports),
    }
    args = [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
    args += [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    docker("run", "-d", "--name", container, "--network", "bridge", *opts, *args, image)
    return container


def containers_of(agent: Agent, name: str) -> set[str]:
    return set(
        docker(
            "ps", "-a", "--format", "{{.Names}}", "--filter", f"label=acefleet.host={agent.host}",
            "--filter", f"label=acefleet.vpn-tunnel={name}",
        ).split()
    )  # fmt: skip


@pytest.mark.docker
def test_restarting_tunnel_adopted_generations_not_reused_strays_swept_stuck_rotation_aborted(
    agent_factory: AgentFactory, gluetun_image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    host = f"t{uuid.uuid4().hex[:8]}"
    # the containers made before the agent are removed even if the agent never starts
    request.addfinalizer(lambda: remove_by_label(f"acefleet.host={host}"))
    h_lo, h_hi = port_range(12)
    p_lo, p_hi = port_range(8)
    # generations the agent creates for t1 never connect: only the one left running can
    stuck = {"STANDIN_CONNECT_S": "3600"}
    path = tunnels_file(
        tmp_path, {**tunnel("t1", 2), "env": stuck}, {**tunnel("t2", 2), "env": stuck}
    )
    healthy_env = standin_env(api_key=VPN_KEY)
    t1_g0 = run_tunnel(
        gluetun_image, host, "t1", 0, [h_lo, h_lo + 1], healthy_env, "--restart", "unless-stopped"
    )
    # a stopped later generation, as a crashed rotation leaves it: removed, its number kept
    t1_g3 = f"acefleet-vpn-{host}-t1-g3"
    docker(
        "create", "--name", t1_g3, "--label", f"acefleet.host={host}",
        "--label", "acefleet.vpn-tunnel=t1", "--label", "acefleet.tunnel-generation=3",
        "--label", f"acefleet.tunnel-ports={h_lo + 2},{h_lo + 3}", gluetun_image,
    )  # fmt: skip
    # t2 crash-loops: Docker's restart policy keeps restarting it, with a growing back-off
    refusing = {**healthy_env, "STANDIN_GLUETUN_VERSION": "0.1"}  # exits at once
    t2_g0 = run_tunnel(
        gluetun_image, host, "t2", 0, [h_lo + 4, h_lo + 5], refusing, "--restart", "unless-stopped"
    )
    t2_id = docker("inspect", "-f", "{{.Id}}", t2_g0)
    # Caught at the start of its 7th back-off (6.4 s), the agent's adoption pass (a second or two
    # after it starts) finds it restarting, not in its brief run.
    wait_for(
        "t2 restarting, its back-off grown",
        lambda: (
            docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", t2_g0).split()
            in ([["restarting", str(n)] for n in range(6, 100)])
        ),
        timeout=90,
        every=0.1,
    )
    t1_id = docker("inspect", "-f", "{{.Id}}", t1_g0)

    agent = agent_factory(
        "--vpn-tunnels-file", path, "--vpn-api-key", VPN_KEY, "--vpn-image", gluetun_image,
        "--vpn-check-interval-s", "0.3", "--vpn-down-after-s", "300",
        "--vpn-rotation-timeout-s", "3",
        "--http-port-range", f"{h_lo}-{h_hi}", "--p2p-port-range", f"{p_lo}-{p_hi}",
        "--free-engines", "0", "--min-engines", "0", "--max-engines", "2",
        host=host,
    )  # fmt: skip
    wait_for(
        "t1-g0 adopted healthy", lambda: tunnels(agent).get(t1_g0, {}).get("state") == "healthy"
    )
    assert t2_g0 in tunnels(agent)
    # the restarting t2 is the same container, not replaced by a new generation
    assert docker("inspect", "-f", "{{.Id}}", t2_g0) == t2_id
    assert containers_of(agent, "t2") == {t2_g0}
    wait_for("t1-g3 removed", lambda: containers_of(agent, "t1") == {t1_g0})

    # --- a tunnel container the agent does not track is swept --------------------------------
    stray = run_tunnel(gluetun_image, host, "t1", 1, [h_lo + 6, h_lo + 7], healthy_env)
    wait_for("the stray swept", lambda: stray not in containers_of(agent, "t1"))
    assert stray not in tunnels(agent)

    # --- a rotation: the next generation is past every one seen (g3, the stray g1) ----------
    r = agent.post("/v1/tunnels/t1/rotate")
    assert r.status_code == 202, r.text
    assert r.json()["generation"] == 4
    t1_g4 = r.json()["container"]
    assert t1_g4 == f"acefleet-vpn-{host}-t1-g4"
    assert tunnels(agent)[t1_g0]["state"] == "retiring"

    # --- g4 never connects: the rotation is aborted, g0 is current again ---------------------
    wait_for(
        "the rotation aborted",
        lambda: agent.metric('acefleet_agent_tunnel_rotation_aborts_total{tunnel="t1"}') == 1,
    )
    wait_for("g4 removed", lambda: containers_of(agent, "t1") == {t1_g0})
    report = tunnels(agent)
    assert t1_g4 not in report
    assert report[t1_g0]["state"] == "healthy"
    assert "rotation aborted" in report[t1_g0]["reason"]
    assert docker("inspect", "-f", "{{.Id}}", t1_g0) == t1_id
    # and it takes engines again
    assert agent.post("/v1/engines").status_code == 202
    (engine,) = wait_for("an engine in t1-g0", lambda: serving(agent), timeout=BOOT)
    mode = docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", engine["id"])
    assert mode == f"container:{t1_id}"
    assert (
        json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", engine["id"]))[
            "acefleet.tunnel-container"
        ]
        == t1_g0
    )
