"""The catalog on a real central: channels by hand (roles, ETags, conflicts, persistence) and the
XMLTV guide (upload, checks, the copy cut to the catalog, a guide file re-read on change)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree  # type: ignore[import-untyped]

from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY

ID1 = "0123456789abcdef0123456789abcdef01234567"
ID2 = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def start_central(start_central: StartCentral, database_url: str) -> StartCentral:
    """Every central here runs once on SQLite and once on PostgreSQL: channels and the guide
    live in the database."""
    return functools.partial(start_central, database_url=database_url)


def channel(value: str = ID1, **fields: object) -> dict[str, object]:
    return {"name": "News", "content_kind": "id", "content_value": value, **fields}


def test_channel_crud_with_roles_and_conflicts(
    operator: httpx.Client, viewer: httpx.Client, anonymous: httpx.Client
) -> None:
    r = operator.post("/v1/channels", json=channel(group="News", tvg_id="news.one", number=5))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"] >= 1
    assert created["content_value"] == ID1
    assert created["logo"] == ""
    assert created["enabled"] is True

    # The same content again, in any letter case: one channel per content.
    dup = operator.post("/v1/channels", json=channel(ID1.upper(), name="Other"))
    assert dup.status_code == 409
    assert dup.json()["error"]["code"] == "duplicate_content"

    second = operator.post("/v1/channels", json=channel(ID2, name="Sport", number=2)).json()
    names = [c["name"] for c in viewer.get("/v1/channels").json()["items"]]
    assert names == ["Sport", "News"]  # by number

    # Replacing may not take another channel's content either.
    clash = operator.put(f"/v1/channels/{second['id']}", json=channel(ID1, name="Sport"))
    assert clash.status_code == 409
    replaced = operator.put(
        f"/v1/channels/{created['id']}",
        json=channel(name="News HD", logo="https://logos.example/n.png", enabled=False),
    )
    assert replaced.status_code == 200
    assert replaced.json() == {
        **channel(name="News HD", logo="https://logos.example/n.png", enabled=False),
        "id": created["id"],
        "group": "",
        "tvg_id": "",
        "number": None,
        "standby": False,
    }
    assert viewer.get(f"/v1/channels/{created['id']}").json() == replaced.json()

    bad_logo = operator.post("/v1/channels", json=channel("abc", logo="javascript:alert(1)"))
    assert bad_logo.status_code == 422
    assert bad_logo.json()["error"]["code"] == "invalid_request"
    # A line break would split a player's playlist entry; NUL is no text for PostgreSQL.
    for name in ("Two\nlines", "nul\x00"):
        r = operator.post("/v1/channels", json=channel("abc", name=name))
        assert r.status_code == 422
        assert "control characters" in r.json()["error"]["message"]

    # A viewer key reads everything and changes nothing; no key reads nothing.
    writes = [
        ("POST", "/v1/channels", channel("abc")),
        ("PUT", f"/v1/channels/{created['id']}", channel()),
        ("DELETE", f"/v1/channels/{created['id']}", None),
        ("POST", "/v1/channels/import", None),
    ]
    for method, path, body in writes:
        r = viewer.request(method, path, json=body)
        assert r.status_code == 403, (method, path)
        assert r.json()["error"]["code"] == "forbidden"
    assert viewer.put("/v1/guide", content=b"<tv/>").status_code == 403
    assert viewer.get("/v1/channels/export").status_code == 200
    assert viewer.get("/v1/guide").status_code == 200
    assert anonymous.get("/v1/channels").status_code == 401

    assert operator.delete(f"/v1/channels/{created['id']}").status_code == 204
    gone = operator.get(f"/v1/channels/{created['id']}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "unknown_channel"
    assert operator.delete(f"/v1/channels/{created['id']}").status_code == 404
    assert operator.put(f"/v1/channels/{created['id']}", json=channel()).status_code == 404


def test_channel_list_etag(operator: httpx.Client) -> None:
    first = operator.get("/v1/channels")
    tag = first.headers["etag"]
    assert first.headers["x-ratelimit-limit"]  # the key's rate limit applies here too
    same = operator.get("/v1/channels", headers={"If-None-Match": tag})
    assert same.status_code == 304
    assert same.content == b""
    operator.post("/v1/channels", json=channel())
    changed = operator.get("/v1/channels", headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != tag
    assert len(changed.json()["items"]) == 1


def test_channels_survive_a_restart(start_central: StartCentral) -> None:
    svc = start_central()
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator:
        made = operator.post("/v1/channels", json=channel(group="G", number=9)).json()
        before = operator.get("/v1/channels")
    svc.stop()
    svc = start_central()
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator:
        after = operator.get("/v1/channels")
        assert after.json() == {"items": [made]}
        assert after.headers["etag"] == before.headers["etag"]  # edges' caches stay valid


def xmltv(channel_ids: list[str], marker: str = "") -> bytes:
    """A small XMLTV guide: a channel and two programmes per id."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', '<tv generator-info-name="test">']
    for cid in channel_ids:
        parts.append(f'  <channel id="{cid}"><display-name>{cid}{marker}</display-name></channel>')
    for cid in channel_ids:
        for start in ("20261201120000 +0000", "20261201130000 +0000"):
            title = f"<title>{cid} show</title>"
            parts.append(f'  <programme start="{start}" channel="{cid}">{title}</programme>')
    parts.append("</tv>")
    return "\n".join(parts).encode()


