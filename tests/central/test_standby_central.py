"""Standby central: two real ``acefleet-central`` processes on one database, one serving.

keepalived is not run here. What it does is played by the test: it writes each central's VRRP
state file (MASTER / BACKUP, as the role's notify script does) and moves a small loopback TCP
forwarder, :class:`Vip`, from one central's port to the other's — the forwarder mocks only the
address move of the control VIP (connections to the old holder are cut, new ones reach the new
holder). Agents and proxies are the wire-level simulators of ``fleetsim`` talking to the VIP.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from acefleet.wire import HeartbeatReply, LiveStream
from orchestrator.central import activity
from orchestrator.central.settings import CentralSettings
from tests.central.conftest import FAST, StartCentral
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    VIEWER_KEY,
    Agent,
    claim_body,
    engine,
    snapshot,
)
from tests.support import procs

MASTER, BACKUP = "MASTER\n", "BACKUP\n"


class Vip:
    """A loopback TCP forwarder standing in for the control VIP: ``move`` points it at another
    port and cuts every connection through it, as the address leaving a host does."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="vip", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def move(self, target: int) -> None:
        with self.lock:
            self.target = target
            cut, self.open = self.open, set()
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.move(0)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                target = self.target
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class Pair:
    """Two centrals sharing a database, each with its keepalived state file."""

    def __init__(self, tmp_path: Path, log_dir: Path) -> None:
        self.tmp_path = tmp_path
        self.log_dir = log_dir
        self.state_files: dict[str, Path] = {}
        self.centrals: dict[str, procs.Service] = {}

    def start(self, name: str, state: str) -> procs.Service:
        state_file = self.tmp_path / f"vrrp-state-{name}"
        state_file.write_text(state)
        port = procs.free_port()
        env = {
            **FAST,
            # a warm-up long enough to see, as in production (a few heartbeats)
            "ACEFLEET_CENTRAL_WARMUP_S": "3",
            "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
            "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{self.tmp_path / 'shared.db'}",
            "ACEFLEET_CENTRAL_SERVICE_KEYS": SERVICE_KEY,
            "ACEFLEET_CENTRAL_OPERATOR_KEYS": OPERATOR_KEY,
            "ACEFLEET_CENTRAL_VIEWER_KEYS": VIEWER_KEY,
            "ACEFLEET_CENTRAL_LOG_FORMAT": "json",
            "ACEFLEET_CENTRAL_STANDBY_STATE_FILE": str(state_file),
            "ACEFLEET_CENTRAL_STANDBY_CHECK_INTERVAL_S": "0.1",
        }
        svc = procs.start(
            "acefleet-central",
            [],
            port=port,
            ready_path="/readyz",
            expect_status=200 if state == MASTER else 503,
            log_dir=self.log_dir,
            env=env,
            timeout=40,
        )
        self.state_files[name] = state_file
        self.centrals[name] = svc
        return svc

    def set_state(self, name: str, state: str) -> None:
        self.state_files[name].write_text(state)

    def stop(self) -> None:
        for svc in self.centrals.values():
            svc.stop()


@pytest.fixture
def pair(tmp_path: Path, log_dir: Path) -> Iterator[Pair]:
    p = Pair(tmp_path, log_dir)
    try:
        yield p
    finally:
        p.stop()


def _wait(what: str, predicate: Callable[[], Any], limit_s: float = 20.0) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if value := predicate():
                return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached in {limit_s} s")


def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(url + "/readyz", timeout=5)
    return r.status_code, r.json()


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=10)


def _beat(client: httpx.Client, agent: Agent) -> HeartbeatReply:
    return agent.beat(client)


def _claim(client: httpx.Client, content: str, host: str) -> httpx.Response:
    return client.post("/v1/claims", json=claim_body(content, host))


def _stream(content: str, engine_id: str) -> LiveStream:
    return LiveStream(
        stream_id=f"s-{content}",
        content_key=content,
        engine_id=engine_id,
        source="central",
        viewers=1,
        started_at=datetime.now(UTC),
    )


