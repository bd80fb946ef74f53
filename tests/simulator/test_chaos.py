"""Fault injection at /_sim/faults (only with --chaos)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.simulator.conftest import Reader, StartSim, live, start_json, wait_for
from tests.support import procs
from tests.support.procs import Service

VERSION = "/webui/api/service?method=get_version"
STATUS = "/server/api?api_version=3&method=get_status"


@pytest.fixture(scope="module")
def chaos_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    port = procs.free_port()
    svc = procs.start(
        "acefleet-engine-sim",
        ["--http-port", str(port), "--timing", "fast", "--chaos"],
        port=port,
        ready_path=VERSION,
        log_dir=tmp_path_factory.mktemp("chaos-logs"),
    )
    yield svc
    svc.stop()


@pytest.fixture
def chaos(chaos_engine: Service) -> Iterator[Service]:
    """The shared chaos simulator, with every fault cleared after each test."""
    yield chaos_engine
    if chaos_engine.alive():
        fault(chaos_engine, action="clear")


def fault(svc: Service, **body: object) -> httpx.Response:
    return httpx.post(svc.url + "/_sim/faults", json=body, timeout=5)


def _bytes_in(reader: Reader, seconds: float) -> int:
    """Bytes ``reader`` got over the next ``seconds``. Only as an upper bound ("a stalled session
    sends nothing") or between two windows of one run: a loaded machine reads less, never more;
    the simulator's absolute rate is bench/sim_capacity.py's figure."""
    t0 = time.monotonic()
    time.sleep(seconds)
    return reader.bytes_between(t0, time.monotonic())


def _flows(reader: Reader, more: int = 100_000, timeout: float = 10) -> bool:
    """``reader`` gets ``more`` bytes again (a bounded wait, not a speed check)."""
    start = reader.total
    return wait_for(lambda: reader.total >= start + more, timeout)


def test_faults_are_off_without_chaos(sim: Service) -> None:
    assert fault(sim, action="crash").status_code == 404
    assert httpx.get(sim.url + "/_sim/faults").status_code == 404
    assert sim.alive()


def test_bad_fault_requests_get_precise_errors(chaos: Service) -> None:
    r = fault(chaos, action="explode")
    assert r.status_code == 400
    assert "action" in r.json()["error"]
    r = fault(chaos, action="slow")
    assert r.status_code == 400
    assert "factor" in r.json()["error"]
    r = httpx.post(chaos.url + "/_sim/faults", content=b"{not json", timeout=5)
    assert r.status_code == 400
    r = fault(chaos, action="stall", infohash="xyz")
    assert r.status_code == 400
    assert "infohash" in r.json()["error"]
    assert chaos.alive()


def test_stall_sends_nothing_but_keeps_the_connection(chaos: Service) -> None:
    resp = start_json(chaos.url, "id=stall")
    other = start_json(chaos.url, "id=flowing")
    reader = Reader(str(resp["playback_url"]))
    bystander = Reader(str(other["playback_url"]))
    assert wait_for(lambda: reader.total > 300_000 and bystander.total > 300_000)
    assert fault(chaos, action="stall", infohash=resp["infohash"]).status_code == 200
    time.sleep(0.3)
    before = bystander.total
    assert _bytes_in(reader, 1.5) < 10_000
    # only the named session stalls: the other one goes on
    assert wait_for(lambda: bystander.total >= before + 100_000)
    assert not reader.done.is_set()
    faults = httpx.get(chaos.url + "/_sim/faults").json()["faults"]
    assert [f["action"] for f in faults] == ["stall"]
    assert fault(chaos, action="clear").status_code == 200
    assert _flows(reader)
    reader.stop()
    bystander.stop()


def test_no_peers_reports_an_empty_swarm_while_playing(chaos: Service) -> None:
    resp = start_json(chaos.url, "id=peerless")
    other = start_json(chaos.url, "id=peered")
    reader = Reader(str(resp["playback_url"]))
    bystander = Reader(str(other["playback_url"]))  # a session reports peers while it plays
    assert wait_for(lambda: reader.total > 100_000 and bystander.total > 100_000)

    def peers(r: dict[str, object]) -> int:
        body = httpx.get(str(r["stat_url"]), timeout=5).json()["response"]
        return int(body["peers"])

    assert peers(resp) > 0
    assert fault(chaos, action="no_peers", infohash=resp["infohash"]).status_code == 200
    assert peers(resp) == 0
    assert peers(other) > 0  # only the named session lost its swarm
    assert _flows(reader)  # the stream itself goes on
    assert fault(chaos, action="clear").status_code == 200
    assert peers(resp) > 0
    reader.stop()
    bystander.stop()


def test_stall_with_seconds_ends_by_itself(chaos: Service) -> None:
    resp = start_json(chaos.url, "id=stall-timed")
    reader = Reader(str(resp["playback_url"]))
    assert wait_for(lambda: reader.total > 300_000)
    fault(chaos, action="stall", seconds=3.0)
    time.sleep(0.2)
    assert _bytes_in(reader, 0.6) < 10_000
    # the window above lay inside the stall: the fault is still there after it
    assert [f["action"] for f in httpx.get(chaos.url + "/_sim/faults").json()["faults"]] == [
        "stall"
    ]
    assert _flows(reader)  # then flows again without a clear
    assert httpx.get(chaos.url + "/_sim/faults").json()["faults"] == []
    reader.stop()


def test_slow_divides_the_rate(chaos: Service) -> None:
    resp = start_json(chaos.url, "id=slow")
    reader = Reader(str(resp["playback_url"]))
    assert wait_for(lambda: reader.total > 300_000)
    normal = _bytes_in(reader, 2.0)
    fault(chaos, action="slow", factor=4)
    time.sleep(0.3)
    slowed = _bytes_in(reader, 2.0)
    # a quarter of the rate: well under half of the window before, and still flowing
    assert 0 < slowed < normal / 2, (slowed, normal)
    assert _flows(reader, more=50_000)
    reader.stop()


def test_cut_closes_playback_connections_but_not_the_session(chaos: Service) -> None:
    resp = start_json(chaos.url, "id=cut")
    reader = Reader(str(resp["playback_url"]))
    assert wait_for(lambda: reader.total > 100_000)
    assert fault(chaos, action="cut").status_code == 200
    assert reader.done.wait(5)
    assert resp["infohash"] in [s["infohash"] for s in live(chaos.url)]
    # a new read of the same session works again
    again = Reader(str(resp["playback_url"]))
    assert wait_for(lambda: again.total > 100_000)
    again.stop()


def test_fail_probes_answers_500_until_it_expires(chaos: Service) -> None:
    assert fault(chaos, action="fail_probes", seconds=1.0).status_code == 200
    assert httpx.get(chaos.url + VERSION).status_code == 500
    assert httpx.get(chaos.url + STATUS).status_code == 500
    assert wait_for(lambda: httpx.get(chaos.url + VERSION).status_code == 200, 5)
    assert httpx.get(chaos.url + STATUS).json()["result"]["playlist_loaded"] is True


def test_clear_ends_fail_probes(chaos: Service) -> None:
    fault(chaos, action="fail_probes")
    assert httpx.get(chaos.url + VERSION).status_code == 500
    fault(chaos, action="clear")
    assert httpx.get(chaos.url + VERSION).status_code == 200


def test_crash_exits_at_once(start_sim: StartSim) -> None:
    svc = start_sim("--chaos")
    with pytest.raises(httpx.HTTPError):
        fault(svc, action="crash")
    assert svc.proc.wait(timeout=5) == 70
