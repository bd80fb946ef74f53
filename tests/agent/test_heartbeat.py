"""Heartbeats to central, against a stand-in central on loopback (central's own tests cover the
real endpoint): the agent posts its inventory with the service key and applies directives."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from acefleet.wire import Heartbeat
from tests.agent.helpers import API_KEY, BOOT, AgentFactory, wait_for
from tests.support import procs

CENTRAL_KEY = "central-service-key-42"


class CentralStandIn:
    def __init__(self) -> None:
        self.beats: list[tuple[str, str, dict[str, Any]]] = []
        self.directives: list[dict[str, Any]] = []
        self.claimed: dict[str, int] = {}
        self.free_engines: int | None = None
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.beats.append((self.path, self.headers.get("Authorization", ""), body))
                reply = {
                    "interval_s": 0.2,
                    "directives": stand_in.directives,
                    "claimed": stand_in.claimed,
                }
                if stand_in.free_engines is not None:
                    reply["free_engines"] = stand_in.free_engines
                stand_in.directives = []
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def central() -> Iterator[CentralStandIn]:
    c = CentralStandIn()
    yield c
    c.server.shutdown()
    c.server.server_close()


def test_heartbeat_carries_inventory_and_applies_directives(
    central: CentralStandIn, log_dir: Path, tmp_path: Path
) -> None:
    port = procs.free_port()
    svc = procs.start(
        "acefleet-agent",
        [
            "--host",
            "beater",
            "--listen-port",
            str(port),
            "--agent-check-port",
            "0",
            "--docker-url",
            f"unix://{tmp_path}/no-docker.sock",
            "--central-url",
            central.url,
            "--heartbeat-interval-s",
            "0.2",
            "--agent-url",
            "http://edge.example:8100",
        ],
        port=port,
        ready_path="/livez",
        log_dir=log_dir,
        env={"ACEFLEET_AGENT_API_KEY": API_KEY, "ACEFLEET_AGENT_CENTRAL_API_KEY": CENTRAL_KEY},
    )
    try:
        wait_for("two heartbeats", lambda: len(central.beats) >= 2)
        path, auth, body = central.beats[-1]
        assert path == "/v1/hosts/beater/heartbeat"
        assert auth == f"Bearer {CENTRAL_KEY}"
        beat = Heartbeat.model_validate(body)
        assert beat.agent_url == "http://edge.example:8100"
        assert beat.seq >= 1
        assert beat.provisioning.state == "blocked"  # no Docker here: central sees why
        assert beat.draining is False
        central.directives = [{"kind": "drain"}]
        wait_for("drained by central", lambda: httpx.get(svc.url + "/v1/drain").json()["draining"])
        wait_for("heartbeat says draining", lambda: central.beats[-1][2]["draining"])
        central.directives = [{"kind": "undrain"}]
        wait_for("undrained", lambda: not httpx.get(svc.url + "/v1/drain").json()["draining"])
    finally:
        svc.stop()


@pytest.mark.docker
def test_engines_central_placed_sessions_on_are_busy(
    central: CentralStandIn, agent_factory: AgentFactory
) -> None:
    agent = agent_factory(
        "--central-url", central.url, "--central-api-key", CENTRAL_KEY,
        "--heartbeat-interval-s", "0.2",
        "--min-engines", "1", "--free-engines", "0", "--idle-grace-s", "0",
    )  # fmt: skip
    engine = wait_for("engine ready", agent.healthy, timeout=BOOT)[0]
    wait_for("inventory reported", lambda: central.beats and central.beats[-1][2]["engines"])
    central.claimed = {engine["id"]: 1}
    wait_for("busy per central", lambda: agent.engines()[0]["streams"] == 1)
    r = agent.post("/v1/claims", json={"content_key": "id:x", "proxy_id": "p", "host": agent.host})
    assert r.json()["error"]["code"] == "no_capacity"  # not handed out twice
    # With idle_grace_s=0 it would be stopped at once if the agent thought it idle.
    time.sleep(1.5)
    assert [e["id"] for e in agent.engines()] == [engine["id"]]


@pytest.mark.docker
def test_central_warm_buffer_raises_the_agents_own(
    central: CentralStandIn, agent_factory: AgentFactory
) -> None:
    # On its own this agent keeps no engine; central's warm buffer of 2 must win, and the idle
    # reaper (grace 0) must not stop what central asked for.
    central.free_engines = 2
    agent = agent_factory(
        "--central-url", central.url, "--central-api-key", CENTRAL_KEY,
        "--heartbeat-interval-s", "0.2",
        "--min-engines", "0", "--free-engines", "0", "--idle-grace-s", "0",
    )  # fmt: skip
    ready = wait_for(
        "two warm engines", lambda: h if len(h := agent.healthy()) >= 2 else None, timeout=BOOT
    )
    ids = sorted(e["id"] for e in ready)
    time.sleep(1.5)
    assert sorted(e["id"] for e in agent.healthy()) == ids
