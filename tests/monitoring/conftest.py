"""The monitoring role's templates rendered by Ansible's real template module (the role's
defaults and the acefleet role's shared values, a lab-shaped inventory), once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ansible

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring"
RULES_TESTS = ROLE / "files" / "rules_tests"

INVENTORY = """
all:
  children:
    lb:
      hosts:
        lb1: {keepalived_vip: 172.30.77.250}
        lb2: {keepalived_vip: 172.30.77.250}
    control:
      hosts:
        control1:
    edges:
      hosts:
        edge1:
        edge2: {acefleet_address: 10.0.0.32, agent_listen_host: 0.0.0.0}
"""

RENDER_PLAYBOOK = """
- hosts: control1
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  vars_files:
    - "{{ lookup('env', 'SHARED') }}"
    - "{{ lookup('env', 'DEFAULTS') }}"
  tasks:
    - ansible.builtin.template:
        src: "{{ lookup('env', 'TEMPLATES') }}/{{ item.src }}"
        dest: "{{ lookup('env', 'OUT') }}/{{ item.dest }}"
        mode: "0644"
      loop:
        - {src: acefleet.rules.yml.j2, dest: acefleet.rules.yml}
        - {src: prometheus.yml.j2, dest: prometheus.yml}
"""


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with acefleet.rules.yml and prometheus.yml as the role writes them."""
    out = tmp_path_factory.mktemp("monitoring")
    (out / "hosts.yml").write_text(INVENTORY)
    (out / "render.yml").write_text(RENDER_PLAYBOOK)
    env = {
        "SHARED": str(ROOT / "roles" / "acefleet" / "defaults" / "main.yml"),
        "DEFAULTS": str(ROLE / "defaults" / "main.yml"),
        "TEMPLATES": str(ROLE / "templates"),
        "OUT": str(out),
    }
    ansible.playbook(out / "render.yml", str(out / "hosts.yml"), env=env)
    return out
