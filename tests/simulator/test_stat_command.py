"""stat_url lifecycle and fields; command_url stop."""

from __future__ import annotations

import threading
import time

import httpx

from tests.simulator.conftest import StartSim, live, read_stream, start_json, wait_for
from tests.support.procs import Service

UNKNOWN = {"response": None, "error": "unknown playback session id"}


def _stat(url: str) -> dict[str, object]:
    body = httpx.get(url, timeout=5).json()
    assert isinstance(body, dict)
    return body


def test_stat_lifecycle_empty_idle_prebuf_dl(start_sim: StartSim) -> None:
    svc = start_sim("--stat-empty", "0.6", "--prebuffer", "1.2")
    resp = start_json(svc.url, "id=lifecycle")
    stat = str(resp["stat_url"])
    assert _stat(stat) == {"response": {}, "error": None}
    time.sleep(0.8)
    idle = _stat(stat)["response"]
    assert isinstance(idle, dict)
    assert idle["status"] == "idle"
    opener = threading.Thread(
        target=lambda: httpx.get(str(resp["playback_url"]), timeout=10), daemon=True
    )
    opener.start()
    assert wait_for(lambda: _stat(stat)["response"]["status"] == "prebuf", 3)  # type: ignore[index]
    opener.join(10)
    dl = _stat(stat)
    assert dl["error"] is None
    r = dl["response"]
    assert isinstance(r, dict)
    assert r["status"] == "dl"
    for key in ("peers", "speed_down", "speed_up", "downloaded", "uploaded", "total_progress"):
        assert isinstance(r[key], int), key
    assert r["peers"] > 0
    assert r["speed_down"] > 0  # KB/s
    livepos = r["livepos"]
    assert isinstance(livepos, dict)
    assert livepos
    assert all(isinstance(v, str) for v in livepos.values())
    assert int(livepos["last_ts"]) >= int(livepos["first_ts"])


def test_downloaded_grows_while_streaming(engine: Service) -> None:
    resp = start_json(engine.url, "id=grow")
    read_stream(str(resp["playback_url"]), 400_000)
    r = _stat(str(resp["stat_url"]))["response"]
    assert isinstance(r, dict)
    assert r["downloaded"] >= 400_000


def test_stop_then_stop_again(engine: Service) -> None:
    resp = start_json(engine.url, "id=stopme")
    cmd = str(resp["command_url"])
    assert httpx.get(cmd + "?method=stop").json() == {"response": "ok", "error": None}
    assert httpx.get(cmd + "?method=stop").json() == UNKNOWN
    assert _stat(str(resp["stat_url"])) == UNKNOWN
    assert httpx.get(str(resp["playback_url"]), timeout=5).status_code == 403
    assert resp["infohash"] not in [s["infohash"] for s in live(engine.url)]


def test_stop_ends_an_active_read(engine: Service) -> None:
    resp = start_json(engine.url, "id=stopread")
    got = bytearray()
    done = threading.Event()

    def read() -> None:
        try:
            with (
                httpx.Client(timeout=10, follow_redirects=True) as c,
                c.stream("GET", str(resp["playback_url"])) as r,
            ):
                for part in r.iter_raw():
                    got.extend(part)
                    if len(got) > 50_000_000:
                        break
        except httpx.HTTPError:
            pass
        done.set()

    t = threading.Thread(target=read)
    t.start()
    assert wait_for(lambda: len(got) > 100_000)
    httpx.get(str(resp["command_url"]) + "?method=stop")
    assert done.wait(5)
    t.join(5)


def test_command_unknown_method(engine: Service) -> None:
    resp = start_json(engine.url, "id=cmdx")
    body = httpx.get(str(resp["command_url"]) + "?method=pause").json()
    assert body["response"] is None
    assert "unknown method" in body["error"]
    assert resp["infohash"] in [s["infohash"] for s in live(engine.url)]


def test_stat_of_never_existing_session(engine: Service) -> None:
    assert _stat(engine.url + "/ace/stat/" + "a" * 40 + "/" + "b" * 32) == UNKNOWN
