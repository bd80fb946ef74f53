"""Starting playback: selectors, the json envelope, the 302 chain, unknown content."""

from __future__ import annotations

import hashlib
import re
import time

import httpx
import pytest

from tests.simulator.conftest import StartSim, live, start_json
from tests.support.procs import Service

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")


def test_json_envelope(engine: Service) -> None:
    r = httpx.get(engine.url + "/ace/getstream?format=json&id=chan1&pid=p1")
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"response", "error"}
    assert body["error"] is None
    resp = body["response"]
    assert set(resp) == {
        "playback_url",
        "stat_url",
        "command_url",
        "infohash",
        "playback_session_id",
        "is_live",
        "is_encrypted",
        "client_session_id",
    }
    assert resp["is_live"] == 1
    assert resp["is_encrypted"] == 0
    assert resp["client_session_id"] == -1
    # infohash differs from the id and is sha1(id), so every engine agrees
    assert resp["infohash"] == hashlib.sha1(b"chan1").hexdigest() != "chan1"
    ih = resp["infohash"]
    m = re.fullmatch(rf"{engine.url}/ace/r/{ih}/([0-9a-f]+)", resp["playback_url"])
    assert m
    segment = m.group(1)
    assert HEX32.match(segment)
    assert HEX40.match(resp["playback_session_id"])
    assert resp["playback_session_id"] != segment
    assert resp["stat_url"] == f"{engine.url}/ace/stat/{ih}/{segment}"
    assert resp["command_url"] == f"{engine.url}/ace/cmd/{ih}/{segment}"


def test_use_api_events_adds_event_url(engine: Service) -> None:
    resp = start_json(engine.url, "id=chan-ev&use_api_events=1")
    ih = resp["infohash"]
    assert re.fullmatch(rf"{engine.url}/ace/event/{ih}/[0-9a-f]{{32}}", str(resp["event_url"]))
    assert "event_url" not in start_json(engine.url, "id=chan-ev2")
    assert httpx.get(str(resp["event_url"])).json()["error"] is None


def test_urls_follow_the_host_header(engine: Service) -> None:
    r = httpx.get(
        engine.url + "/ace/getstream?format=json&id=x1", headers={"Host": "engine.example:1234"}
    )
    assert r.json()["response"]["playback_url"].startswith("http://engine.example:1234/ace/r/")
    r2 = httpx.get(engine.url + "/ace/getstream?id=x2", headers={"Host": "other:9"})
    assert r2.status_code == 302
    assert r2.headers["location"].startswith("http://other:9/ace/r/")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("content_id=aaa&id=bbb&infohash=" + "c" * 40, hashlib.sha1(b"aaa").hexdigest()),
        ("id=bbb&infohash=" + "c" * 40 + "&url=http://u", hashlib.sha1(b"bbb").hexdigest()),
        ("infohash=" + "C" * 40 + "&url=http://u&magnet=m", "c" * 40),
        (
            "url=http://u/x.acelive&magnet=magnet:?xt=urn:btih:" + "e" * 40,
            hashlib.sha1(b"http://u/x.acelive").hexdigest(),
        ),
        ("magnet=magnet:?xt=urn:btih:" + "E" * 40, "e" * 40),
    ],
)
def test_selector_precedence(engine: Service, query: str, expected: str) -> None:
    assert start_json(engine.url, query)["infohash"] == expected


def test_same_content_by_id_and_by_its_infohash_is_one_session(engine: Service) -> None:
    a = start_json(engine.url, "id=same&pid=p")
    b = start_json(engine.url, f"infohash={a['infohash']}&pid=p")
    assert a["playback_session_id"] == b["playback_session_id"]


def test_pid_and_sid_and_passthrough_options_are_accepted(engine: Service) -> None:
    a = start_json(
        engine.url,
        "id=opts&pid=viewer1&transcode_audio=0&transcode_mp3=0&transcode_ac3=1"
        "&preferred_audio_language=eng&file_indexes=0",
    )
    b = start_json(engine.url, "id=opts&sid=viewer1")
    assert a["playback_session_id"] == b["playback_session_id"]  # sid is pid's alias
    [s] = [s for s in live(engine.url) if s["infohash"] == a["infohash"]]
    assert s["pid"] == "viewer1"


def test_no_selector_is_http_500(engine: Service) -> None:
    for q in ("", "?format=json", "?id=&pid=x"):
        r = httpx.get(engine.url + "/ace/getstream" + q)
        assert r.status_code == 500, q


def test_redirect_chain_to_content(engine: Service) -> None:
    with httpx.Client(timeout=10) as c:
        r1 = c.get(engine.url + "/ace/getstream?id=chain")
        assert r1.status_code == 302
        loc1 = r1.headers["location"]
        assert re.fullmatch(rf"{engine.url}/ace/r/[0-9a-f]{{40}}/[0-9a-f]{{32}}", loc1)
        r2 = c.get(loc1)
        assert r2.status_code == 302
        loc2 = r2.headers["location"]
        ih = hashlib.sha1(b"chain").hexdigest()
        assert re.fullmatch(rf"{engine.url}/content/{ih}/[0-9a-f]{{32}}", loc2)
        with c.stream("GET", loc2) as r3:
            assert r3.status_code == 200
            assert r3.headers["content-type"] == "video/mp2t"
            first = next(r3.iter_raw())
            assert first[0] == 0x47


def test_unknown_content_by_id_fails_after_delay(start_sim: StartSim) -> None:
    svc = start_sim("--unknown-id-delay", "0.6", "--unknown-infohash-delay", "1.2")
    t0 = time.monotonic()
    r = httpx.get(svc.url + "/ace/getstream?format=json&id=deadbeef01", timeout=10)
    took_id = time.monotonic() - t0
    assert r.status_code == 200
    assert r.json() == {"response": None, "error": "failed to load content"}
    assert took_id >= 0.55
    t0 = time.monotonic()
    r = httpx.get(svc.url + "/ace/getstream?format=json&infohash=dead" + "0" * 36, timeout=10)
    took_ih = time.monotonic() - t0
    assert r.json() == {"response": None, "error": "failed to load content"}
    assert took_ih >= 1.15
    # the magnet's infohash is the selector value the rule looks at
    r = httpx.get(
        svc.url + "/ace/getstream?format=json&magnet=magnet:?xt=urn:btih:dead" + "1" * 36,
        timeout=10,
    )
    assert r.json()["error"] == "failed to load content"
    assert live(svc.url) == []
    # without format=json the same error body comes back
    r = httpx.get(svc.url + "/ace/getstream?id=DEADcafe", timeout=10)
    assert r.json()["error"] == "failed to load content"


def test_ids_that_merely_contain_dead_are_known(engine: Service) -> None:
    assert start_json(engine.url, "id=notdead")["infohash"] == hashlib.sha1(b"notdead").hexdigest()