def test_guide_upload_is_checked_and_cut_to_the_catalog(
    operator: httpx.Client, service: httpx.Client
) -> None:
    status = operator.get("/v1/guide").json()
    assert status["present"] is False

    for bad, words in [
        (b"<tv><channel></tv>", "not well-formed"),
        (b'<?xml version="1.0"?><rss/>', "root element is <rss>"),
        (b"   ", "empty"),
    ]:
        r = operator.put("/v1/guide", content=bad, headers={"Content-Type": "application/xml"})
        assert r.status_code == 422, bad
        assert r.json()["error"]["code"] == "invalid_guide"
        assert words in r.json()["error"]["message"]
    # An external entity (a file on the control host) or an entity bomb is never expanded:
    # a guide using entities of its own is refused.
    for entities in [
        b'<!DOCTYPE tv [<!ENTITY x SYSTEM "file:///etc/passwd">]><tv>&x;</tv>',
        b'<!DOCTYPE tv [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><tv>&b;</tv>',
        b'<!DOCTYPE tv SYSTEM "xmltv.dtd"><tv>&undeclared;</tv>',
    ]:
        r = operator.put("/v1/guide", content=entities, headers={"Content-Type": "text/xml"})
        assert r.status_code == 422, entities
        assert "entity reference" in r.json()["error"]["message"]
    assert operator.get("/v1/guide").json()["present"] is False

    operator.post("/v1/channels", json=channel(tvg_id="keep.one"))
    operator.post("/v1/channels", json=channel(ID2, name="Two", tvg_id="keep.two"))
    operator.post("/v1/channels", json=channel("off", name="Off", tvg_id="off.x", enabled=False))
    guide = xmltv(["keep.one", "drop.a", "keep.two", "off.x", "drop.b"])
    r = operator.put("/v1/guide", content=guide, headers={"Content-Type": "text/xml"})
    assert r.status_code == 200, r.text
    status = r.json()
    assert status["present"] is True
    assert status["source"] == "upload"
    assert (status["channels"], status["programmes"], status["bytes"]) == (5, 10, len(guide))
    assert status["matched_channels"] == 3
    assert operator.get("/v1/guide").json() == status

    cut = service.get("/v1/edge/guide")
    assert cut.status_code == 200
    tree = etree.fromstring(cut.content)
    assert tree.tag == "tv"
    assert tree.get("generator-info-name") == "test"
    # Only enabled catalog channels' guide ids remain, channels before programmes.
    assert [c.get("id") for c in tree.iter("channel")] == ["keep.one", "keep.two"]
    assert [p.get("channel") for p in tree.iter("programme")] == [
        "keep.one",
        "keep.one",
        "keep.two",
        "keep.two",
    ]
    assert cut.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE tv')

    too_big = operator.put(
        "/v1/guide",
        content=b"<tv>" + b" " * (64 * 1024 * 1024) + b"</tv>",
        headers={"Content-Type": "application/xml"},
    )
    assert too_big.status_code == 413
    assert operator.get("/v1/guide").json()["etag"] == status["etag"]  # unchanged
    json_guide = operator.put("/v1/guide", json={"tv": 1})
    assert json_guide.status_code == 415


def test_guide_file_is_read_at_start_and_again_when_it_changes(
    start_central: StartCentral, tmp_path: Path
) -> None:
    path = tmp_path / "guide.xml"
    path.write_bytes(xmltv(["a.tv", "b.tv"]))
    svc = start_central(guide_path=str(path))
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator:
        first = operator.get("/v1/guide").json()
        assert (first["source"], first["path"], first["channels"]) == ("file", str(path), 2)
        upload = operator.put(
            "/v1/guide", content=xmltv(["x"]), headers={"Content-Type": "text/xml"}
        )
        assert upload.status_code == 409
        assert upload.json()["error"]["code"] == "guide_from_file"

        # Replaced the way tools write files: a new file renamed over the old one.
        fresh = tmp_path / "guide.xml.new"
        fresh.write_bytes(xmltv(["a.tv", "b.tv", "c.tv"], marker=" new"))
        fresh.replace(path)
        status = _wait_for_guide(operator, lambda s: s["etag"] != first["etag"])
        assert status["channels"] == 3

        # A broken save keeps the last good guide.
        path.write_bytes(b"<tv><channel")
        time.sleep(2.5)  # a couple of watcher polls; the assertion is on state, not on time
        assert operator.get("/v1/guide").json()["etag"] == status["etag"]
        path.write_bytes(xmltv(["d.tv"]))
        assert _wait_for_guide(operator, lambda s: s["channels"] == 1)["source"] == "file"

        operator.post("/v1/channels", json=channel(tvg_id="d.tv"))
        with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
            cut = etree.fromstring(service.get("/v1/edge/guide").content)
        assert [c.get("id") for c in cut.iter("channel")] == ["d.tv"]


def _wait_for_guide(
    operator: httpx.Client, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status: dict[str, Any] = operator.get("/v1/guide").json()
        if done(status):
            return status
        assert time.monotonic() < deadline, f"the guide file change was not picked up: {status}"
        time.sleep(0.2)
