"""HLS: v3 playlist, absolute segment URLs, segments that are valid TS, replacement -> 403."""

from __future__ import annotations

import re
import time

import httpx

from tests.simulator.conftest import check_ts, start_json
from tests.support.procs import Service

SEG = re.compile(r"^http://[^/]+/ace/c/([0-9a-f]{40})/(\d+)\.ts$")


def _playlist(url: str) -> tuple[list[str], list[float], int]:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
    lines = r.text.splitlines()
    assert lines[0] == "#EXTM3U"
    assert "#EXT-X-VERSION:3" in lines
    seq = int(next(x for x in lines if x.startswith("#EXT-X-MEDIA-SEQUENCE:")).split(":")[1])
    durations = [float(x[8:].rstrip(",")) for x in lines if x.startswith("#EXTINF:")]
    uris = [x for x in lines if x and not x.startswith("#")]
    target = int(next(x for x in lines if x.startswith("#EXT-X-TARGETDURATION:")).split(":")[1])
    assert all(d <= target for d in durations)
    return uris, durations, seq


def test_manifest_json_and_playlist(engine: Service) -> None:
    resp = start_json(engine.url, "id=hls1&pid=h", path="/ace/manifest.m3u8")
    ih = resp["infohash"]
    assert re.fullmatch(rf"{engine.url}/ace/m/{ih}/[0-9a-f]{{32}}\.m3u8", str(resp["playback_url"]))
    uris, durations, _ = _playlist(str(resp["playback_url"]))
    assert len(uris) >= 2
    for uri in uris:
        m = SEG.match(uri)
        assert m, uri
        assert m.group(1) == ih
        assert uri.startswith(engine.url)
    assert all(0.9 <= d <= 1.6 for d in durations)  # fast profile: 1 s segments
    seg = httpx.get(uris[0], timeout=10)
    assert seg.status_code == 200
    assert seg.headers["content-type"] == "video/mp2t"
    rep = check_ts(seg.content)
    assert rep.cc_errors == 0
    assert seg.content[0] == 0x47
    assert rep.keyframes >= 1
    # a segment begins at a random-access point (after PAT and PMT)
    from acefleet import mpegts

    assert mpegts.random_access(seg.content[2 * 188 : 3 * 188])


def test_manifest_without_json_serves_the_playlist(engine: Service) -> None:
    r = httpx.get(engine.url + "/ace/manifest.m3u8?id=hls2", timeout=10)
    assert r.status_code == 200
    assert r.text.startswith("#EXTM3U")
    assert "/ace/c/" in r.text


def test_window_slides_with_time(engine: Service) -> None:
    url = str(start_json(engine.url, "id=hls3", path="/ace/manifest.m3u8")["playback_url"])
    uris0, _, seq0 = _playlist(url)
    for _ in range(9):  # a player refreshes the playlist, which keeps the session alive
        time.sleep(0.5)
        _playlist(url)
    uris, _, seq1 = _playlist(url)
    assert seq1 >= seq0 + 1  # old segments leave the window
    last = [int(SEG.match(u).group(2)) for u in (uris0[-1], uris[-1])]  # type: ignore[union-attr]
    assert last[1] >= last[0] + 3  # new ones arrive at ~1 per second
    assert httpx.get(uris0[0], timeout=5).status_code == 404
    old = uris[0].rsplit("/", 1)[0] + f"/{seq1 + 50}.ts"
    assert httpx.get(old, timeout=5).status_code == 404


def test_replaced_hls_session_answers_403(engine: Service) -> None:
    old = start_json(engine.url, "id=hls4&pid=a", path="/ace/manifest.m3u8")
    assert httpx.get(str(old["playback_url"]), timeout=10).status_code == 200
    new = start_json(engine.url, "id=hls4&pid=b", path="/ace/manifest.m3u8")
    assert httpx.get(str(old["playback_url"]), timeout=10).status_code == 403
    assert httpx.get(str(new["playback_url"]), timeout=10).status_code == 200
