"""``acefleet channels``, ``guide`` and ``players`` against a real central: imports (good, bad,
dry run, JSON), the export round trip, enable/disable/rm, the guide, and players whose secret
URLs are fetched from central as a player would."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import structlog

from acefleet.wire import LiveStream
from proxy.catalog_cache import CatalogCache
from proxy.control.peer import ControlPeer
from proxy.metrics import Metrics
from proxy.settings import ProxySettings
from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, VIEWER_KEY, snapshot
from tests.cli.conftest import Cli, service_client

A, B, C = "a" * 40, "b" * 40, "c" * 40
PLAYLIST = f"""#EXTM3U
#EXTINF:-1 tvg-id="news.one" tvg-name="News One" group-title="News" tvg-chno="101",News One HD
acestream://{A}
#EXTINF:-1 group-title="Sport" tvg-chno="102",Sport
http://10.0.0.100/ace/getstream?id={B}
#EXTINF:-1 tvg-id="kids.tv",Kids
https://vip.example/ace/manifest.m3u8?infohash={C}
"""
GUIDE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<tv>'
    '<channel id="news.one"><display-name>News One</display-name></channel>'
    '<channel id="other.tv"><display-name>Other</display-name></channel>'
    '<programme start="20261201150000 +0000" stop="20261201160000 +0000" channel="news.one">'
    "<title>Noon</title></programme></tv>\n"
)


@pytest.fixture
def central(start_central: StartCentral, log_dir: Path) -> Iterator[Running]:
    """Central in a thread of this process, its log lines in a file: structlog's default printer
    would write them onto the captured stdout these tests read the CLI's output from."""
    saved = structlog.get_config()
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "central.log").open("w") as log:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(log))
        try:
            svc = start_central()
            yield svc
            svc.stop()
        finally:
            structlog.configure(**saved)


def op(central: Running) -> list[str]:
    return ["--url", central.url, "--api-key", OPERATOR_KEY]


def viewer(central: Running) -> list[str]:
    return ["--url", central.url, "--api-key", VIEWER_KEY]


def _row(out: str, first: str) -> list[str]:
    """The table row whose first column is ``first``, split on runs of two spaces or more (names
    hold single spaces)."""
    for line in out.splitlines():
        cols = [c for c in line.split("  ") if c.strip()]
        if cols and cols[0].strip() == first:
            return [c.strip() for c in cols]
    raise AssertionError(f"no row {first!r} in:\n{out}")


def _channels(central: Running) -> list[dict[str, object]]:
    with httpx.Client(base_url=central.url, headers={"X-API-Key": VIEWER_KEY}) as client:
        items: list[dict[str, object]] = client.get("/v1/channels").json()["items"]
    return items


def _import(cli: Cli, central: Running, tmp_path: Path, name: str = "channels.m3u") -> None:
    (tmp_path / name).write_text(PLAYLIST)
    r = cli(*op(central), "channels", "import", str(tmp_path / name))
    assert r.code == 0, r.err


def test_import_dry_run_then_import_then_list(cli: Cli, central: Running, tmp_path: Path) -> None:
    file = tmp_path / "channels.m3u"
    file.write_text(PLAYLIST)
    r = cli(*op(central), "channels", "import", str(file), "--dry-run")
    assert (r.code, r.err) == (0, "")
    assert (
        r.out == f"{file}: dry run, nothing written: would be 3 created, 0 updated, 0 unchanged\n"
    )
    assert _channels(central) == []
    r = cli(*op(central), "channels", "import", str(file))
    assert r.out == f"{file}: imported: 3 created, 0 updated, 0 unchanged\n"
    again = cli(*op(central), "channels", "import", str(file))
    assert again.out == f"{file}: imported: 0 created, 0 updated, 3 unchanged\n"

    listed = cli(*viewer(central), "channels")
    assert listed.code == 0
    header, *rows = listed.out.splitlines()
    assert header.split() == [
        "ID",
        "NUMBER",
        "NAME",
        "GROUP",
        "CONTENT",
        "TVG-ID",
        "ENABLED",
        "STANDBY",
    ]
    assert len(rows) == 3
    by_id = {str(c["id"]): c for c in _channels(central)}
    news = next(k for k, c in by_id.items() if c["name"] == "News One")
    assert _row(listed.out, news)[1:] == [
        "101",
        "News One",
        "News",
        f"id:{A[:16]}…",  # cut to 20 columns
        "news.one",
        "yes",
        "no",
    ]
    kids = next(k for k, c in by_id.items() if c["name"] == "Kids")
    assert _row(listed.out, kids)[1:] == [
        "-",
        "Kids",
        "-",
        f"infohash:{C[:10]}…",
        "kids.tv",
        "yes",
        "no",
    ]
    assert cli(*viewer(central), "channels", "list").out == listed.out
    as_json = cli(*viewer(central), "--json", "channels")
    assert json.loads(as_json.out) == {"items": _channels(central)}


