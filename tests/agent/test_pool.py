"""The engine pool against a real dockerd and the simulator image, through a real agent process."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import httpx
import pytest

from tests.agent.helpers import (
    BOOT,
    Agent,
    AgentFactory,
    docker,
    port_range,
    remove_by_label,
    restart,
    wait_for,
)

pytestmark = pytest.mark.docker


def _labels(name: str) -> dict[str, str]:
    labels: dict[str, str] = json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", name))
    return labels


def _claim(agent: object, content: str) -> httpx.Response:

    assert isinstance(agent, Agent)
    return agent.post(
        "/v1/claims", json={"content_key": f"id:{content}", "proxy_id": "p1", "host": agent.host}
    )


def _agent_check(agent: Agent) -> bytes:
    with socket.create_connection(("127.0.0.1", agent.check_port), timeout=5) as s:
        data = b""
        while chunk := s.recv(100):
            data += chunk
    return data


def _ranges(size: int = 6) -> list[str]:
    h_lo, h_hi = port_range(size)
    p_lo, p_hi = port_range(size)
    return ["--http-port-range", f"{h_lo}-{h_hi}", "--p2p-port-range", f"{p_lo}-{p_hi}"]


def test_provision_readiness_labels_and_claims(agent_factory: AgentFactory) -> None:
    # The simulator holds its HTTP port closed for 2 s: Docker says "running" long before
    # get_status answers, and the agent must report "starting" until it does.
    agent = agent_factory(
        *_ranges(),
        "--min-engines", "1", "--free-engines", "0", "--max-engines", "2",
        "--engine-extra-args", "--timing,fast,--startup-delay,2",
    )  # fmt: skip
    first = wait_for("an engine exists", agent.engines, timeout=60)[0]
    assert first["health"] == "starting"
    assert docker("inspect", "-f", "{{.State.Status}}", first["id"]) == "running"
    engine = wait_for("engine ready", agent.healthy, timeout=BOOT)[0]
    host, port = engine["endpoint"].split(":")
    assert (host, int(port)) == ("127.0.0.1", engine["http_port"])
    r = httpx.get(f"http://{engine['endpoint']}/server/api?api_version=3&method=get_status")
    assert r.json()["result"]
    labels = _labels(engine["id"])
    assert labels["acefleet.managed"] == "true"
    assert labels["acefleet.host"] == agent.host
    assert labels["acefleet.http-port"] == str(engine["http_port"])
    assert labels["acefleet.p2p-port"] == str(engine["p2p_port"])
    assert labels["acefleet.generation"] == "0"
    assert labels["acefleet.profile"] == "engine-sim"
    assert "acefleet.created-at" in labels
    published = docker("port", engine["id"])
    assert f"{engine['http_port']}/tcp -> 127.0.0.1:{engine['http_port']}" in published
    assert agent.metric("acefleet_agent_engine_time_to_ready_seconds_count") == 1

    # A failover asks to avoid the engine that just failed: the only engine is not handed out.
    body = {"content_key": "id:aaa", "proxy_id": "p1", "host": agent.host}
    avoided = agent.post("/v1/claims", json={**body, "avoid": [engine["id"]]})
    assert avoided.status_code == 503
    assert avoided.json()["error"]["code"] == "no_capacity"
    grant = _claim(agent, "aaa")
    assert grant.status_code == 201, grant.text
    body = grant.json()
    assert body["kind"] == "engine"
    assert body["engine"]["id"] == engine["id"]
    # Confirm with the session's stat_url: the agent starts polling stats of that engine.
    stat_url = f"http://{engine['endpoint']}/ace/stat/{'a' * 40}/{'b' * 32}"
    r = agent.post(f"/v1/claims/{body['claim_id']}/confirm", json={"stat_url": stat_url})
    assert r.json()["confirmed"] is True
    detail = agent.get(f"/v1/engines/{engine['id']}").json()
    assert detail["engine"]["streams"] == 1
    assert detail["claims"] == [body["claim_id"]]
    assert agent.delete(f"/v1/engines/{engine['id']}").json()["error"]["code"] == "engine_busy"
    assert agent.delete(f"/v1/claims/{body['claim_id']}").status_code == 204
    assert agent.delete(f"/v1/engines/{engine['id']}").status_code == 204
    assert docker("ps", "-aq", "--filter", f"name=^{engine['id']}$") == ""


def test_floor_buffer_max_and_idle_gc(agent_factory: AgentFactory) -> None:
    agent = agent_factory(
        *_ranges(),
        "--min-engines", "1", "--free-engines", "1", "--max-engines", "3",
        "--idle-grace-s", "2", "--claim-ttl-s", "60",
    )  # fmt: skip
    wait_for("floor of one engine", lambda: len(agent.healthy()) == 1, timeout=BOOT)
    # HAProxy's weight: one free engine plus two it may still start, out of three.
    assert _agent_check(agent) == b"ready 100%\n"
    claims = []
    for n in range(3):
        r = _claim(agent, f"c{n}")
        assert r.status_code == 201, r.text
        claims.append(r.json()["claim_id"])
        # Every busy engine is backed by a free one, up to max_engines.
        want = min(3, n + 2)
        wait_for(f"{want} healthy engines", lambda w=want: len(agent.healthy()) == w, timeout=BOOT)  # type: ignore[misc]
    assert len(agent.engines()) == 3
    status = agent.status()
    assert status["capacity"]["engines_free"] == 0
    assert status["capacity"]["weight_percent"] == 0
    assert _agent_check(agent) == b"ready 1%\n"  # full, but not drained: never weight 0
    refused = _claim(agent, "c9")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_capacity"
    assert len(agent.engines()) == 3  # max holds
    r = agent.post("/v1/engines")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "max_engines"

    for claim_id in claims:
        assert agent.delete(f"/v1/claims/{claim_id}").status_code == 204
    # Three free engines, buffer one, floor one: two are stopped after the idle grace.
    wait_for("idle engines stopped", lambda: len(agent.engines()) == 1, timeout=BOOT)
    assert agent.metric('acefleet_agent_engines_removed_total{reason="idle"}') == 2
    containers = docker("ps", "-q", "--filter", f"label=acefleet.host={agent.host}").split()
    assert len(containers) == 1


def test_adoption_after_sigkill_keeps_engines_and_claims(
    agent_factory: AgentFactory, log_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "claims.json"
    agent = agent_factory(
        *_ranges(),
        "--min-engines", "2", "--free-engines", "0", "--max-engines", "4",
        "--state-file", str(state), "--idle-grace-s", "1",
    )  # fmt: skip
    wait_for("two engines", lambda: len(agent.healthy()) == 2, timeout=BOOT)
    claim = _claim(agent, "live").json()
    # Containers that are not this agent's: another host's engine and a foreign container.
    other_host = f"other{uuid.uuid4().hex[:6]}"
    foreign = f"foreign-{uuid.uuid4().hex[:6]}"
    image = agent.args[agent.args.index("--engine-image") + 1]
    try:
        for name, labels in [
            (f"acefleet-{other_host}-1", ["acefleet.managed=true", f"acefleet.host={other_host}"]),
            (foreign, ["acefleet.test=agent-foreign"]),
        ]:
            label_args = [a for lab in labels for a in ("--label", lab)]
            docker("run", "-d", "--name", name, *label_args, "--entrypoint", "sleep", image, "300")
        before = {e["id"]: e for e in agent.engines()}
        ids_before = set(
            docker("ps", "-q", "--filter", f"label=acefleet.host={agent.host}").split()
        )
        agent.svc.kill()  # SIGKILL: no cleanup at all
        again = restart(agent, log_dir)
        try:
            wait_for("adopted healthy", lambda: len(again.healthy()) == 2, timeout=BOOT)
            after = {e["id"]: e for e in again.engines()}
            assert after.keys() == before.keys()
            for eid, e in after.items():
                assert (e["http_port"], e["p2p_port"]) == (
                    before[eid]["http_port"],
                    before[eid]["p2p_port"],
                )
            ids_after = set(
                docker("ps", "-q", "--filter", f"label=acefleet.host={again.host}").split()
            )
            assert ids_after == ids_before  # no duplicates, no wipe, same containers
            assert again.metric("acefleet_agent_engines_adopted_total") == 2
            # The claim survived: its engine still counts as busy and is not collected as idle.
            assert (
                again.get(f"/v1/engines/{claim['engine']['id']}").json()["engine"]["streams"] == 1
            )
            # Foreign containers were never touched.
            assert docker("inspect", "-f", "{{.State.Status}}", foreign) == "running"
            assert (
                docker("inspect", "-f", "{{.State.Status}}", f"acefleet-{other_host}-1")
                == "running"
            )
        finally:
            again.client.close()
            again.svc.stop()
    finally:
        docker("rm", "-f", foreign, check=False)
        remove_by_label(f"acefleet.host={other_host}")


def test_failing_probes_get_an_engine_replaced_once_it_has_no_viewers(
    agent_factory: AgentFactory,
) -> None:
    agent = agent_factory(
        *_ranges(),
        "--min-engines", "1", "--free-engines", "0", "--max-engines", "2",
        "--engine-extra-args", "--timing,fast,--chaos",
        "--probe-failures", "3", "--replace-cooldown-s", "1",
    )  # fmt: skip
    old = wait_for("engine ready", agent.healthy, timeout=BOOT)[0]
    claim = _claim(agent, "watched").json()
    assert claim["engine"]["id"] == old["id"]
    r = httpx.post(f"http://{old['endpoint']}/_sim/faults", json={"action": "fail_probes"})
    assert r.status_code < 300, r.text
    # Probes fail, but the engine still answers and carries a session: it is kept.
    wait_for(
        "probe failures past the threshold",
        lambda: agent.metric("acefleet_agent_probe_failures_total") >= 6,
        timeout=30,
    )
    engines = agent.engines()
    assert [(e["id"], e["health"]) for e in engines] == [(old["id"], "unhealthy")]
    assert agent.metric("acefleet_agent_engines_replaced_total") == 0
    # The viewers leave: now it is replaced.
    assert agent.delete(f"/v1/claims/{claim['claim_id']}").status_code == 204

    def replaced() -> dict[str, object] | None:
        engines = agent.healthy()
        fresh = [e for e in engines if e["id"] != old["id"]]
        return fresh[0] if fresh and all(e["id"] != old["id"] for e in agent.engines()) else None

    new = wait_for("replacement", replaced, timeout=BOOT)
    assert new["generation"] == 1
    assert agent.metric("acefleet_agent_engines_replaced_total") == 1
    assert agent.metric("acefleet_agent_probe_failures_total") >= 3
    assert docker("ps", "-aq", "--filter", f"name=^{old['id']}$") == ""


def test_port_held_by_another_process_is_skipped_and_a_full_range_is_an_error(
    agent_factory: AgentFactory,
) -> None:
    h_lo, h_hi = port_range(3)
    p_lo, p_hi = port_range(3)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", h_lo))
        holder.listen()
        agent = agent_factory(
            "--http-port-range", f"{h_lo}-{h_hi}", "--p2p-port-range", f"{p_lo}-{p_hi}",
            "--min-engines", "2", "--free-engines", "0",
        )  # fmt: skip
        engines = wait_for(
            "two engines", lambda: len(agent.healthy()) == 2 and agent.healthy(), timeout=BOOT
        )
        ports = sorted(e["http_port"] for e in engines)
        assert ports == [h_lo + 1, h_lo + 2]
        assert all(p_lo <= e["p2p_port"] <= p_hi for e in engines)
        assert len({e["p2p_port"] for e in engines} | set(ports)) == 4
        # The only HTTP port left is held by this test: a precise error, no crash.
        r = agent.post("/v1/engines")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "ports_exhausted"
        assert "no free HTTP port" in r.json()["error"]["message"]
        assert agent.svc.alive()


def test_breaker_opens_on_missing_image_and_recovers(
    agent_factory: AgentFactory, engine_image: str
) -> None:
    missing = f"acefleet-agent-test/missing:{uuid.uuid4().hex[:8]}"
    agent = agent_factory(
        *_ranges(),
        "--min-engines", "1", "--free-engines", "0",
        "--breaker-failures", "2", "--breaker-backoff-s", "1", "--breaker-backoff-max-s", "2",
        "--engine-profile", "engine-sim",
        image=missing,
    )  # fmt: skip
    try:
        prov = wait_for(
            "breaker open",
            lambda: (p := agent.status()["provisioning"])["state"] == "breaker_open" and p,
            timeout=60,
        )
        assert prov["reason"].startswith("image_missing")
        assert missing in prov["reason"]
        r = agent.post("/v1/engines")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "breaker_open"
        assert agent.engines() == []
        # The image appears (an operator loads it): a half-open retry succeeds and closes it.
        docker("tag", engine_image, missing)
        wait_for("engine after recovery", agent.healthy, timeout=BOOT)
        assert agent.status()["provisioning"] == {
            "state": "ok",
            "reason": None,
            "in_flight": 0,
            "failures_total": prov["failures_total"],
        }
    finally:
        docker("rmi", missing, check=False)


def test_engine_not_ready_by_the_deadline_is_removed(agent_factory: AgentFactory) -> None:
    agent = agent_factory(
        *_ranges(),
        "--min-engines", "1", "--free-engines", "0", "--ready-timeout-s", "2",
        "--breaker-failures", "5",
        "--engine-extra-args", "--timing,fast,--startup-delay,60",
    )  # fmt: skip
    wait_for(
        "late engine removed",
        lambda: agent.metric('acefleet_agent_engines_removed_total{reason="ready_timeout"}') >= 1,
        timeout=60,
    )
    assert agent.metric('acefleet_agent_provisions_total{result="ready_timeout"}') >= 1
    assert agent.healthy() == []


def test_two_agents_share_one_dockerd(agent_factory: AgentFactory) -> None:
    a = agent_factory(*_ranges(), "--min-engines", "1", "--free-engines", "0")
    b = agent_factory(*_ranges(), "--min-engines", "1", "--free-engines", "0")
    ea = wait_for("a ready", a.healthy, timeout=BOOT)
    eb = wait_for("b ready", b.healthy, timeout=BOOT)
    assert {e["id"] for e in ea}.isdisjoint({e["id"] for e in eb})
    assert all(e["host"] == a.host for e in a.engines())
    assert all(e["host"] == b.host for e in b.engines())
    # A session's stats: the claim carries the engine's stat_url, the agent polls it.
    e = ea[0]
    claim = _claim(a, "statme").json()
    assert claim["engine"]["id"] == e["id"]
    start = httpx.get(
        f"http://{e['endpoint']}/ace/getstream",
        params={"format": "json", "id": "statme", "pid": uuid.uuid4().hex},
        timeout=10,
    ).json()["response"]
    r = a.post(f"/v1/claims/{claim['claim_id']}/confirm", json={"stat_url": start["stat_url"]})
    assert r.json()["stat_url"] == start["stat_url"]
    detail = wait_for(
        "stats collected",
        lambda: (d := a.get(f"/v1/engines/{e['id']}").json())["stats_history"] and d,
        timeout=40,
    )
    assert detail["stats_history"][-1]["status"] in ("idle", "prebuf", "dl", None)
    assert detail["engine"]["stats"] == detail["stats_history"][-1]


def test_docker_events_keep_state_current_between_reconciliations(
    agent_factory: AgentFactory,
) -> None:
    # Reconciliation and probes every 60 s: only Docker's event stream can tell the agent in time.
    agent = agent_factory(
        *_ranges(), "--min-engines", "1", "--free-engines", "0",
        "--reconcile-interval-s", "60", "--probe-interval-s", "60",
    )  # fmt: skip
    old = wait_for("engine ready", agent.healthy, timeout=BOOT)[0]
    docker("rm", "-f", old["id"])
    # The destroy event removes it from the inventory and wakes the pool, which refills.
    wait_for(
        "engine gone from the inventory",
        lambda: all(e["id"] != old["id"] for e in agent.engines()),
        timeout=10,
    )
    new = wait_for(
        "replacement after external removal",
        lambda: [e for e in agent.healthy() if e["id"] != old["id"]],
        timeout=BOOT,
    )[0]
    assert agent.metric('acefleet_agent_engines_removed_total{reason="destroyed"}') == 1
    assert new["generation"] == 0