def _take_over(pair: Pair, vip: Vip, new: str, old: str) -> None:
    """keepalived's part of a move: the old holder's notify says BACKUP, the new one's MASTER,
    the address moves."""
    pair.set_state(old, BACKUP)
    pair.set_state(new, MASTER)
    vip.move(pair.centrals[new].port)
    _wait(f"{new} serves", lambda: _readyz(pair.centrals[new].url)[0] == 200)
    _wait(f"{old} stands by", lambda: _readyz(pair.centrals[old].url)[0] == 503)


@contextlib.contextmanager
def _a_serving_b_standing_by(pair: Pair) -> Iterator[tuple[procs.Service, Vip]]:
    """Central a as MASTER behind the VIP, b as BACKUP; the VIP closed at the end."""
    a = pair.start("a", MASTER)
    pair.start("b", BACKUP)
    vip = Vip(a.port)
    try:
        yield a, vip
    finally:
        vip.close()


def _claim_one_on_edge1(svc: httpx.Client, edge1: Agent, edge2: Agent) -> str:
    """Both agents beat, then edge1's proxy claims id:one: the engine id central placed it on."""
    _beat(svc, edge1)
    _beat(svc, edge2)
    r = _claim(svc, "id:one", "edge1")
    assert r.status_code == 200, r.text
    engine_id: str = r.json()["engine"]["id"]
    return engine_id


def test_a_standby_answers_health_and_metrics_and_applies_nothing(pair: Pair) -> None:
    active = pair.start("a", MASTER)
    standby = pair.start("b", BACKUP)
    status, body = _readyz(standby.url)
    assert (status, body["status"]) == (503, "standby")
    assert httpx.get(standby.url + "/livez", timeout=5).status_code == 200

    ghost = Agent("ghost", 1)
    with _client(standby.url, SERVICE_KEY) as svc, _client(standby.url, OPERATOR_KEY) as op:
        for r in (
            svc.post(
                "/v1/hosts/ghost/heartbeat",
                content=ghost.heartbeat_body().model_dump_json(),
                headers={"content-type": "application/json"},
            ),
            _claim(svc, "id:ghost", "ghost"),  # the claim fast path is behind the gate too
            op.get("/v1/hosts"),
            op.post("/v1/hosts/ghost/drain"),
            httpx.get(standby.url + "/", timeout=5),
        ):
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "standby_central"
            assert int(r.headers["Retry-After"]) >= 1
        metrics = httpx.get(standby.url + "/metrics", timeout=5)
    assert metrics.status_code == 200
    assert 'acefleet_central_hosts{status="live"} 0.0' in metrics.text
    assert "acefleet_central_active 0.0" in metrics.text

    # The active one is not affected, and when the standby takes over it knows nothing of what
    # was sent to it as a standby.
    with _client(active.url, OPERATOR_KEY) as op:
        assert op.get("/v1/hosts").status_code == 200
    vip = Vip(active.port)
    try:
        _take_over(pair, vip, "b", "a")
    finally:
        vip.close()
    with _client(standby.url, OPERATOR_KEY) as op:
        assert op.get("/v1/hosts/ghost").status_code == 404
    took_over = httpx.get(standby.url + "/metrics", timeout=5).text
    assert "acefleet_central_active 1.0" in took_over
    assert "acefleet_central_takeovers_total 1.0" in took_over
    with _client(active.url, OPERATOR_KEY) as op:
        r = op.get("/v1/hosts")
        assert (r.status_code, r.json()["error"]["code"]) == (503, "standby_central")


