"""Importing channels into a real central: M3U and JSON, all or nothing, line by line, matched by
content."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import OPERATOR_KEY

M3U = {"Content-Type": "audio/x-mpegurl"}
ID1 = "0123456789abcdef0123456789abcdef01234567"
ID2 = "89abcdef0123456789abcdef0123456789abcdef"
HASH3 = "fedcba9876543210fedcba9876543210fedcba98"

PLAYLIST = f"""#EXTM3U url-tvg="http://example.invalid/epg.xml"
#EXTINF:-1 tvg-id="news.one" tvg-name="News One" tvg-logo="https://logos.example/n1.png" \
group-title="News" tvg-chno="101",News One HD
acestream://{ID1}
#EXTINF:-1 tvg-id="sport.two" tvg-logo="http://logos.example/s2.png" group-title="Sport" \
tvg-chno="7" tvg-shift="+1",Sport Two, with a comma
http://10.0.0.100:80/ace/getstream?id={ID2.upper()}&pid=1
#EXTINF:-1 tvg-id="" group-title="Sport",Infohash Three
#EXTVLCOPT:network-caching=1000
https://vip.example/ace/manifest.m3u8?infohash={HASH3}
"""

EXPECTED = [
    {
        "name": "Sport Two, with a comma",
        "content_kind": "id",
        "content_value": ID2,
        "group": "Sport",
        "logo": "http://logos.example/s2.png",
        "tvg_id": "sport.two",
        "number": 7,
        "enabled": True,
        "standby": False,
    },
    {
        "name": "News One",
        "content_kind": "id",
        "content_value": ID1,
        "group": "News",
        "logo": "https://logos.example/n1.png",
        "tvg_id": "news.one",
        "number": 101,
        "enabled": True,
        "standby": False,
    },
    {
        "name": "Infohash Three",
        "content_kind": "infohash",
        "content_value": HASH3,
        "group": "Sport",
        "logo": "",
        "tvg_id": "",
        "number": None,
        "enabled": True,
        "standby": False,
    },
]


def _without_ids(items: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in item.items() if k != "id"} for item in items]


def _import(client: httpx.Client, body: str | bytes, **params: str) -> httpx.Response:
    return client.post("/v1/channels/import", content=body, headers=M3U, params=params)


def test_m3u_import_then_export_keeps_every_attribute(operator: httpx.Client) -> None:
    r = _import(operator, PLAYLIST)
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": False, "created": 3, "updated": 0, "unchanged": 0, "errors": []}

    export = operator.get("/v1/channels/export")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/json")
    assert export.headers["content-disposition"].startswith("attachment")
    items = export.json()["items"]
    # Ordered by number (unnumbered last); the extra tvg-shift attribute is not a field.
    assert _without_ids(items) == EXPECTED

    # The export imports back as is: everything known, nothing changed.
    again = operator.post(
        "/v1/channels/import", content=export.content, headers={"Content-Type": "application/json"}
    )
    assert again.json() == {
        "dry_run": False,
        "created": 0,
        "updated": 0,
        "unchanged": 3,
        "errors": [],
    }

    # Into an empty catalog it recreates the same channels (new ids), attribute for attribute.
    for item in items:
        assert operator.delete(f"/v1/channels/{item['id']}").status_code == 204
    assert operator.get("/v1/channels").json() == {"items": []}
    restored = operator.post(
        "/v1/channels/import", content=export.content, headers={"Content-Type": "application/json"}
    )
    assert restored.json()["created"] == 3
    assert _without_ids(operator.get("/v1/channels/export").json()["items"]) == EXPECTED


def test_reimport_is_idempotent_and_matches_by_content(operator: httpx.Client) -> None:
    assert _import(operator, PLAYLIST).json()["created"] == 3
    before = operator.get("/v1/channels")
    assert _import(operator, PLAYLIST).json() == {
        "dry_run": False,
        "created": 0,
        "updated": 0,
        "unchanged": 3,
        "errors": [],
    }
    after = operator.get("/v1/channels")
    assert after.json() == before.json()
    assert after.headers["etag"] == before.headers["etag"]

    # Same content under another URL form and a new name: an update of the same channel, not a
    # new one; a new content id: a new channel; channels the playlist does not name are kept.
    changed = f"""#EXTM3U
