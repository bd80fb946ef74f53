"""The tunnels file and the VPN settings around it: what the agent refuses to start with, and why
(pure Python: settings validation only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.agent.settings import AgentSettings

KEY = "agent-test-key-0123456789"
VPN_KEY = "vpn-control-key-0123"


def spec(name: str = "t1", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "provider": "protonvpn",
        "credentials": {"WIREGUARD_PRIVATE_KEY": "private-key-of-" + name},
    }
    base.update(over)
    return base


def write(tmp_path: Path, content: Any, mode: int = 0o600) -> str:
    path = tmp_path / "tunnels.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    path.chmod(mode)
    return str(path)


def settings(path: str, **over: Any) -> AgentSettings:
    values: dict[str, Any] = {"api_key": KEY, "vpn_tunnels_file": path, "vpn_api_key": VPN_KEY}
    values.update(over)
    return AgentSettings(**values)


def refused(path: str, **over: Any) -> str:
    with pytest.raises(ValidationError) as info:
        settings(path, **over)
    return str(info.value)


def test_a_valid_file_gives_the_tunnels_with_their_defaults(tmp_path: Path) -> None:
    s = settings(write(tmp_path, [spec("t1"), spec("t2", engines=2, port_forwarding=False)]))
    assert [t.name for t in s.tunnels] == ["t1", "t2"]
    t1, t2 = s.tunnels
    assert (t1.engines, t1.port_forwarding, t1.rotate_after_s, t1.vpn_type) == (
        4,
        True,
        0,
        "wireguard",
    )
    assert t2.engines == 2
    env = t2.container_env()
    assert env["VPN_PORT_FORWARDING"] == "off"
    assert env["VPN_SERVICE_PROVIDER"] == "protonvpn"
    assert env["WIREGUARD_PRIVATE_KEY"] == "private-key-of-t2"
    # the credentials never show in the settings' text
    assert "private-key-of" not in repr(s)
    assert AgentSettings(api_key=KEY).tunnels == []


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    message = refused(write(tmp_path, [spec()], mode=0o640))
    assert "group/world accessible" in message
    assert "chmod 600" in message
    assert "0640" in message


def test_unreadable_or_invalid_files_are_refused_precisely(tmp_path: Path) -> None:
    assert "cannot read it" in refused(str(tmp_path / "missing.json"))
    assert "not valid JSON" in refused(write(tmp_path, "[{"))
    assert "non-empty JSON list" in refused(write(tmp_path, {"name": "t1"}))
    assert "non-empty JSON list" in refused(write(tmp_path, []))


def test_a_tunnel_without_credentials_is_refused(tmp_path: Path) -> None:
    message = refused(write(tmp_path, [spec("t1"), spec("t2", credentials={})]))
    assert "tunnel 1 ('t2')" in message
    assert "credentials are required" in message
    message = refused(write(tmp_path, [spec("t1", credentials={"OPENVPN_PASSWORD": " "})]))
    assert "credential OPENVPN_PASSWORD is empty" in message
    no_field = spec("t1")
    del no_field["credentials"]
    assert "credentials: Field required" in refused(write(tmp_path, [no_field]))


def test_bad_specs_name_the_tunnel_and_field(tmp_path: Path) -> None:
    cases = [
        ([spec("T1")], "name: String should match pattern"),
        ([spec("t1"), spec("t1")], "tunnel names must be unique: ['t1']"),
        ([spec("t1", engines=0)], "engines: Input should be greater than or equal to 1"),
        ([spec("t1", engines=33)], "engines: Input should be less than or equal to 32"),
        ([spec("t1", vpn_type="pptp")], "vpn_type: Input should be 'wireguard' or 'openvpn'"),
        ([spec("t1", colour="blue")], "colour: Extra inputs are not permitted"),
        ([spec("t1", env={"VPN_TYPE": "openvpn"})], "VPN_TYPE is set by the agent"),
        ([spec("t1", env={"server-countries": "NL"})], "is not an environment variable name"),
    ]
    for content, expected in cases:
        message = refused(write(tmp_path, content))
        assert expected in message, (content, message)


def test_tunnels_need_a_real_control_key_and_no_other_namespace(tmp_path: Path) -> None:
    path = write(tmp_path, [spec()])
    assert "vpn_api_key must be a real secret" in refused(path, vpn_api_key="")
    assert "vpn_api_key must be a real secret" in refused(path, vpn_api_key="changeme")
    message = refused(path, vpn_container="gluetun")
    assert "set only one of vpn_tunnels_file, vpn_container" in message
    message = refused(path, engine_network_container="holder")
    assert "set only one of vpn_tunnels_file, engine_network_container" in message
    # the legacy pair is still refused as before
    with pytest.raises(ValidationError, match="set only one of vpn_container"):
        AgentSettings(api_key=KEY, vpn_container="a", engine_network_container="b")


def test_the_port_range_must_hold_every_tunnel_twice(tmp_path: Path) -> None:
    path = write(tmp_path, [spec("t1", engines=4), spec("t2", engines=4)])
    message = refused(path, http_port_range="19000-19014")
    assert "http_port_range has 15 ports; the tunnels need 16" in message
    assert len(settings(path, http_port_range="19000-19015").tunnels) == 2
