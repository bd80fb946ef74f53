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


def _rate(reader: Reader, seconds: float) -> float:
    t0 = time.monotonic()
    time.sleep(seconds)
    return reader.bytes_between(t0, time.monotonic()) / seconds


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
    assert _rate(reader, 1.5) < 10_000
    assert _rate(bystander, 1.0) > 300_000  # only the named session stalls
    assert not reader.done.is_set()
    faults = httpx.get(chaos.url + "/_sim/faults").json()["faults"]
    assert [f["action"] for f in faults] == ["stall"]
    assert fault(chaos, action="clear").status_code == 200
    time.sleep(0.3)
    assert _rate(reader, 1.0) > 300_000
    reader.stop()
    bystander.stop()


def test_stall_with_seconds_ends_by_itself(chaos: Service) -> None:
    resp = start_json(chaos.url, "id=stall-timed")
    reader = Reader(str(resp["playback_url"]))
    assert wait_for(lambda: reader.total > 300_000)
    fault(chaos, action="stall", seconds=1.0)
    time.sleep(0.2)
    assert _rate(reader, 0.6) < 10_000
    time.sleep(0.5)
    assert _rate(reader, 1.0) > 300_000
    reader.stop()


def test_slow_divides_the_rate(chaos: Service) -> None:
    resp = start_json(chaos.url, "id=slow")
    reader = Reader(str(resp["playback_url"]))
    assert wait_for(lambda: reader.total > 300_000)
    normal = _rate(reader, 1.5)
    assert 380_000 < normal < 650_000  # 4 Mbit/s = 500 kB/s
    fault(chaos, action="slow", factor=4)
    time.sleep(0.3)
    slowed = _rate(reader, 2.0)
    assert 70_000 < slowed < 200_000, slowed
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
