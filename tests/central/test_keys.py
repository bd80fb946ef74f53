"""Keys per instance: names, rotation with overlap, and the settings that refuse bad entries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from orchestrator.central.auth import KeyRing, Principal, Role, parse_key
from orchestrator.central.settings import CentralSettings
from tests.central.conftest import StartCentral, ThreadCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, VIEWER_KEY, Agent, claim_body
from tests.support import procs

EDGE1_OLD = "edge1-old-key-0123456789abcdef"
EDGE1_NEW = "edge1-new-key-0123456789abcdef"
EDGE2 = "edge2-key-0123456789abcdef"
ALICE = "alice-key-0123456789abcdef"
BARE = "a-bare-viewer-key-0123456789"


def _settings(**keys: list[str] | float) -> CentralSettings:
    return CentralSettings(database_url="sqlite+aiosqlite:///:memory:", **keys)  # type: ignore[arg-type]


def test_a_named_entry_names_its_key_and_a_bare_key_gets_its_digest_name() -> None:
    assert parse_key(f"edge1:{EDGE1_OLD}", Role.service) == ("edge1", EDGE1_OLD)
    digest = hashlib.sha256(BARE.encode()).hexdigest()[:8]
    assert parse_key(BARE, Role.viewer) == (f"viewer-{digest}", BARE)


def test_identify_names_the_principal_and_rotation_keeps_the_name() -> None:
    ring = KeyRing(
        _settings(
            service_keys=[f"edge1:{EDGE1_OLD}", f"edge1:{EDGE1_NEW}", f"edge2:{EDGE2}"],
            operator_keys=[f"alice:{ALICE}"],
            viewer_keys=[BARE],
        )
    )
    assert ring.identify(EDGE1_OLD) == Principal("edge1", Role.service)
    assert ring.identify(EDGE1_NEW) == Principal("edge1", Role.service)
    assert ring.identify(EDGE2) == Principal("edge2", Role.service)
    assert ring.identify(ALICE) == Principal("alice", Role.operator)
    assert ring.identify(BARE) == Principal(parse_key(BARE, Role.viewer)[0], Role.viewer)
    assert ring.identify("edge1") is None
    assert ring.identify(f"edge1:{EDGE1_OLD}") is None  # the entry is not the key
    assert [p.name for p in ring.names() if p.role is Role.service] == ["edge1", "edge2"]


def test_both_keys_of_a_rotating_name_spend_one_rate_limit() -> None:
    ring = KeyRing(
        _settings(operator_keys=[f"alice:{EDGE1_OLD}", f"alice:{EDGE1_NEW}"], rate_limit_rps=1)
    )
    # burst 2 for the name, whichever key spends it
    assert ring.check(EDGE1_OLD).allowed
    assert ring.check(EDGE1_NEW).allowed
    assert not ring.check(EDGE1_OLD).allowed
    assert not ring.check(EDGE1_NEW).allowed


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"service_keys": [f"Edge1:{EDGE1_OLD}"]}, "key name"),
        ({"service_keys": ["edge1:short"]}, "at least 16"),
        ({"service_keys": [f"edge1:{EDGE1_OLD}", f"edge2:{EDGE1_OLD}"]}, "listed once"),
        ({"service_keys": [f"x:{EDGE1_OLD}"], "operator_keys": [f"x:{ALICE}"]}, "two roles"),
        ({"service_keys": [f"edge1:{EDGE1_OLD}"], "viewer_keys": [EDGE1_OLD]}, "listed once"),
    ],
)
def test_settings_refuse_bad_key_entries(keys: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(**keys)


# --- never a key in a URL ------------------------------------------------------------------------


def test_a_key_in_the_query_string_is_refused_even_with_a_good_header(
    start_central: StartCentral,
) -> None:
    svc = start_central()
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator:
        assert operator.get("/v1/hosts").status_code == 200
        for path in (
            f"/v1/hosts?api_key={OPERATOR_KEY}",
            f"/v1/fleet?key={VIEWER_KEY}",
            f"/v1/claims?x={SERVICE_KEY}",  # a live key under any parameter name
            f"/v1/channels?access_token={VIEWER_KEY}",
            f"/v1/players?apikey={VIEWER_KEY}",
            f"/v1/live?api_key={OPERATOR_KEY}",
            f"/v1/audit?api_key={OPERATOR_KEY}",
            f"/dashboard?api_key={OPERATOR_KEY}",
        ):
            r = operator.get(path)
            assert r.status_code == 401, path
            error = r.json()["error"]
            assert error["code"] == "key_in_url", path
            assert "X-API-Key header" in error["message"]
    # The claim fast path hands such a request to the route, which refuses it the same way.
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        Agent("edge0", 1).beat(service)
        r = service.post(f"/v1/claims?api_key={SERVICE_KEY}", json=claim_body("id:a", "edge0"))
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "key_in_url"
        r = service.delete(f"/v1/claims/whatever?api_key={SERVICE_KEY}")
        assert r.json()["error"]["code"] == "key_in_url"
        assert service.post("/v1/claims", json=claim_body("id:a", "edge0")).status_code == 200


def test_the_live_websocket_says_why_a_key_in_its_url_is_refused(
    start_central: StartCentral,
) -> None:
    svc = start_central()
    url = f"ws://127.0.0.1:{svc.port}/v1/live/ws?api_key={VIEWER_KEY}"
    with (
        connect(url, additional_headers={"X-API-Key": VIEWER_KEY}) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert "no API key in the URL" in closed.value.rcvd.reason


def test_whoami_names_the_key(tmp_path: Path) -> None:
    """Two keys of one name (a rotation in progress) are the same principal to central."""
    settings = CentralSettings(
        listen_port=procs.free_port(),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        service_keys=[f"edge1:{EDGE1_OLD}"],
        operator_keys=[f"alice:{ALICE}", f"alice:{EDGE1_NEW}"],
        viewer_keys=[BARE],
    )
    svc = ThreadCentral(settings)
    try:
        for key, expected in (
            (ALICE, {"name": "alice", "role": "operator"}),
            (EDGE1_NEW, {"name": "alice", "role": "operator"}),
            (EDGE1_OLD, {"name": "edge1", "role": "service"}),
            (BARE, {"name": parse_key(BARE, Role.viewer)[0], "role": "viewer"}),
        ):
            r = httpx.get(f"{svc.url}/v1/whoami", headers={"X-API-Key": key})
            assert r.json() == expected
        assert httpx.get(f"{svc.url}/v1/whoami").status_code == 401
    finally:
        svc.stop()
