"""Players across edges, on real processes: a real central (catalog, players, usage from
snapshots), two real proxies polling it, one simulator behind them.

- A player limited to one stream watches on proxy A; once central's usage shows it, proxy B
  refuses that player a second stream (429 ``player_stream_limit``); when the first ends, B lets
  it start. The tokens are the ones central wrote into the player's own playlist.
- The player files a proxy serves are the bytes central serves; with central down the proxy
  keeps serving them from memory, and after a restart from its ``cache_dir``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from acefleet.catalog_wire import PlayerUsage
from tests.central.conftest import StartCentral, start_central  # noqa: F401  (the fixture)
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY
from tests.proxy.client import get_json, metric, request, sim_sessions
from tests.proxy.conftest import StartProxy, endpoint
from tests.support import procs

CONTENT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"
KEY = "k1:0123456789abcdef-secret"
VIP = "http://vip.test"
GUIDE = (
    b'<?xml version="1.0" encoding="UTF-8"?><tv generator-info-name="t">'
    b'<channel id="one.tv"><display-name>One</display-name></channel>'
    b'<channel id="gone.tv"><display-name>Gone</display-name></channel>'
    b'<programme start="20260101000000 +0000" stop="20260101010000 +0000" channel="one.tv">'
    b"<title>News</title></programme></tv>"
)


def seed(tmp_path: Path) -> str:
    path = tmp_path / "seed.json"
    path.write_text(
        json.dumps(
            [
                {"name": "One", "content_kind": "id", "content_value": CONTENT, "tvg_id": "one.tv"},
                {"name": "Two", "content_kind": "id", "content_value": OTHER, "number": 2},
            ]
        )
    )
    return str(path)


def fast_proxy_env(central_url: str, host: str, **extra: str) -> dict[str, str]:
    return {
        "central_url": central_url,
        "central_api_key": SERVICE_KEY,
        "edge_host": host,
        "proxy_id": f"proxy-{host}",
        "catalog_refresh_s": "0.5",
        "usage_refresh_s": "0.5",
        "snapshot_interval_s": "0.5",
        **extra,
    }


async def until(check: Callable[[], object], within: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.2)


def stream_urls(playlist: str) -> dict[str, str]:
    """content id → the stream URL's path and query (the playlist's URLs name the VIP)."""
    out = {}
    for line in playlist.splitlines():
        if line.startswith(VIP):
            parts = urlsplit(line)
            content = dict(p.split("=", 1) for p in parts.query.split("&"))["id"]
            out[content] = f"{parts.path}?{parts.query}"
    return out


def usage_polls(proxy_url: str) -> float:
    """Answers the proxy has had from central's /v1/players/usage."""
    return sum(
        metric(proxy_url, "acefleet_proxy_catalog_fetches_total", f'result="{r}",what="usage"')
        for r in ("ok", "not_modified")
    )


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5, trust_env=False)


def serves(url: str) -> bool:
    return get(url).status_code == 200


