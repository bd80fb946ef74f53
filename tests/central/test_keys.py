"""Keys per instance: names, rotation with overlap, and the settings that refuse bad entries."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from orchestrator.central.auth import KeyRing, Principal, Role, parse_key
from orchestrator.central.settings import CentralSettings

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
