"""The audit log: operators' changes are recorded with the key's name and read back through
``GET /v1/audit`` (filters, newest first), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx

from orchestrator.central.auth import Role, parse_key
from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, VIEWER_KEY, Agent

OPERATOR = parse_key(OPERATOR_KEY, Role.operator)[0]


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=10)


def _audit(operator: httpx.Client, count: int, **params: Any) -> list[dict[str, Any]]:
    """The audit log once it has ``count`` rows for these filters (rows are written behind
    the request, by the history writer)."""
    items: list[dict[str, Any]] = []
    for _ in range(100):
        r = operator.get("/v1/audit", params=params)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        if len(items) >= count:
            return items
        time.sleep(0.05)
    raise AssertionError(f"{len(items)} audit rows for {params}, expected {count}")


def test_operator_changes_are_audited_and_filtered(
    start_central: StartCentral, database_url: str
) -> None:
    svc = start_central(database_url=database_url)
    with (
        _client(svc.url, OPERATOR_KEY) as operator,
        _client(svc.url, SERVICE_KEY) as service,
        _client(svc.url, VIEWER_KEY) as viewer,
    ):
        agent = Agent("edge0", 1)
        agent.beat(service)
        engine_id = agent.engines[0].id
        before = datetime.now(UTC)
        assert operator.post(f"/v1/engines/{engine_id}/drain").status_code == 200
        assert operator.post(f"/v1/engines/{engine_id}/undrain").status_code == 200
        assert operator.post("/v1/hosts/edge0/drain").status_code == 200
        body = {"warm_buffer_per_edge": 1, "fleet_max_engines": 40}
        assert operator.put("/v1/provisioning/buffer", json=body).status_code == 200
        created = operator.post("/v1/players", json={"name": "lounge"})
        assert created.status_code == 201
        player = created.json()
        rotated = operator.post(f"/v1/players/{player['player']['id']}/secret").json()
        # A refused change is no change: nothing recorded.
        assert operator.post("/v1/engines/no-such-engine/drain").status_code == 404

        items = _audit(operator, 6)
        assert [i["action"] for i in items] == [
            "player.secret_rotate",
            "player.create",
            "buffer.scale",
            "host.drain",
            "engine.undrain",
            "engine.drain",
        ]
        assert {i["actor"] for i in items} == {OPERATOR}
        assert {i["role"] for i in items} == {"operator"}
        assert items[-1]["target"] == engine_id
        assert items[2]["detail"] == body
        assert items[0]["client"] == "127.0.0.1"
        # Never a secret: neither the player's nor a key.
        text = str(items)
        for secret in (player["secret"], rotated["secret"], OPERATOR_KEY):
            assert secret not in text

        assert [i["action"] for i in _audit(operator, 2, action="engine.")] == [
            "engine.undrain",
            "engine.drain",
        ]
        assert [i["action"] for i in _audit(operator, 1, action="host.drain")] == ["host.drain"]
        assert len(_audit(operator, 2, limit=2)) == 2
        assert operator.get("/v1/audit", params={"actor": "someone-else"}).json()["items"] == []
        assert len(_audit(operator, 6, since=before.isoformat())) == 6
        later = datetime.now(UTC).isoformat()
        assert operator.get("/v1/audit", params={"since": later}).json()["items"] == []
        # The log is for operators.
        assert viewer.get("/v1/audit").status_code == 403
        assert service.get("/v1/audit").status_code == 403


def test_catalog_and_guide_edits_are_audited(start_central: StartCentral) -> None:
    svc = start_central(trusted_proxies="127.0.0.1")  # as if behind HAProxy on this host
    with _client(svc.url, OPERATOR_KEY) as operator:
        channel = {"name": "One", "content_kind": "id", "content_value": "a" * 40}
        forwarded = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
        made = operator.post("/v1/channels", json=channel, headers=forwarded)
        assert made.status_code == 201, made.text
        cid = made.json()["id"]
        assert operator.put(f"/v1/channels/{cid}", json={**channel, "name": "Uno"}).is_success
        playlist = b"#EXTM3U\n#EXTINF:-1,Two\nacestream://" + b"b" * 40 + b"\n"
        r = operator.post(
            "/v1/channels/import", content=playlist, headers={"content-type": "audio/x-mpegurl"}
        )
        assert r.status_code == 200, r.text
        assert operator.delete(f"/v1/channels/{cid}").status_code == 204
        guide = b'<?xml version="1.0"?><tv><channel id="one"><display-name>One</display-name>'
        guide += b"</channel></tv>"
        r = operator.put("/v1/guide", content=guide, headers={"content-type": "application/xml"})
        assert r.status_code == 200, r.text
        items = _audit(operator, 5)
        assert [(i["action"], i["target"]) for i in items] == [
            ("guide.upload", "guide"),
            ("channel.delete", str(cid)),
            ("channel.import", "catalog"),
            ("channel.update", str(cid)),
            ("channel.create", str(cid)),
        ]
        assert items[3]["detail"]["name"] == "Uno"
        # Behind a trusted balancer: the hop it added, not the client's own claim before it.
        assert items[4]["client"] == "203.0.113.7"
        assert items[3]["client"] == "127.0.0.1"
        assert items[2]["detail"]["created"] == 1


def test_a_peer_not_trusted_cannot_name_its_own_address(start_central: StartCentral) -> None:
    """Without trusted_proxies (the default), X-Forwarded-For is the client's own claim, from
    whatever peer it comes: the audit names the peer (here loopback, which the HTTP server
    itself must not trust either)."""
    svc = start_central()
    with _client(svc.url, OPERATOR_KEY) as operator:
        channel = {"name": "One", "content_kind": "id", "content_value": "c" * 40}
        forwarded = {"X-Forwarded-For": "198.51.100.9"}
        made = operator.post("/v1/channels", json=channel, headers=forwarded)
        assert made.status_code == 201, made.text
        assert [i["client"] for i in _audit(operator, 1)] == ["127.0.0.1"]