def test_import_with_bad_lines_names_every_line_and_writes_nothing(
    cli: Cli, central: Running, tmp_path: Path
) -> None:
    bad = PLAYLIST.replace(f"?id={B}", "?pid=3") + "#EXTINF:-1,No URL follows\n"
    file = tmp_path / "bad.m3u"
    file.write_text(bad)
    r = cli(*op(central), "channels", "import", str(file))
    assert (r.code, r.out) == (1, "")
    lines = r.err.splitlines()
    assert lines[0].startswith(f"acefleet: {file}: line 5: ")
    assert lines[0].endswith(" — http://10.0.0.100/ace/getstream?pid=3")
    assert lines[1].startswith(f"acefleet: {file}: line 8: ")
    assert lines[1].endswith(" — #EXTINF:-1,No URL follows")
    assert lines[2:] == [f"acefleet: {file}: 2 bad lines; nothing was imported"]
    assert _channels(central) == []  # the good lines were not written either
    # --json: the report on stdout, still exit 1
    r = cli(*op(central), "--json", "channels", "import", str(file))
    assert r.code == 1
    report = json.loads(r.out)
    assert [e["line"] for e in report["errors"]] == [5, 8]
    assert report["created"] == 0


def test_import_json_by_content_stdin_and_a_missing_file(
    cli: Cli, central: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "from-a-script"  # no extension: JSON by its first character
    file.write_text(json.dumps([{"name": "One", "content_kind": "id", "content_value": A}]))
    r = cli(*op(central), "channels", "import", str(file))
    assert (r.code, r.out) == (0, f"{file}: imported: 1 created, 0 updated, 0 unchanged\n")
    assert [c["name"] for c in _channels(central)] == ["One"]
    # '-': standard input, M3U by its content (content A is 'One' here, 'News One' there)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(PLAYLIST.encode())))
    r = cli(*op(central), "channels", "import", "-", "--dry-run")
    assert (r.code, r.out) == (
        0,
        "stdin: dry run, nothing written: would be 2 created, 1 updated, 0 unchanged\n",
    )
    r = cli(*op(central), "channels", "import", str(tmp_path / "absent.m3u"))
    assert r.code == 2
    assert r.err == f"acefleet: cannot read {tmp_path / 'absent.m3u'}: No such file or directory\n"
    r = cli(*viewer(central), "channels", "import", str(file))
    assert r.code == 4
    assert r.err.startswith("acefleet: central refused (403 forbidden): role viewer")


def test_export_round_trips(cli: Cli, central: Running, tmp_path: Path) -> None:
    _import(cli, central, tmp_path)
    before = _channels(central)
    backup = tmp_path / "backup.json"
    r = cli(*viewer(central), "channels", "export", "-o", str(backup))
    assert (r.code, r.out) == (0, f"wrote 3 channels to {backup}\n")
    assert json.loads(backup.read_text()) == {"items": before}
    stdout = cli(*viewer(central), "channels", "export")
    assert json.loads(stdout.out) == {"items": before}

    # Lose one channel and change another; the backup brings both back.
    news = next(c for c in before if c["name"] == "News One")
    sport = next(c for c in before if c["name"] == "Sport")
    assert cli(*op(central), "channels", "rm", str(news["id"])).code == 0
    assert cli(*op(central), "channels", "disable", str(sport["id"])).code == 0
    r = cli(*op(central), "channels", "import", str(backup))
    assert r.out == f"{backup}: imported: 1 created, 1 updated, 1 unchanged\n"
    after = cli(*viewer(central), "channels", "export")
    strip = [{k: v for k, v in c.items() if k != "id"} for c in before]
    assert [
        {k: v for k, v in c.items() if k != "id"} for c in json.loads(after.out)["items"]
    ] == strip


def test_enable_disable_and_rm_a_channel(cli: Cli, central: Running, tmp_path: Path) -> None:
    _import(cli, central, tmp_path)
    kids = next(c for c in _channels(central) if c["name"] == "Kids")
    cid = str(kids["id"])
    r = cli(*op(central), "channels", "disable", cid)
    assert (r.code, r.out) == (0, f"channel {cid} Kids: disabled: not listed to players\n")
    assert _row(cli(*viewer(central), "channels").out, cid)[-2] == "no"
    # every other field went back unchanged
    assert next(c for c in _channels(central) if c["id"] == kids["id"]) == {
        **kids,
        "enabled": False,
    }
    r = cli(*op(central), "channels", "enable", cid)
    assert r.out == f"channel {cid} Kids: enabled: listed to players\n"
    assert _row(cli(*viewer(central), "channels").out, cid)[-2] == "yes"
    r = cli(*op(central), "channels", "rm", cid)
    assert (r.code, r.out) == (0, f"channel {cid} deleted\n")
    assert "Kids" not in [c["name"] for c in _channels(central)]
    for argv in (["rm", cid], ["enable", cid]):
        r = cli(*op(central), "channels", *argv)
        assert (r.code, r.out) == (1, ""), argv
        assert r.err.startswith("acefleet: central refused (404 unknown_channel): ")
    r = cli(*viewer(central), "channels", "disable", "1")
    assert r.code == 4  # a viewer may read the channel, not write it
    assert cli(*op(central), "channels", "rm", "one").code == 2


def test_guide_status_and_upload(cli: Cli, central: Running, tmp_path: Path) -> None:
    _import(cli, central, tmp_path)
    r = cli(*viewer(central), "guide")
    assert (r.code, r.out) == (0, "guide  none stored\n")
    xml = tmp_path / "guide.xml"
    xml.write_text(GUIDE)
    r = cli(*op(central), "guide", "upload", str(xml))
    assert r.code == 0, r.err
    lines = dict(line.split(None, 1) for line in r.out.splitlines())
    assert lines["guide"].startswith("from upload, imported ")
    assert (lines["channels"], lines["programmes"]) == ("2", "1")
    # news.one is in the guide, kids.tv is not, Sport has no tvg-id
    assert lines["matched"] == "1 catalog channels have their tvg-id in it"
    assert cli(*viewer(central), "guide").out == r.out
    assert json.loads(cli(*viewer(central), "--json", "guide").out)["programmes"] == 1
    broken = tmp_path / "broken.xml"
    broken.write_text("<html><body>not a guide</body></html>")
    r = cli(*op(central), "guide", "upload", str(broken))
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith("acefleet: central refused (422 invalid_guide): ")
    assert json.loads(cli(*viewer(central), "--json", "guide").out)["programmes"] == 1


def _urls(out: str) -> dict[str, str]:
    pairs = (line.split() for line in out.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2 and p[1].startswith("http")}


def test_add_a_player_shows_its_urls_once_and_they_work(
    cli: Cli, central: Running, tmp_path: Path
) -> None:
    _import(cli, central, tmp_path)
    r = cli(
        *op(central),
        "players",
        "add",
        "living room",
        "--groups",
        "News,Sport",
        "--max-streams",
        "3",
    )
    assert (r.code, r.err) == (0, "")
    first = r.out.splitlines()[0]
    assert first.endswith(" living room: groups News,Sport, max streams 3, enabled")
    assert "shown only now" in r.out
    urls = _urls(r.out)
    assert set(urls) == {"playlist", "guide", "hdhomerun"}
    assert urls["playlist"].startswith(f"{central.url}/p/")
    assert urls["playlist"] == urls["hdhomerun"] + "/playlist.m3u"
    playlist = httpx.get(urls["playlist"])  # as the player fetches it: no API key
    assert playlist.status_code == 200
    assert "News One" in playlist.text
    assert "Sport" in playlist.text
    assert "Kids" not in playlist.text  # no group: not one of the player's groups
    assert httpx.get(urls["hdhomerun"] + "/discover.json").json()["TunerCount"] >= 1

    listed = cli(*viewer(central), "players")
    pid = first.split()[1]
    assert _row(listed.out, pid)[1:] == ["living room", "News,Sport", "3", "yes"]
    secret = urls["playlist"].split("/p/")[1].split("/")[0]
    assert secret not in listed.out  # never listed again
    assert secret not in cli(*viewer(central), "--json", "players").out


def test_rotate_invalidates_the_old_url(cli: Cli, central: Running) -> None:
    made = json.loads(cli(*op(central), "--json", "players", "add", "tv").out)
    old, pid = made["playlist_url"], made["player"]["id"]
    assert httpx.get(old).status_code == 200
    r = cli(*op(central), "players", "rotate", str(pid))
    assert r.code == 0, r.err
    assert "the old URLs answer 404 from now on" in r.out
    new = _urls(r.out)["playlist"]
    assert new != old
    gone = httpx.get(old)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "player_unknown"
    assert httpx.get(new).status_code == 200
    r = cli(*op(central), "players", "rotate", "999")
    assert r.code == 1
    assert r.err.startswith("acefleet: central refused (404 unknown_player): ")


def test_disable_enable_and_rm_a_player(cli: Cli, central: Running) -> None:
    made = json.loads(cli(*op(central), "--json", "players", "add", "den", "--groups", "News").out)
    pid, url = str(made["player"]["id"]), made["playlist_url"]
    r = cli(*op(central), "players", "disable", pid)
    assert (r.code, r.out) == (0, f"player {pid} den: groups News, max streams 2, disabled\n")
    assert httpx.get(url).status_code == 403
    assert _row(cli(*viewer(central), "players").out, pid)[1:] == ["den", "News", "2", "no"]
    r = cli(*op(central), "players", "enable", pid)
    assert r.out == f"player {pid} den: groups News, max streams 2, enabled\n"
    assert httpx.get(url).status_code == 200
    assert cli(*viewer(central), "players", "disable", pid).code == 4
    r = cli(*op(central), "players", "rm", pid)
    assert (r.code, r.out) == (0, f"player {pid} deleted: its URLs stop at once\n")
    assert httpx.get(url).status_code == 404
    assert cli(*viewer(central), "players").out.endswith(
        "(no players: acefleet players add NAME)\n"
    )
    assert cli(*op(central), "players", "rm", pid).code == 1


def test_usage_counts_streams_per_player(cli: Cli, central: Running) -> None:
    one = json.loads(cli(*op(central), "--json", "players", "add", "one").out)["player"]
    two = json.loads(
        cli(*op(central), "--json", "players", "add", "two", "--max-streams", "0").out
    )["player"]
    a, b = str(one["id"]), str(two["id"])
    now = datetime.now(UTC)

    def live(sid: str, players: dict[str, int]) -> LiveStream:
        viewers = sum(players.values())
        return LiveStream(
            stream_id=sid,
            content_key=f"id:{sid}",
            source="central",
            viewers=viewers,
            started_at=now,
            players=players,
        )

    with service_client(central) as service:
        snapshot(service, "edge1", [live("s1", {a: 2}), live("s2", {a: 1, "77": 1})])
        snapshot(service, "edge2", [live("s3", {a: 1})])
    r = cli(*viewer(central), "players", "usage")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0].split() == ["ID", "NAME", "STREAMS", "MAX", "STREAMS", "HOSTS"]
    assert _row(r.out, a)[1:] == ["one", "4", "2", "edge1:3,edge2:1"]
    assert _row(r.out, b)[1:] == ["two", "0", "none", "-"]
    assert _row(r.out, "77")[1:] == ["(deleted)", "1", "-", "edge1:1"]
    with httpx.Client(base_url=central.url, headers={"X-API-Key": VIEWER_KEY}) as client:
        expected = client.get("/v1/players/usage").json()
    assert json.loads(cli(*viewer(central), "--json", "players", "usage").out) == expected


