"""Players (profiles) on central: the operator API, what persists, what edges poll
(``/v1/edge/catalog``, ``/v1/edge/guide``) and the per-player usage summed from proxy
snapshots."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from acefleet.catalog_wire import EdgeCatalog, PlayerUsage
from acefleet.tokens import secret_sha256
from acefleet.wire import LiveStream
from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, VIEWER_KEY, snapshot

FIELDS = {"name": "kitchen", "groups": ["News", "Sport"], "max_streams": 2, "enabled": True}


@pytest.fixture
def start_central(start_central: StartCentral, database_url: str) -> StartCentral:
    """Every central here runs once on SQLite and once on PostgreSQL: players live in the
    database."""
    return functools.partial(start_central, database_url=database_url)


def client(url: str, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": key} if key else {}, timeout=10)


def live(stream_id: str, content: str, players: dict[str, int], viewers: int = 1) -> LiveStream:
    return LiveStream(
        stream_id=stream_id,
        content_key=content,
        source="central",
        viewers=viewers,
        started_at=datetime.now(UTC),
        players=players,
    )


def test_players_crud_roles_and_secrets_shown_once(
    operator: httpx.Client, viewer: httpx.Client, anonymous: httpx.Client
) -> None:
    r = operator.post("/v1/players", json=FIELDS)
    assert r.status_code == 201, r.text
    made = r.json()
    secret, pid = made["secret"], made["player"]["id"]
    assert made["player"] == {"id": pid, **FIELDS}
    assert len(secret) >= 32
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert made["playlist_url"].endswith(f"/p/{secret}/playlist.m3u")
    # Reads never show the secret, nor its hash.
    listing = viewer.get("/v1/players")
    assert listing.status_code == 200
    assert listing.json() == {"items": [{"id": pid, **FIELDS}]}
    assert secret not in listing.text
    assert secret_sha256(secret) not in listing.text
    tag = listing.headers["etag"]
    assert viewer.get("/v1/players", headers={"If-None-Match": tag}).status_code == 304
    assert viewer.get(f"/v1/players/{pid}").json() == {"id": pid, **FIELDS}
    # Writes need an operator key; no key at all is 401.
    assert viewer.post("/v1/players", json=FIELDS).status_code == 403
    assert viewer.put(f"/v1/players/{pid}", json=FIELDS).status_code == 403
    assert viewer.post(f"/v1/players/{pid}/secret").status_code == 403
    assert anonymous.get("/v1/players").status_code == 401
    changed = {**FIELDS, "groups": ["Sport", "News", "Sport"], "max_streams": 0}
    r = operator.put(f"/v1/players/{pid}", json=changed)
    assert r.status_code == 200
    assert r.json()["groups"] == ["News", "Sport"]  # a set, sorted
    assert r.json()["max_streams"] == 0
    assert viewer.get("/v1/players", headers={"If-None-Match": tag}).status_code == 200
    bad = operator.post("/v1/players", json={**FIELDS, "max_streams": -1})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"]
    rotated = operator.post(f"/v1/players/{pid}/secret").json()
    assert rotated["secret"] != secret
    assert rotated["player"]["id"] == pid
    assert operator.delete(f"/v1/players/{pid}").status_code == 204
    gone = operator.get(f"/v1/players/{pid}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "unknown_player"
    assert operator.delete(f"/v1/players/{pid}").status_code == 404
    assert operator.post(f"/v1/players/{pid}/secret").status_code == 404


def test_players_and_their_secrets_survive_a_restart(start_central: StartCentral) -> None:
    first = start_central()
    with client(first.url, OPERATOR_KEY) as operator:
        made = operator.post("/v1/players", json=FIELDS).json()
    first.stop()
    second = start_central()
    with client(second.url, OPERATOR_KEY) as operator, client(second.url, None) as public:
        assert operator.get("/v1/players").json()["items"] == [made["player"]]
        assert public.get(f"/p/{made['secret']}/lineup_status.json").status_code == 200


def test_edge_catalog_is_for_services_etagged_and_carries_hashes_only(
    start_central: StartCentral, tmp_path: Path
) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([{"name": "One", "content_kind": "id", "content_value": "a" * 40}]))
    svc = start_central(
        catalog_seed_path=str(seed), player_url="http://vip.test", token_ttl_s="3600"
    )
    with (
        client(svc.url, SERVICE_KEY) as service,
        client(svc.url, OPERATOR_KEY) as operator,
        client(svc.url, VIEWER_KEY) as viewer,
    ):
        assert viewer.get("/v1/edge/catalog").status_code == 403
        first = service.get("/v1/edge/catalog")
        assert first.status_code == 200
        catalog = EdgeCatalog.model_validate_json(first.content)
        assert first.headers["etag"] == f'"{catalog.version}"'
        assert catalog.player_url == "http://vip.test"
        assert catalog.tokens_required is False
        assert catalog.token_ttl_s == 3600
        assert catalog.tuner_count == 1
        assert [c.name for c in catalog.channels] == ["One"]
        assert catalog.players == []
        assert catalog.guide_version == ""
        again = service.get("/v1/edge/catalog", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        made = operator.post("/v1/players", json=FIELDS).json()
        after = service.get("/v1/edge/catalog", headers={"If-None-Match": first.headers["etag"]})
        assert after.status_code == 200
        (player,) = EdgeCatalog.model_validate_json(after.content).players
        assert player.secret_sha256 == secret_sha256(made["secret"])
        assert made["secret"] not in after.text
        # The guide: none yet, then the stored one cut to the catalog's channels.
        assert service.get("/v1/edge/guide").status_code == 404
        xml = (
            b'<?xml version="1.0"?><tv><channel id="one.tv"><display-name>One</display-name>'
            b'</channel><channel id="two.tv"><display-name>Two</display-name></channel></tv>'
        )
        put = operator.put("/v1/guide", content=xml, headers={"content-type": "application/xml"})
        assert put.status_code == 200, put.text
        fields = {"name": "One", "content_kind": "id", "content_value": "a" * 40}
        operator.put("/v1/channels/1", json={**fields, "tvg_id": "one.tv"}).raise_for_status()
        guide = service.get("/v1/edge/guide")
        assert guide.status_code == 200
        assert b'id="one.tv"' in guide.content
        assert b"two.tv" not in guide.content
        version = EdgeCatalog.model_validate_json(service.get("/v1/edge/catalog").content)
        assert guide.headers["etag"] == f'"{version.guide_version}"'
        cached = service.get("/v1/edge/guide", headers={"If-None-Match": guide.headers["etag"]})
        assert cached.status_code == 304


def test_usage_sums_two_proxies_snapshots_per_player_and_host(
    service: httpx.Client, viewer: httpx.Client
) -> None:
    assert viewer.get("/v1/players/usage").json() == {"streams": {}, "by_host": {}}
    snapshot(
        service,
        "edge1",
        [
            live("s1", "id:aaa", {"1": 2, "2": 1}, viewers=4),
            live("s2", "id:bbb", {"1": 1}),
        ],
    )
    snapshot(service, "edge2", [live("s3", "id:ccc", {"1": 1, "3": 2}, viewers=3)])
    usage = PlayerUsage.model_validate(viewer.get("/v1/players/usage").json())
    assert usage.streams == {"1": 4, "2": 1, "3": 2}
    assert usage.by_host == {"edge1": {"1": 3, "2": 1}, "edge2": {"1": 1, "3": 2}}
    # A snapshot is the whole truth of its proxy: what it no longer lists stops counting.
    snapshot(service, "edge1", [live("s1", "id:aaa", {"2": 1})])
    usage = PlayerUsage.model_validate(service.get("/v1/players/usage").json())
    assert usage.streams == {"1": 1, "2": 1, "3": 2}
    assert usage.by_host == {"edge1": {"2": 1}, "edge2": {"1": 1, "3": 2}}


def test_a_snapshot_without_players_is_still_accepted(service: httpx.Client) -> None:
    """Proxies older than the players field keep snapshotting."""
    body: dict[str, Any] = {
        "host": "edge9",
        "url": "http://127.0.0.1:6880/edge9",
        "streams": [
            {
                "stream_id": "old",
                "content_key": "id:aaa",
                "source": "central",
                "viewers": 1,
                "started_at": datetime.now(UTC).isoformat(),
            }
        ],
    }
    assert service.put("/v1/proxies/proxy-edge9/streams", json=body).status_code == 200
    assert service.get("/v1/players/usage").json() == {"streams": {}, "by_host": {}}
