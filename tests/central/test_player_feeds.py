"""The files players read, as central serves them: M3U (read back with ``ipytv``, an IPTV
playlist parser from PyPI nobody here wrote), the XMLTV guide (validated with lxml against the
XMLTV DTD Debian ships), the HDHomeRun emulation media servers add as a tuner, per-player
secret URLs with stream tokens, and the per-address rate limit that guards them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from ipytv import playlist as m3u  # type: ignore[import-untyped]
from lxml import etree  # type: ignore[import-untyped]

from acefleet import player_feeds as feeds
from acefleet.catalog_wire import CatalogChannel, EdgeCatalog, EdgePlayer
from acefleet.tokens import TokenError, TokenKeys, secret_sha256, verify
from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, Agent
from tests.support.tools import missing

VIP = "http://10.0.0.100"
KEYS = "k1:first-test-signing-key-0001"
XMLTV_DTD = Path("/usr/share/sgml/xmltv/dtd/0.5/xmltv.dtd")
XMLTV_PACKAGE = "libxmltv-perl"
NEWS = "a" * 40
SPORT = "b" * 40
MOVIES = "c" * 40
OFF = "d" * 40
CHANNELS: list[dict[str, Any]] = [
    # Out of order on purpose: players see numbered channels by number, then the rest by name.
    {
        "name": "Sport Two",
        "content_kind": "infohash",
        "content_value": SPORT,
        "group": "Sport",
        "logo": "https://logos.example/sport.png",
        "tvg_id": "sport.tv",
        "number": 7,
    },
    {
        "name": 'News "24", live',
        "content_kind": "id",
        "content_value": NEWS,
        "group": "News",
        "logo": "https://logos.example/news.png",
        "tvg_id": "news.tv",
        "number": 3,
    },
    {
        "name": "Movies",
        "content_kind": "id",
        "content_value": MOVIES,
        "group": "Movies",
        "logo": "",
        "tvg_id": "movies.tv",
    },
    {
        "name": "Switched off",
        "content_kind": "id",
        "content_value": OFF,
        "group": "News",
        "tvg_id": "off.tv",
        "number": 1,
        "enabled": False,
    },
]
GUIDE_IDS = ("news.tv", "sport.tv", "movies.tv", "off.tv", "elsewhere.tv")


def guide_xml() -> bytes:
    tv = etree.Element("tv", {"source-info-name": "tests", "generator-info-name": "tests"})
    for tvg_id in GUIDE_IDS:
        channel = etree.SubElement(tv, "channel", id=tvg_id)
        etree.SubElement(channel, "display-name", lang="en").text = tvg_id
    for hour in range(3):
        for tvg_id in GUIDE_IDS:
            start = f"2026120{1}{10 + hour:02d}0000 +0000"
            stop = f"2026120{1}{11 + hour:02d}0000 +0000"
            programme = etree.SubElement(tv, "programme", start=start, stop=stop, channel=tvg_id)
            etree.SubElement(programme, "title", lang="en").text = f"{tvg_id} at {hour}"
    body: bytes = etree.tostring(tv, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return body


def start_fleet(start_central: StartCentral, tmp_path: Path, **overrides: str) -> Running:
    seed = tmp_path / "channels.json"
    seed.write_text(json.dumps(CHANNELS))
    guide = tmp_path / "guide.xml"
    guide.write_bytes(guide_xml())
    # A high rate limit by default: only the test of the limit itself meets it.
    settings = {"public_rate_limit_rps": "1000", **overrides}
    return start_central(
        catalog_seed_path=str(seed), guide_path=str(guide), player_url=VIP, **settings
    )


@pytest.fixture
def open_fleet(start_central: StartCentral, tmp_path: Path) -> Running:
    return start_fleet(start_central, tmp_path, token_keys=KEYS)


@pytest.fixture
def token_fleet(start_central: StartCentral, tmp_path: Path) -> Running:
    return start_fleet(start_central, tmp_path, token_keys=KEYS, tokens_required="true")


def clients(svc: Running) -> tuple[httpx.Client, httpx.Client]:
    public = httpx.Client(base_url=svc.url, timeout=10)
    operator = httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}, timeout=10)
    return public, operator


@pytest.fixture
def public(open_fleet: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_fleet.url, timeout=10) as c:
        yield c


def add_player(operator: httpx.Client, **fields: Any) -> dict[str, Any]:
    r = operator.post("/v1/players", json={"name": "living room", **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def parse_playlist(text: str) -> Any:
    assert text.startswith("#EXTM3U")
    return m3u.loads(text)


def stream_query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# --- M3U ------------------------------------------------------------------------------------


def test_open_playlist_lists_enabled_channels_with_every_attribute(public: httpx.Client) -> None:
    r = public.get("/playlist.m3u")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("audio/x-mpegurl")
    pl = parse_playlist(r.text)
    assert pl.get_attributes() == {"url-tvg": f"{VIP}/epg.xml", "x-tvg-url": f"{VIP}/epg.xml"}
    got = [(c.name, c.url, c.attributes, c.duration) for c in pl.get_channels()]
    assert got == [
        (
            "News '24' live",
            f"{VIP}/ace/getstream?id={NEWS}",
            {
                "tvg-id": "news.tv",
                "tvg-name": "News '24', live",
                "tvg-logo": "https://logos.example/news.png",
                "group-title": "News",
                "tvg-chno": "3",
            },
            "-1",
        ),
        (
            "Sport Two",
            f"{VIP}/ace/getstream?infohash={SPORT}",
            {
                "tvg-id": "sport.tv",
                "tvg-name": "Sport Two",
                "tvg-logo": "https://logos.example/sport.png",
                "group-title": "Sport",
                "tvg-chno": "7",
            },
            "-1",
        ),
        (
            "Movies",
            f"{VIP}/ace/getstream?id={MOVIES}",
            {"tvg-id": "movies.tv", "tvg-name": "Movies", "tvg-logo": "", "group-title": "Movies"},
            "-1",
        ),
    ]


def test_format_hls_lists_master_playlists_with_the_same_selectors(public: httpx.Client) -> None:
    pl = parse_playlist(public.get("/playlist.m3u", params={"format": "hls"}).text)
    assert [c.url for c in pl.get_channels()] == [
        f"{VIP}/ace/manifest.m3u8?id={NEWS}",
        f"{VIP}/ace/manifest.m3u8?infohash={SPORT}",
        f"{VIP}/ace/manifest.m3u8?id={MOVIES}",
    ]
    r = public.get("/playlist.m3u", params={"format": "mp4"})
    assert r.status_code == 422
    assert r.json()["error"]["code"]


def test_a_player_sees_its_groups_with_tokens_for_itself_and_each_channel(
    open_fleet: Running,
) -> None:
    public, operator = clients(open_fleet)
    made = add_player(operator, groups=["News", "Movies"], max_streams=3)
    secret = made["secret"]
    pid = made["player"]["id"]
    assert made["playlist_url"] == f"{VIP}/p/{secret}/playlist.m3u"
    assert made["guide_url"] == f"{VIP}/p/{secret}/epg.xml"
    assert made["hdhomerun_url"] == f"{VIP}/p/{secret}"
    before = time.time()
    r = public.get(f"/p/{secret}/playlist.m3u")
    assert r.status_code == 200, r.text
    pl = parse_playlist(r.text)
    guide = f"{VIP}/p/{secret}/epg.xml"
    assert pl.get_attributes() == {"url-tvg": guide, "x-tvg-url": guide}
    channels = pl.get_channels()
    assert [c.attributes["group-title"] for c in channels] == ["News", "Movies"]
    keys = TokenKeys.parse([KEYS])
    assert keys is not None
    for channel, key in zip(channels, (f"id:{NEWS}", f"id:{MOVIES}"), strict=True):
        query = stream_query(channel.url)
        token = query.pop("token")
        assert query == {"id": key.removeprefix("id:")}
        assert verify(keys, token, key, time.time()) == pid
        expires = int(token.split(".")[2])
        assert expires % 3600 == 0
        assert expires >= before + 7 * 86400
        with pytest.raises(TokenError) as other:
            verify(keys, token, f"infohash:{SPORT}", time.time())
        assert other.value.reason == "bad_signature"
    # Within the hour the playlist is the same bytes (media servers and caches keep it).
    assert public.get(f"/p/{secret}/playlist.m3u").text == r.text


def test_attribute_values_cannot_break_out_of_their_quotes_or_line() -> None:
    catalog = EdgeCatalog(
        version="v",
        player_url=VIP,
        tokens_required=False,
        tuner_count=1,
        channels=[
            CatalogChannel(
                id=1,
                name='Evil" tvg-id="x\n#EXTINF:-1,injected',
                content_kind="id",
                content_value=NEWS,
                group='G"\r\nhttp://evil/',
                tvg_id='t"id',
            )
        ],
        players=[],
        guide_version="",
    )
    req = feeds.Request(name=feeds.PLAYLIST, secret=None, files_base=VIP, stream_base=VIP)
    pl = parse_playlist(feeds.playlist(catalog, None, req, None, time.time()))
    (channel,) = pl.get_channels()
    assert channel.attributes == {
        "tvg-id": "t'id",
        "tvg-name": "Evil' tvg-id='x #EXTINF:-1,injected",
        "tvg-logo": "",
        "group-title": "G' http://evil/",
    }
    assert channel.url == f"{VIP}/ace/getstream?id={NEWS}"


# --- token mode, players, errors ---------------------------------------------------------------


def test_token_mode_root_files_need_a_player_url(token_fleet: Running) -> None:
    public, operator = clients(token_fleet)
    for name in ("playlist.m3u", "lineup.json", "discover.json", "device.xml"):
        r = public.get(f"/{name}")
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"]["code"] == "player_url_required"
    assert public.get("/epg.xml").status_code == 200
    made = add_player(operator)
    secret = made["secret"]
    keys = TokenKeys.parse([KEYS])
    assert keys is not None
    for fmt in ("ts", "hls"):
        pl = parse_playlist(public.get(f"/p/{secret}/playlist.m3u", params={"format": fmt}).text)
        expected = [f"id:{NEWS}", f"infohash:{SPORT}", f"id:{MOVIES}"]
        for channel, key in zip(pl.get_channels(), expected, strict=True):
            kind, value = key.split(":")
            query = stream_query(channel.url)
            assert verify(keys, query.pop("token"), key, time.time()) == made["player"]["id"]
            assert query == {kind: value}
        assert len(pl.get_channels()) == 3


def test_unknown_secret_404_disabled_player_403_rotated_secret_404(open_fleet: Running) -> None:
    public, operator = clients(open_fleet)
    made = add_player(operator, groups=["Sport"])
    secret, pid = made["secret"], made["player"]["id"]
    assert len(secret) >= 32
    assert secret_sha256(secret) != secret
    r = public.get(f"/p/{'x' * 43}/playlist.m3u")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "player_unknown"
    fields = {"name": "living room", "groups": ["Sport"], "max_streams": 2, "enabled": False}
    assert operator.put(f"/v1/players/{pid}", json=fields).status_code == 200
    r = public.get(f"/p/{secret}/lineup.json")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "player_disabled"
    fields["enabled"] = True
    assert operator.put(f"/v1/players/{pid}", json=fields).status_code == 200
    assert public.get(f"/p/{secret}/lineup.json").status_code == 200
    rotated = operator.post(f"/v1/players/{pid}/secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != secret
    assert public.get(f"/p/{secret}/playlist.m3u").status_code == 404
    assert public.get(f"/p/{new}/playlist.m3u").status_code == 200
    assert public.get(f"/p/{new}/nothing.txt").status_code == 404


def test_guessing_secrets_is_rate_limited_per_address(
    start_central: StartCentral, tmp_path: Path
) -> None:
    svc = start_fleet(start_central, tmp_path, public_rate_limit_rps="1")
    public, _ = clients(svc)
    # Burst 2 at 1 rps; a failed lookup costs double, so the second guess is already refused.
    codes = [public.get(f"/p/guess{n:040d}/playlist.m3u").status_code for n in range(3)]
    assert codes[0] == 404
    assert 429 in codes
    r = public.get("/playlist.m3u")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["retry_after_s"] >= 1


def test_behind_a_trusted_balancer_the_limit_is_per_player_address(
    start_central: StartCentral, tmp_path: Path
) -> None:
    """Through the VIP every request comes from HAProxy: X-Forwarded-For from a trusted peer
    names the player, so one greedy player does not lock every other one out."""
    svc = start_fleet(
        start_central, tmp_path, public_rate_limit_rps="1", trusted_proxies="127.0.0.1"
    )
    public, _ = clients(svc)
    greedy = {"X-Forwarded-For": "10.9.9.9, 192.0.2.1"}  # the last hop is the balancer's word
    codes = [public.get("/playlist.m3u", headers=greedy).status_code for _ in range(4)]
    assert 429 in codes
    other = public.get("/playlist.m3u", headers={"X-Forwarded-For": "192.0.2.2"})
    assert other.status_code == 200
    # the client's own earlier hops are not trusted: same last hop, same bucket
    spoofed = public.get("/playlist.m3u", headers={"X-Forwarded-For": "1.2.3.4, 192.0.2.1"})
    assert spoofed.status_code == 429


# --- XMLTV ---------------------------------------------------------------------------------


def xmltv_dtd() -> etree.DTD:
    if not XMLTV_DTD.is_file():
        pytest.fail(missing(f"the XMLTV DTD ({XMLTV_DTD})", XMLTV_PACKAGE), pytrace=False)
    return etree.DTD(str(XMLTV_DTD))


def valid_guide(body: bytes) -> etree._Element:
    doc = etree.fromstring(body, etree.XMLParser(load_dtd=False, no_network=True))
    dtd = xmltv_dtd()
    assert dtd.validate(doc), dtd.error_log.filter_from_errors()
    return doc


def test_guide_is_xmltv_and_holds_only_the_listed_channels(open_fleet: Running) -> None:
    public, operator = clients(open_fleet)
    r = public.get("/epg.xml")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    doc = valid_guide(r.content)
    assert doc.get("source-info-name") == "tests"
    ids = {"news.tv", "sport.tv", "movies.tv"}
    assert {c.get("id") for c in doc.iter("channel")} == ids
    assert {p.get("channel") for p in doc.iter("programme")} == ids
    assert len(doc.findall("programme")) == 9
    secret = add_player(operator, groups=["Sport"])["secret"]
    mine = valid_guide(public.get(f"/p/{secret}/epg.xml").content)
    assert [c.get("id") for c in mine.iter("channel")] == ["sport.tv"]
    assert {p.get("channel") for p in mine.iter("programme")} == {"sport.tv"}


def test_no_guide_is_an_empty_valid_guide() -> None:
    valid_guide(feeds.filter_guide(None, {"news.tv"}))
    valid_guide(feeds.filter_guide(b"<not-tv/>", {"news.tv"}))


# --- HDHomeRun -------------------------------------------------------------------------------


def test_hdhomerun_files_have_what_media_servers_read(
    start_central: StartCentral, tmp_path: Path
) -> None:
    svc = start_fleet(start_central, tmp_path, token_keys=KEYS, hdhomerun_max_tuners="4")
    public, operator = clients(svc)
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        # No engines yet: a tuner is still announced (media servers refuse a 0-tuner device).
        assert public.get("/discover.json").json()["TunerCount"] == 1
        Agent("edge1", engines=3, cap=2).beat(service)  # 6 free slots, more than the bound
        root = public.get("/discover.json").json()
    assert root == {
        "FriendlyName": "acefleet",
        "Manufacturer": "Silicondust",
        "ModelNumber": "HDTC-2US",
        "FirmwareName": "hdhomeruntc_atsc",
        "FirmwareVersion": root["FirmwareVersion"],
        "DeviceID": root["DeviceID"],
        "DeviceAuth": root["DeviceAuth"],
        "BaseURL": VIP,
        "LineupURL": f"{VIP}/lineup.json",
        "TunerCount": 4,
    }
    assert len(root["DeviceID"]) == 8
    assert int(root["DeviceID"], 16) >= 0
    assert root["FirmwareVersion"]
    assert root["DeviceAuth"]
    assert public.get("/lineup_status.json").json() == {
        "ScanInProgress": 0,
        "ScanPossible": 1,
        "Source": "Cable",
        "SourceList": ["Cable"],
    }
    tv = f"{VIP}/ace/getstream"
    assert public.get("/lineup.json").json() == [
        {"GuideNumber": "3", "GuideName": CHANNELS[1]["name"], "URL": f"{tv}?id={NEWS}", "HD": 1},
        {"GuideNumber": "7", "GuideName": "Sport Two", "URL": f"{tv}?infohash={SPORT}", "HD": 1},
        {"GuideNumber": "8", "GuideName": "Movies", "URL": f"{tv}?id={MOVIES}", "HD": 1},
    ]
    made = add_player(operator, name="plex", max_streams=2, groups=["Sport"])
    base = f"{VIP}/p/{made['secret']}"
    mine = public.get(f"/p/{made['secret']}/discover.json").json()
    assert mine["TunerCount"] == 2  # the player's own limit bounds the fleet's count
    assert mine["BaseURL"] == base
    assert mine["LineupURL"] == f"{base}/lineup.json"
    assert mine["DeviceID"] != root["DeviceID"]
    assert public.get(f"/p/{made['secret']}/discover.json").json() == mine  # stable
    (entry,) = public.get(f"/p/{made['secret']}/lineup.json").json()
    assert entry["GuideName"] == "Sport Two"
    assert "token" in stream_query(entry["URL"])
    device = etree.fromstring(public.get(f"/p/{made['secret']}/device.xml").content)
    ns = {"u": "urn:schemas-upnp-org:device-1-0"}
    assert device.findtext("u:URLBase", namespaces=ns) == base
    assert device.findtext("u:device/u:modelNumber", namespaces=ns) == "HDTC-2US"
    assert device.findtext("u:device/u:manufacturer", namespaces=ns) == "Silicondust"
    assert device.findtext("u:device/u:UDN", namespaces=ns).startswith("uuid:")


def test_tuner_count_is_bounded_by_the_player_limit_only_when_it_has_one() -> None:
    player = EdgePlayer(id=1, name="p", max_streams=0, secret_sha256="0" * 64)
    catalog = EdgeCatalog(
        version="v",
        player_url=VIP,
        tokens_required=False,
        tuner_count=5,
        channels=[],
        players=[player],
        guide_version="",
    )
    assert feeds.tuner_count(catalog, player) == 5
    assert feeds.tuner_count(catalog, player.model_copy(update={"max_streams": 9})) == 5
    assert feeds.tuner_count(catalog, player.model_copy(update={"max_streams": 2})) == 2


def test_an_edge_renders_the_same_bytes_from_what_it_polls(open_fleet: Running) -> None:
    """The proxies serve the player files from /v1/edge/catalog and /v1/edge/guide with the same
    module: what they render is what central serves, byte for byte."""
    public, operator = clients(open_fleet)
    secret = add_player(operator, groups=["Sport", "Movies"], max_streams=1)["secret"]
    keys = TokenKeys.parse([KEYS])
    with httpx.Client(base_url=open_fleet.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        catalog = EdgeCatalog.model_validate_json(service.get("/v1/edge/catalog").content)
        guide = service.get("/v1/edge/guide").content
    cache = feeds.GuideCache()
    index = feeds.players_by_hash(catalog)
    for prefix, who in (("", None), (f"/p/{secret}", secret)):
        for name in feeds.FILES:
            for fmt in ("ts", "hls"):
                before = time.time()
                served = public.get(f"{prefix}/{name}", params={"format": fmt})
                after = time.time()
                assert served.status_code == 200, served.text
                player = feeds.resolve(catalog, index, who, name)
                req = feeds.Request(
                    name=name,
                    secret=who,
                    files_base=f"{catalog.player_url}{prefix}",
                    stream_base=catalog.player_url,
                    hls=fmt == "hls",
                )
                # Tokens round their expiry to the hour: an hour may turn during the request.
                rendered = {
                    feeds.render(
                        catalog, player, req, keys=keys, now=now, guide=cache, guide_xml=guide
                    ).body
                    for now in (before, after)
                }
                assert served.content in rendered, (prefix, name, fmt)