async def test_standby_flag_round_trip_to_an_edge(
    cli: Cli, central: Running, tmp_path: Path
) -> None:
    """``channels standby`` sets the catalog flag; a re-import of the M3U keeps it (the playlist
    has no such notion); the edge's catalog copy answers ``standby_wanted`` from it."""
    _import(cli, central, tmp_path)
    news = next(c for c in _channels(central) if c["name"] == "News One")
    cid = str(news["id"])
    r = cli(*op(central), "channels", "standby", cid)
    assert (r.code, r.err) == (0, "")
    assert (
        r.out
        == f"channel {cid} News One: standby: edges keep a warm standby session while it plays\n"
    )
    assert _row(cli(*viewer(central), "channels").out, cid)[-1] == "yes"
    assert next(c for c in _channels(central) if c["id"] == news["id"]) == {
        **news,
        "standby": True,
    }
    _import(cli, central, tmp_path)
    assert next(c for c in _channels(central) if c["id"] == news["id"])["standby"] is True

    settings = ProxySettings(central_url=central.url, central_api_key=SERVICE_KEY)
    async with httpx.AsyncClient() as http:
        peer = ControlPeer(
            "central", http, central.url, SERVICE_KEY, proxy_id="p", host="edge0", timeout_s=5
        )
        cache = CatalogCache(settings, Metrics(), peer)
        await cache.refresh_catalog()
        assert cache.standby_wanted(f"id:{A}")
        assert not cache.standby_wanted(f"id:{B}")
        assert not cache.standby_wanted("id:not-in-the-catalog")
        r = cli(*op(central), "channels", "no-standby", cid)
        assert r.out == f"channel {cid} News One: no standby unless its viewers ask for one\n"
        await cache.refresh_catalog()
        assert not cache.standby_wanted(f"id:{A}")