async def test_a_players_limit_holds_across_two_edges(
    sim: procs.Service,
    start_proxy: StartProxy,
    start_central: StartCentral,  # noqa: F811
    tmp_path: Path,
) -> None:
    central = start_central(
        catalog_seed_path=seed(tmp_path),
        player_url=VIP,
        token_keys=KEY,
        tokens_required="true",
    )
    made = await asyncio.to_thread(
        httpx.post,
        f"{central.url}/v1/players",
        json={"name": "tv", "max_streams": 1},
        headers={"X-API-Key": OPERATOR_KEY},
    )
    assert made.status_code == 201, made.text
    secret, player_id = made.json()["secret"], str(made.json()["player"]["id"])
    playlist = get(f"{central.url}/p/{secret}/playlist.m3u")
    assert playlist.status_code == 200, playlist.text
    urls = stream_urls(playlist.text)
    assert set(urls) == {CONTENT, OTHER}
    assert all("token=" in u for u in urls.values())

    engines = endpoint(sim) + "@4"
    token_env = {"tokens_required": "true", "token_keys": KEY}
    a = start_proxy(engines, **fast_proxy_env(central.url, "edgeA", **token_env))
    b = start_proxy(engines, **fast_proxy_env(central.url, "edgeB", **token_env))
    for proxy in (a, b):  # each has the catalog (and the player) once it serves its files
        own_playlist = f"{proxy.url}/p/{secret}/playlist.m3u"
        await until(partial(serves, own_playlist), what="the proxy's catalog copy")

    def usage() -> PlayerUsage:
        r = httpx.get(f"{central.url}/v1/players/usage", headers={"X-API-Key": SERVICE_KEY})
        return PlayerUsage.model_validate_json(r.content)

    first = await request(a.url, urls[CONTENT], within=20)
    assert first.status == 200, bytes(first.body)
    await first.read_until(188 * 10, within=20)
    await until(
        lambda: usage().by_host.get("edgeA", {}).get(player_id) == 1,
        what="central counting the player's stream on edge A",
    )

    # B's next poll of the usage after central counted the stream: from then on B refuses
    polls = usage_polls(b.url)
    await until(lambda: usage_polls(b.url) > polls, what="edge B polling the usage again")
    refused = await request(b.url, urls[OTHER], within=20)
    refused.close()
    assert refused.status == 429, bytes(refused.body)
    assert refused.json()["error"]["code"] == "player_stream_limit"
    assert refused.headers["retry-after"] == "10"
    assert metric(b.url, "acefleet_proxy_token_rejections_total", 'reason="player_stream_limit"')
    started = sim_sessions(sim.url)["sessions_started_total"]

    first.close()  # the one stream ends: A's next snapshot drops it, B's next poll sees that
    await until(lambda: usage().streams.get(player_id, 0) == 0, what="central seeing it end")
    second = None
    deadline = time.monotonic() + 10
    while second is None:
        s = await request(b.url, urls[OTHER], within=20)
        if s.status == 200:
            second = s
        else:
            s.close()
            assert s.status == 429, bytes(s.body)
            assert time.monotonic() < deadline, "B kept refusing after the stream ended"
            await asyncio.sleep(0.3)
    await second.read_until(188 * 10, within=20)
    second.close()
    assert sim_sessions(sim.url)["sessions_started_total"] == started + 1


async def test_player_files_outlive_central(
    start_proxy: StartProxy,
    start_central: StartCentral,  # noqa: F811
    tmp_path: Path,
) -> None:
    central = start_central(catalog_seed_path=seed(tmp_path), player_url=VIP)
    put = await asyncio.to_thread(
        httpx.put,
        f"{central.url}/v1/guide",
        content=GUIDE,
        headers={"content-type": "application/xml", "X-API-Key": OPERATOR_KEY},
    )
    assert put.status_code == 200, put.text
    names = ["playlist.m3u", "epg.xml", "discover.json", "lineup.json", "device.xml"]
    want = {name: get(f"{central.url}/{name}") for name in names}
    assert all(r.status_code == 200 for r in want.values())
    assert b"gone.tv" not in want["epg.xml"].content

    cache = tmp_path / "proxy-cache"
    env = fast_proxy_env(central.url, "edgeA", cache_dir=str(cache))
    proxy = start_proxy(**env)
    await until(
        lambda: get(f"{proxy.url}/epg.xml").content == want["epg.xml"].content,
        what="the proxy serving central's guide",
    )

    def same_as_central(base: str) -> None:
        for name, expected in want.items():
            got = get(f"{base}/{name}")
            assert got.status_code == 200, (name, got.text)
            assert (
                got.headers["content-type"].split(";")[0]
                == expected.headers["content-type"].split(";")[0]
            )
            assert got.content == expected.content, name

    same_as_central(proxy.url)
    central.stop()
    await asyncio.sleep(1.5)  # a few failed polls: the copy stays
    same_as_central(proxy.url)
    assert metric(
        proxy.url, "acefleet_proxy_catalog_fetches_total", 'result="error",what="catalog"'
    )

    # a restarted proxy, central still away: its cache_dir has the copy
    proxy.stop()
    again = start_proxy(**env)
    same_as_central(again.url)
    # a proxy that never saw a catalog says so
    cold = start_proxy(**fast_proxy_env(central.url, "edgeB"))
    r = get(f"{cold.url}/playlist.m3u")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "catalog_unavailable"
    assert r.headers["retry-after"] == "5"