#EXTINF:-1 tvg-id="news.one" tvg-logo="https://logos.example/n1.png" group-title="News" \
tvg-chno="101",News One (renamed)
http://vip.example/ace/getstream?content_id={ID1}
#EXTINF:-1,Brand New
acestream://{"1" * 40}
"""
    dry = _import(operator, changed, dry_run="true")
    assert dry.json() == {"dry_run": True, "created": 1, "updated": 1, "unchanged": 0, "errors": []}
    assert operator.get("/v1/channels").json() == after.json()  # a dry run writes nothing
    assert _import(operator, changed).json() == {
        "dry_run": False,
        "created": 1,
        "updated": 1,
        "unchanged": 0,
        "errors": [],
    }
    items = operator.get("/v1/channels").json()["items"]
    assert len(items) == 4
    renamed = next(c for c in items if c["content_value"] == ID1)
    old_id = next(c["id"] for c in after.json()["items"] if c["content_value"] == ID1)
    assert renamed["id"] == old_id
    assert renamed["name"] == "News One (renamed)"


BAD_PLAYLIST = f"""#EXTM3U
#EXTINF:-1 tvg-id="ok",A good channel
acestream://{ID1}
#EXTINF:-1,No selector
http://vip.example/ace/getstream?pid=3
#EXTINF:-1,Two selectors
http://vip.example/ace/getstream?id={ID2}&infohash={HASH3}
#EXTINF:-1,Bad id
acestream://not/an?id
#EXTINF:-1,No URL follows
#EXTINF:-1 tvg-logo="ftp://logos.example/x.png",Bad logo
acestream://{HASH3}
this line is garbage
#EXTINF:-1 tvg-chno="seven",Bad number
acestream://{"2" * 40}
#EXTINF:-1 group-title="unterminated,Broken attribute
acestream://{"3" * 40}
#EXTINF:-1,Same content twice
acestream://{ID1.upper()}
#EXTINF:-1,Not an AceStream URL
http://vip.example/some/other/path?id=1
"""


def test_every_bad_line_is_reported_and_nothing_is_written(operator: httpx.Client) -> None:
    r = _import(operator, BAD_PLAYLIST)
    assert r.status_code == 422, r.text
    report = r.json()
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, 0)
    by_line = {e["line"]: e for e in report["errors"]}
    lines = BAD_PLAYLIST.split("\n")
    for error in report["errors"]:
        assert error["text"] == lines[error["line"] - 1]  # the line as the operator wrote it
    expected = {
        5: "no id=, content_id= or infohash=",
        7: "more than one of",
        9: "content id",
        10: "#EXTINF without a URL",
        11: "tvg-logo",
        13: "not a playlist line",
        14: "tvg-chno must be a whole number",
        16: "malformed attribute",
        18: "the same content as line 2",  # an entry is named by its #EXTINF line
        21: "not an AceStream URL",
    }
    assert sorted(by_line) == sorted(expected)
    for line, words in expected.items():
        assert words in by_line[line]["message"], (line, by_line[line])
    # All or nothing: the one good channel was not written either.
    assert operator.get("/v1/channels").json() == {"items": []}


def test_playlist_shape_errors(operator: httpx.Client) -> None:
    r = _import(operator, "garbage\nmore garbage\n")
    assert r.status_code == 422
    assert next((e["line"], e["message"]) for e in r.json()["errors"]) == (
        1,
        "a playlist starts with #EXTM3U",
    )
    trailing = _import(operator, f"#EXTM3U\n#EXTINF:-1,Ok\nacestream://{ID1}\n#EXTINF:-1,Last\n")
    assert [(e["line"], e["message"]) for e in trailing.json()["errors"]] == [
        (4, "#EXTINF without a URL after it")
    ]
    assert _import(operator, "").json()["errors"][0]["line"] == 1
    latin1 = f"#EXTM3U\n#EXTINF:-1,Caf\xe9\nacestream://{ID1}\n".encode("latin-1")
    assert [(e["line"], e["message"]) for e in _import(operator, latin1).json()["errors"]] == [
        (2, "not UTF-8 text")
    ]
    assert operator.get("/v1/channels").json() == {"items": []}


def test_json_import_reports_items(operator: httpx.Client) -> None:
    good = {"name": "J", "content_kind": "id", "content_value": ID1, "group": "G"}
    items = [good, {"name": "", "content_kind": "id", "content_value": ID2}, "x", good]
    r = operator.post("/v1/channels/import", json=items)
    assert r.status_code == 422
    errors = {e["line"]: e["message"] for e in r.json()["errors"]}
    assert sorted(errors) == [2, 3, 4]
    assert "name" in errors[2]
    assert errors[3] == "a channel is a JSON object"
    assert errors[4] == "the same content as item 1"
    broken = operator.post(
        "/v1/channels/import", content=b"[\n{,\n]", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["line"] == 2
    for hostile in (b"[" * 100_000, b"[" + b"1" * 5000 + b"]"):
        r = operator.post(
            "/v1/channels/import", content=hostile, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["line"] == 1
    assert operator.post("/v1/channels/import", json=[good]).json()["created"] == 1


def test_import_limits_and_media_types(start_central: StartCentral) -> None:
    svc = start_central(catalog_max_bytes="2048")
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator:
        entry = f"#EXTINF:-1,C\nacestream://{ID1}\n"
        big = "#EXTM3U\n" + entry * 100
        r = _import(operator, big)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "too_large"

        # Without a Content-Length (chunked), the limit holds while the body streams in.
        def chunks() -> Iterator[bytes]:
            for _ in range(100):
                yield entry.encode()

        streamed = operator.post("/v1/channels/import", content=chunks(), headers=M3U)
        assert streamed.status_code == 413
        assert operator.get("/v1/channels").json() == {"items": []}

        form = operator.post(
            "/v1/channels/import",
            content="#EXTM3U\n",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 415
        assert form.json()["error"]["code"] == "unsupported_media_type"
        plain = operator.post(
            "/v1/channels/import",
            content="#EXTM3U\n" + entry,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        assert plain.json()["created"] == 1


def test_seed_file_fills_an_empty_catalog_once(start_central: StartCentral, tmp_path: Path) -> None:
    seed = tmp_path / "seed.m3u"
    seed.write_text(PLAYLIST, encoding="utf-8")
    svc: Running = start_central(catalog_seed_path=str(seed))
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator:
        items = operator.get("/v1/channels").json()["items"]
        assert _without_ids(items) == EXPECTED
        operator.delete(f"/v1/channels/{items[0]['id']}")
    svc.stop()
    # The catalog is not empty at the next start: the seed is not applied again (the deleted
    # channel stays deleted), and what was stored survived the restart.
    svc = start_central(catalog_seed_path=str(seed))
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator:
        assert _without_ids(operator.get("/v1/channels").json()["items"]) == EXPECTED[1:]