def test_a_takeover_never_hands_out_a_busy_engine_nor_opens_a_channel_twice(pair: Pair) -> None:
    with _a_serving_b_standing_by(pair) as (_, vip):
        edge1, edge2 = Agent("edge1", 2), Agent("edge2", 1)
        with _client(vip.url, SERVICE_KEY) as svc:
            busy = _claim_one_on_edge1(svc, edge1, edge2)
            idle = next(e.id for e in edge1.engines if e.id != busy)
            # The agent now reports the session on that engine.
            edge1.engines = [
                engine("edge1", int(e.id[-1]), streams=1 if e.id == busy else 0)
                for e in edge1.engines
            ]
            _beat(svc, edge1)

        _take_over(pair, vip, "b", "a")
        status, body = _readyz(pair.centrals["b"].url)
        assert (status, body["warming_up"]) == (200, True)  # rebuilt as after a start

        with _client(vip.url, SERVICE_KEY) as svc:
            # Before edge1's proxy has snapshotted to the new central, its agent's busy count is
            # echoed (the agent keeps the engine busy) and the engine is not placed again.
            reply = _beat(svc, edge1)
            assert reply.claimed.get(busy) == 1
            _beat(svc, edge2)
            r = _claim(svc, "id:two", "edge1")
            assert r.status_code == 200, r.text
            assert r.json()["engine"]["id"] == idle
            edge1.engines = [
                engine("edge1", int(e.id[-1]), streams=1) for e in edge1.engines
            ]  # both busy now
            _beat(svc, edge1)
            r = _claim(svc, "id:three", "edge1")
            assert r.status_code == 503, r.text  # nothing free on edge1: not the busy engine

            # edge1's proxy snapshots: the new central adopts id:one on its engine. Another edge
            # asking for id:one is told to relay from edge1, not to open the channel again.
            snapshot(svc, "edge1", [_stream("id:one", busy), _stream("id:two", idle)])
            r = _claim(svc, "id:one", "edge2")
            assert r.status_code == 200, r.text
            assert r.json()["kind"] == "relay"
            assert r.json()["relay"]["host"] == "edge1"


def test_taking_the_vip_back_drops_what_the_old_state_knew(pair: Pair) -> None:
    with _a_serving_b_standing_by(pair) as (a, vip):
        edge1, edge2 = Agent("edge1", 1), Agent("edge2", 1)
        with _client(vip.url, SERVICE_KEY) as svc:
            snapshot(svc, "edge1", [_stream("id:one", _claim_one_on_edge1(svc, edge1, edge2))])

        _take_over(pair, vip, "b", "a")
        # While b serves, id:one ends on edge1 (its proxy's snapshot no longer lists it), and an
        # operator adds a channel (to the database both share).
        with _client(vip.url, SERVICE_KEY) as svc, _client(vip.url, OPERATOR_KEY) as op:
            _beat(svc, edge1)
            _beat(svc, edge2)
            snapshot(svc, "edge1", [])
            added = {"name": "Added on b", "content_kind": "id", "content_value": "ab" * 20}
            assert op.post("/v1/channels", json=added).status_code == 201

        _take_over(pair, vip, "a", "b")
        status, body = _readyz(a.url)
        assert (status, body["warming_up"]) == (200, True)
        with _client(vip.url, SERVICE_KEY) as svc:
            _beat(svc, edge1)
            _beat(svc, edge2)
            snapshot(svc, "edge1", [])
            snapshot(svc, "edge2", [])
            # a's old book said id:one plays on edge1: kept, it would send edge2 to relay from
            # there; dropped at the takeover, edge2 gets an engine of its own.
            r = _claim(svc, "id:one", "edge2")
            assert r.status_code == 200, r.text
            assert r.json()["kind"] == "engine"
            assert r.json()["engine"]["host"] == "edge2"
        with _client(vip.url, VIEWER_KEY) as viewer:
            names = [c["name"] for c in viewer.get("/v1/channels").json()["items"]]
        assert "Added on b" in names  # a's catalog is re-read at the takeover, not its old copy


def test_the_control_vip_on_a_local_interface_decides(start_central: StartCentral) -> None:
    assert activity.holds_address("127.0.0.1")
    assert not activity.holds_address("198.51.100.77")  # TEST-NET-2: on no interface here
    serving = start_central(standby_control_vip="127.0.0.1")
    standing_by = start_central(standby_control_vip="198.51.100.77")
    assert _readyz(serving.url)[0] == 200
    status, body = _readyz(standing_by.url)
    assert (status, body["status"]) == (503, "standby")
    with _client(standing_by.url, VIEWER_KEY) as viewer:
        r = viewer.get("/v1/fleet")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "standby_central")
    # the dashboards' live WebSocket is refused before its upgrade
    ws_url = standing_by.url.replace("http://", "ws://") + "/v1/live/ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, open_timeout=5).close()
    assert refused.value.response.status_code == 403
    with pytest.raises(ValidationError, match="standby_control_vip"):
        CentralSettings(service_keys=[SERVICE_KEY], standby_control_vip="control-vip.example")