async def test_open_mode_counts_a_players_streams_but_never_limits_them(
    sim: procs.Service,
    start_proxy: StartProxy,
    start_central: StartCentral,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Keys without tokens_required: a player's playlist still carries tokens, the proxy
    counts the player's streams for central's usage, and its max_streams does not apply."""
    central = start_central(catalog_seed_path=seed(tmp_path), player_url=VIP, token_keys=KEY)
    made = await asyncio.to_thread(
        httpx.post,
        f"{central.url}/v1/players",
        json={"name": "tv", "max_streams": 1},
        headers={"X-API-Key": OPERATOR_KEY},
    )
    secret, player_id = made.json()["secret"], str(made.json()["player"]["id"])
    urls = stream_urls(get(f"{central.url}/p/{secret}/playlist.m3u").text)
    proxy = start_proxy(
        endpoint(sim) + "@4", **fast_proxy_env(central.url, "edgeA", token_keys=KEY)
    )
    streams = [await request(proxy.url, urls[c], within=20) for c in (CONTENT, OTHER)]
    assert [s.status for s in streams] == [200, 200]
    plain = await request(proxy.url, f"/ace/getstream?id={CONTENT}", within=20)
    assert plain.status == 200

    def counted() -> bool:
        r = httpx.get(f"{central.url}/v1/players/usage", headers={"X-API-Key": SERVICE_KEY})
        usage = PlayerUsage.model_validate_json(r.content)
        return usage.streams == {player_id: 2} and usage.by_host == {"edgeA": {player_id: 2}}

    await until(counted, what="central counting the player's two streams")
    for s in (*streams, plain):
        s.close()


def get_json_key(url: str) -> dict[str, dict[str, dict[str, int]]]:
    data: dict[str, dict[str, dict[str, int]]] = httpx.get(
        url, headers={"X-API-Key": SERVICE_KEY}, timeout=5
    ).json()
    return data


async def test_a_relay_between_token_mode_edges_carries_an_edge_token(
    sim: procs.Service,
    start_proxy: StartProxy,
    start_central: StartCentral,  # noqa: F811
    tmp_path: Path,
) -> None:
    """B relays a channel live on A (central's relay grant): A is in token mode too, so the
    relay request carries B's edge token (player 0) and plays, counted for nobody on A."""
    central = start_central(
        catalog_seed_path=seed(tmp_path), player_url=VIP, token_keys=KEY, tokens_required="true"
    )
    made = (
        await asyncio.to_thread(
            httpx.post,
            f"{central.url}/v1/players",
            json={"name": "tv"},
            headers={"X-API-Key": OPERATOR_KEY},
        )
    ).json()
    urls = stream_urls(get(f"{central.url}/p/{made['secret']}/playlist.m3u").text)
    engines = endpoint(sim) + "@4"
    token_env = {"tokens_required": "true", "token_keys": KEY}
    a = start_proxy(engines, **fast_proxy_env(central.url, "edgeA", **token_env))
    b = start_proxy(engines, **fast_proxy_env(central.url, "edgeB", **token_env))
    for proxy in (a, b):
        await until(partial(serves, f"{proxy.url}/p/{made['secret']}/playlist.m3u"))
    first = await request(a.url, urls[CONTENT], within=20)
    assert first.status == 200
    await first.read_until(188 * 10, within=20)
    player_id = str(made["player"]["id"])

    def counted_on_a() -> bool:
        usage = get_json_key(f"{central.url}/v1/players/usage")
        return bool(usage["by_host"].get("edgeA", {}).get(player_id))

    await until(counted_on_a, what="central knowing the stream is live on A")
    second = await request(b.url, urls[CONTENT], within=30)
    assert second.status == 200, bytes(second.body)
    await second.read_until(188 * 100, within=20)
    (channel,) = get_json(f"{b.url}/ace/status")["channels"]
    assert channel["source"] == "relay"
    assert "token=" not in channel["upstream"]  # the edge token is a credential: never shown
    assert get_json(f"{a.url}/ace/status")["channels"][0]["viewers"] == 2
    first.close()
    second.close()
