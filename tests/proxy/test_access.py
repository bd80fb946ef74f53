"""The token rule on a real proxy in front of the simulator (tokens signed with
``acefleet.tokens.sign``, as central signs them): a valid token plays; expired, forged, another
channel's or another player's are refused with the documented status, code and JSON and never
reach an engine; brute force gets 429s; open mode is unchanged; the ``token`` parameter never
reaches an engine; HLS sessions carry their token on. The player rules (disabled, groups, the
per-player limit) read a catalog copy the proxy loads from its ``cache_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import m3u8
import pytest

from acefleet.catalog_wire import CatalogChannel, EdgeCatalog, EdgePlayer
from acefleet.tokens import TokenKeys, secret_sha256, sign
from proxy.access import edge_token
from proxy.catalog_cache import CATALOG_FILE
from tests.proxy.client import metric, request, sim_sessions
from tests.proxy.conftest import StartProxy, endpoint
from tests.support import procs

CONTENT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"
KIDS = "abcdef0123456789abcdef0123456789abcdef01"
KEY = "k1:0123456789abcdef-secret"
KEYS = TokenKeys.parse([KEY])
assert KEYS is not None
_REQUEST = re.compile(rb"(?:^|\r\n)(?:GET|HEAD) (\S+) HTTP/1\.1\r\n")
TOKEN_ENV = {"tokens_required": "true", "token_keys": KEY}


def token(player: int, content: str = CONTENT, ttl_s: int = 3600, keys: TokenKeys = KEYS) -> str:
    return sign(keys, player, f"id:{content}", int(time.time()) + ttl_s)


def flipped(sig: str) -> str:
    """``sig`` with its first character changed (never the same string, unlike a fixed suffix:
    1 signature in 256 ends with "AA")."""
    return ("B" if sig[0] == "A" else "A") + sig[1:]


def stream_url(content: str, tok: str | None = None) -> str:
    query = {"id": content, **({"token": tok} if tok is not None else {})}
    return f"/ace/getstream?{urllib.parse.urlencode(query)}"


class Recorder:
    """A plain TCP relay in front of the simulator that remembers every request target the
    proxy sent to the engine (so a test can see what the engine was asked)."""

    def __init__(self, sim: procs.Service) -> None:
        self.sim = sim
        self.targets: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, requests: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if requests:  # keep-alive: later requests on the connection (they are small)
                    self.targets += [t.decode() for t in _REQUEST.findall(data)]
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.sim.port)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False)
            )

    async def __aenter__(self) -> Recorder:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    def engine_queries(self) -> list[dict[str, list[str]]]:
        return [
            urllib.parse.parse_qs(urllib.parse.urlsplit(t).query)
            for t in self.targets
            if t.startswith("/ace/getstream")
        ]


@pytest.fixture
async def recorder(sim: procs.Service) -> AsyncIterator[Recorder]:
    async with Recorder(sim) as rec:
        yield rec


def seed_catalog(cache_dir: Path, players: list[EdgePlayer]) -> Path:
    """What a proxy finds in ``cache_dir`` after it once polled central."""
    catalog = EdgeCatalog(
        version="v1",
        player_url="http://127.0.0.1:1",
        tokens_required=True,
        tuner_count=2,
        channels=[
            CatalogChannel(id=1, name="One", content_kind="id", content_value=CONTENT),
            CatalogChannel(id=2, name="Two", content_kind="id", content_value=OTHER),
            CatalogChannel(id=3, name="Kids", content_kind="id", content_value=KIDS, group="kids"),
        ],
        players=players,
        guide_version="",
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / CATALOG_FILE).write_text(catalog.model_dump_json())
    return cache_dir


def player(pid: int, **fields: object) -> EdgePlayer:
    base: dict[str, object] = {
        "id": pid,
        "name": f"p{pid}",
        "groups": [],
        "max_streams": 0,
        "enabled": True,
        "secret_sha256": secret_sha256(f"secret-{pid}"),
    }
    return EdgePlayer.model_validate({**base, **fields})


async def plays(proxy_url: str, target: str) -> bool:
    s = await request(proxy_url, target, within=20)
    try:
        if s.status != 200:
            return False
        await s.read_until(188 * 100, within=20)
        return True
    finally:
        s.close()


async def refused(proxy_url: str, target: str, status: int, code: str) -> dict[str, object]:
    s = await request(proxy_url, target)
    s.close()
    assert s.status == status, (target, s.status, bytes(s.body))
    assert s.headers["content-type"] == "application/json"
    error: dict[str, object] = s.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    if status == 401:
        assert "www-authenticate" in s.headers
    return error


async def test_valid_token_plays_and_never_reaches_the_engine(
    recorder: Recorder, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(recorder.endpoint, **TOKEN_ENV)
    assert await plays(proxy.url, stream_url(CONTENT, token(7)))
    starts = recorder.engine_queries()
    assert len(starts) == 1
    assert starts[0]["id"] == [CONTENT]
    assert "token" not in starts[0], "the token is the proxy's, never the engine's"
    assert metric(proxy.url, "acefleet_proxy_token_rejections_total", 'reason="missing"') == 0


async def test_bad_tokens_are_refused_before_any_engine(
    sim: procs.Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(sim), token_failures_per_min="1000", **TOKEN_ENV)
    good = token(7)
    kid, pid, expires, sig = good.split(".")
    other_keys = TokenKeys.parse(["k1:another-secret-of-16+"])
    assert other_keys is not None
    cases = [
        (None, 401, "token_required", "missing"),
        ("", 401, "token_required", "missing"),
        (token(7, ttl_s=-5), 401, "token_expired", "expired"),
        ("not-a-token", 403, "token_invalid", "malformed"),
        (f"k9.{pid}.{expires}.{sig}", 403, "token_invalid", "unknown_key"),
        (token(7, keys=other_keys), 403, "token_invalid", "bad_signature"),  # forged
        (f"{kid}.{pid}.{expires}.{flipped(sig)}", 403, "token_invalid", "bad_signature"),
        (f"{kid}.8.{expires}.{sig}", 403, "token_invalid", "bad_signature"),  # other player's
        (f"{kid}.{pid}.{int(expires) + 3600}.{sig}", 403, "token_invalid", "bad_signature"),
        (token(7, OTHER), 403, "token_invalid", "bad_signature"),  # another channel's
    ]
    for tok, status, code, reason in cases:
        before = metric(proxy.url, "acefleet_proxy_token_rejections_total", f'reason="{reason}"')
        await refused(proxy.url, stream_url(CONTENT, tok), status, code)
        after = metric(proxy.url, "acefleet_proxy_token_rejections_total", f'reason="{reason}"')
        assert after == before + 1, reason
    # the same rule for HLS: a manifest without a token starts nothing either
    await refused(proxy.url, f"/ace/manifest.m3u8?id={CONTENT}", 401, "token_required")
    await refused(
        proxy.url, f"/ace/manifest.m3u8?id={CONTENT}&token={token(7, OTHER)}", 403, "token_invalid"
    )
    assert sim_sessions(sim.url)["sessions_started_total"] == 0
    assert sim_sessions(sim.url)["sessions"] == []
    status = (await request(proxy.url, "/ace/status")).json()
    assert status["upstreams"] == 0


async def test_brute_force_gets_429_with_retry_after(
    sim: procs.Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(sim), token_failures_per_min="5", **TOKEN_ENV)
    for n in range(5):
        await refused(
            proxy.url, stream_url(CONTENT, f"k1.7.99999999999.guess{n}"), 403, "token_invalid"
        )
    error = await refused(
        proxy.url, stream_url(CONTENT, "k1.7.99999999999.guess"), 429, "too_many_token_failures"
    )
    assert isinstance(error["retry_after_s"], (int, float))
    assert error["retry_after_s"] > 0
    s = await request(proxy.url, stream_url(CONTENT, "k1.7.99999999999.again"))
    s.close()
    assert s.status == 429
    assert int(s.headers["retry-after"]) >= 1
    # while it is blocked, even a right guess does not get through (nothing learnt from timing)
    s = await request(proxy.url, stream_url(CONTENT, token(7)))
    s.close()
    assert s.status == 429
    assert (
        metric(proxy.url, "acefleet_proxy_token_rejections_total", 'reason="too_many_failures"')
        >= 3
    )
    assert sim_sessions(sim.url)["sessions_started_total"] == 0


async def test_open_mode_ignores_tokens_and_keeps_them_from_the_engine(
    recorder: Recorder, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(recorder.endpoint + "@4")
    assert await plays(proxy.url, stream_url(CONTENT))
    assert await plays(proxy.url, stream_url(OTHER, "whatever-a-playlist-carried"))
    starts = recorder.engine_queries()
    assert len(starts) == 2
    assert all("token" not in q for q in starts)


async def test_player_rules_from_the_catalog_copy(
    sim: procs.Service, start_proxy: StartProxy, tmp_path: Path
) -> None:
    cache = seed_catalog(
        tmp_path / "cache",
        [
            player(1, max_streams=1),
            player(2, enabled=False),
            player(3, groups=["kids"]),
        ],
    )
    proxy = start_proxy(endpoint(sim) + "@4", cache_dir=str(cache), **TOKEN_ENV)
    await refused(proxy.url, stream_url(CONTENT, token(2)), 403, "player_disabled")
    await refused(proxy.url, stream_url(CONTENT, token(9)), 403, "player_disabled")  # unknown
    await refused(proxy.url, stream_url(CONTENT, token(3)), 403, "channel_not_allowed")
    assert sim_sessions(sim.url)["sessions_started_total"] == 0
    assert await plays(proxy.url, stream_url(KIDS, token(3, KIDS)))

    # player 1 may watch one stream at a time: a second is refused, on any channel
    first = await request(proxy.url, stream_url(CONTENT, token(1)), within=20)
    assert first.status == 200
    await first.read_until(188 * 10, within=20)
    error = await refused(proxy.url, stream_url(OTHER, token(1, OTHER)), 429, "player_stream_limit")
    assert error["retry_after_s"] == 10
    assert (
        metric(proxy.url, "acefleet_proxy_token_rejections_total", 'reason="player_stream_limit"')
        == 1
    )
    first.close()

    async def second_plays() -> bool:
        return await plays(proxy.url, stream_url(OTHER, token(1, OTHER)))

    deadline = time.monotonic() + 10
    while not await second_plays():
        assert time.monotonic() < deadline, "the limit was not freed when the stream ended"
        await asyncio.sleep(0.2)


async def test_catalog_unavailable_when_central_was_never_reached(
    sim: procs.Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(
        endpoint(sim), central_url=f"http://127.0.0.1:{procs.free_port()}", **TOKEN_ENV
    )
    error = await refused(proxy.url, stream_url(CONTENT, token(1)), 503, "catalog_unavailable")
    assert error["retry_after_s"] == 5
    assert sim_sessions(sim.url)["sessions_started_total"] == 0


# --- HLS ------------------------------------------------------------------------------------


@pytest.mark.ffmpeg
async def test_hls_session_carries_its_token(
    clip_sim: procs.Service, start_proxy: StartProxy, tmp_path: Path
) -> None:
    cache = seed_catalog(tmp_path / "cache", [player(1, max_streams=1)])
    proxy = start_proxy(
        endpoint(clip_sim), cache_dir=str(cache), hls_session_idle_s="5", **TOKEN_ENV
    )
    tok = token(1)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=90, trust_env=False) as c:
        master = await c.get(f"/ace/manifest.m3u8?id={CONTENT}&token={tok}")
        assert master.status_code == 200, master.text
        uri = m3u8.loads(master.text).playlists[0].uri
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
        assert query == {"id": [CONTENT], "token": [tok]}
        media_url = urljoin(str(master.url), uri)
        media = await c.get(media_url)
        assert media.status_code == 200, media.text
        segment = m3u8.loads(media.text).segments[0]
        seg = await c.get(urljoin(media_url, segment.uri))
        assert seg.status_code == 200
        assert seg.headers["content-type"] == "video/mp2t"
        # the session is the capability: its playlist needs no token per request
        sid_url = media_url.split("?")[0] + f"?id={CONTENT}"
        assert (await c.get(sid_url)).status_code == 200

        # the HLS player is player 1's one stream: a TS stream on top is refused
        await refused(proxy.url, stream_url(OTHER, token(1, OTHER)), 429, "player_stream_limit")

        # an unknown sid (a restarted proxy) is a new session: checked like a new viewer
        gone = "A" * 22
        no_token = await c.get(f"/ace/hls/{gone}/index.m3u8?id={CONTENT}")
        assert no_token.status_code == 401
        assert no_token.json()["error"]["code"] == "token_required"
        assert no_token.headers["access-control-allow-origin"] == "*"
        limited = await c.get(f"/ace/hls/{gone}/index.m3u8?id={CONTENT}&token={tok}")
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "player_stream_limit"

    # once the player stops fetching, its session idles out and the token starts one again
    status = (await request(proxy.url, "/ace/status")).json()
    assert status["hls_viewers"] == 1
    async with httpx.AsyncClient(base_url=proxy.url, timeout=90, trust_env=False) as c:

        async def recreated() -> bool:
            r = await c.get(f"/ace/hls/{'B' * 22}/index.m3u8?id={CONTENT}&token={tok}")
            return r.status_code == 200

        deadline = time.monotonic() + 60
        while not await recreated():
            assert time.monotonic() < deadline
            await asyncio.sleep(1)


async def test_an_edge_token_relays_without_a_player(
    sim: procs.Service, start_proxy: StartProxy, tmp_path: Path
) -> None:
    """Player 0 is an edge relaying a channel: no player rules, no limit, but still signed."""
    cache = seed_catalog(tmp_path / "cache", [player(1)])
    proxy = start_proxy(endpoint(sim) + "@4", cache_dir=str(cache), **TOKEN_ENV)
    assert await plays(
        proxy.url, stream_url(CONTENT, edge_token(KEYS, f"id:{CONTENT}", time.time()))
    )
    await refused(
        proxy.url,
        stream_url(OTHER, edge_token(KEYS, f"id:{CONTENT}", time.time())),
        403,
        "token_invalid",
    )


async def test_player_files_from_the_catalog_copy_in_token_mode(
    sim: procs.Service, start_proxy: StartProxy, tmp_path: Path
) -> None:
    cache = seed_catalog(tmp_path / "cache", [player(1), player(2, enabled=False)])
    proxy = start_proxy(
        endpoint(sim) + "@4", cache_dir=str(cache), token_failures_per_min="3", **TOKEN_ENV
    )
    await refused(proxy.url, "/playlist.m3u", 401, "player_url_required")
    await refused(proxy.url, "/p/secret-2/playlist.m3u", 403, "player_disabled")
    s = await request(proxy.url, "/p/secret-1/playlist.m3u?format=hls")
    assert s.status == 200
    assert s.headers["content-type"] == "audio/x-mpegurl"
    lines = bytes(s.body).decode().splitlines()
    assert lines[0].startswith('#EXTM3U url-tvg="http://127.0.0.1:1/p/secret-1/epg.xml"')
    urls = [line for line in lines if line.startswith("http")]
    assert len(urls) == 3
    assert all("/ace/manifest.m3u8?id=" in u and "&token=" in u for u in urls)
    # the proxy signed them with the fleet's keys: they play here (as TS too)
    ts = urls[0].replace("http://127.0.0.1:1/ace/manifest.m3u8", "/ace/getstream")
    assert await plays(proxy.url, ts)
    # guessing secrets: 404 each, then the address is out of its failure budget
    for n in range(3):
        await refused(proxy.url, f"/p/guess-{n}/playlist.m3u", 404, "player_unknown")
    error = await refused(proxy.url, "/p/secret-1/playlist.m3u", 429, "rate_limited")
    assert error["retry_after_s"]
