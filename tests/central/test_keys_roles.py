"""The roles' keys per instance: every proxy and agent gets its own service key, and central's
list names each one (<host>-proxy, <host>-agent), so central tells the instances apart; a
rotation keeps the old keys valid, under the same names, until the previous secret is dropped.
Real ansible-playbook runs of the roles' variables (their preflights) on loopback hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.central.auth import KeyRing, Principal, Role
from orchestrator.central.settings import CentralSettings
from tests.support import ansible

ROOT = Path(__file__).resolve().parents[2]
LAB_VAULT = ROOT / "inventories" / "lab" / "group_vars" / "all" / "vault.yml"
EDGES = ("edge1", "Edge-2")

INVENTORY = """
all:
  vars:
    ansible_connection: local
  children:
    control:
      hosts:
        control1:
    edges:
      hosts:
        edge1:
        Edge-2:
"""

# The roles' variables as their tasks see them (public: true keeps them for the next task).
PLAY = """
- hosts: control1
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: central
        tasks_from: preflight
        public: true
    - ansible.builtin.copy:
        content: "{{ {'service': central_service_keys, 'operator': central_operator_keys}
                     | to_json }}"
        dest: "{{ out }}/central.json"
      delegate_to: localhost
- hosts: edges
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: "{{ item }}"
        tasks_from: preflight
        public: true
      loop: [proxy, agent]
    - ansible.builtin.copy:
        content: "{{ {'proxy': proxy_central_api_key, 'agent': agent_central_api_key} | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.json"
      delegate_to: localhost
"""


def _render(tmp_path: Path, **extra: str) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    (tmp_path / "play.yml").write_text(PLAY)
    values = {"acefleet_environment": "lab", "out": str(out), **extra}
    (tmp_path / "extra.json").write_text(json.dumps(values))
    ansible.playbook(
        tmp_path / "play.yml",
        str(tmp_path / "hosts.yml"),
        "-e",
        f"@{LAB_VAULT}",
        "-e",
        f"@{tmp_path / 'extra.json'}",
    )
    central = json.loads((out / "central.json").read_text())
    edges = {host: json.loads((out / f"{host}.json").read_text()) for host in EDGES}
    return central, edges


def _ring(central: dict[str, Any]) -> KeyRing:
    return KeyRing(
        CentralSettings(service_keys=central["service"], operator_keys=central["operator"])
    )


@pytest.mark.slow
def test_every_proxy_and_agent_has_its_own_named_key(tmp_path: Path) -> None:
    central, edges = _render(tmp_path)
    ring = _ring(central)
    keys = [key for edge in edges.values() for key in edge.values()]
    assert len(set(keys)) == 4  # no two instances share a key
    for host, edge in edges.items():
        assert ring.identify(edge["proxy"]) == Principal(f"{host.lower()}-proxy", Role.service)
        assert ring.identify(edge["agent"]) == Principal(f"{host.lower()}-agent", Role.service)
    vault = LAB_VAULT.read_text()
    assert "vault_acefleet_service_api_key: lab-service-key" in vault
    assert ring.identify("lab-service-key-0123456789") is None  # the secret is not a key
    operator = ring.identify("lab-operator-key-0123456789")
    assert operator == Principal("operator", Role.operator)


@pytest.mark.slow
def test_a_rotation_keeps_the_old_keys_under_their_names_until_dropped(tmp_path: Path) -> None:
    _, old = _render(tmp_path)
    new_secret = "lab-service-key-rotated-0123456789"
    central, new = _render(
        tmp_path,
        vault_acefleet_service_api_key=new_secret,
        vault_acefleet_service_api_key_previous="lab-service-key-0123456789",
    )
    ring = _ring(central)
    for host in EDGES:
        assert new[host]["proxy"] != old[host]["proxy"]
        for keys in (old[host], new[host]):  # both generations, one name
            assert ring.identify(keys["proxy"]) == Principal(f"{host.lower()}-proxy", Role.service)
    done, _ = _render(tmp_path, vault_acefleet_service_api_key=new_secret)
    ring = _ring(done)
    assert ring.identify(old["edge1"]["proxy"]) is None
    assert ring.identify(new["edge1"]["proxy"]) == Principal("edge1-proxy", Role.service)
