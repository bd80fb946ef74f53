"""The role provisions the dashboards only into the operator's Grafana directories, through its
real tasks (tasks_from: grafana) run against a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.monitoring.conftest import ROLE
from tests.support import ansible

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - ansible.builtin.include_role:
        name: acefleet.fleet.monitoring
        tasks_from: grafana
      vars:
        monitoring_grafana_dashboards_dir: "{{ lookup('env', 'DASHBOARDS') }}"
        monitoring_grafana_provisioning_dir: "{{ lookup('env', 'PROVISIONING') }}"
"""


def test_dashboards_and_provider_land_in_grafanas_directories(tmp_path: Path) -> None:
    dashboards, provisioning = tmp_path / "dashboards" / "acefleet", tmp_path / "provisioning"
    provisioning.mkdir()
    (tmp_path / "grafana.yml").write_text(PLAYBOOK)
    env = {"DASHBOARDS": str(dashboards), "PROVISIONING": str(provisioning)}
    ansible.playbook(tmp_path / "grafana.yml", "localhost,", env=env)
    shipped = sorted(p.name for p in (ROLE / "files" / "dashboards").glob("*.json"))
    assert sorted(p.name for p in dashboards.glob("*.json")) == shipped
    for name in shipped:
        assert json.loads((dashboards / name).read_text())["uid"].startswith("acefleet-")
    provider = yaml.safe_load((provisioning / "acefleet.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == str(dashboards)
    assert provider["providers"][0]["type"] == "file"
