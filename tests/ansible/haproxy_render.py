"""The HAProxy role's template rendered for a test on loopback: the role's own defaults, a test
inventory and a few overrides (ports, fast checks), through a real ansible-playbook run."""

from __future__ import annotations

from pathlib import Path

from tests.support import ansible, procs

ROOT = Path(__file__).resolve().parents[2]

RENDER_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.template:
        src: "{{ lookup('env', 'ROLE_TEMPLATES') }}/haproxy.cfg.j2"
        dest: "{{ lookup('env', 'OUT') }}"
        mode: "0644"
"""


def render_haproxy(
    tmp_path: Path, inventory_yaml: str, front: int, sock: Path, **ports: int
) -> Path:
    """haproxy.cfg for ``inventory_yaml``, listening on loopback ``front``; ``ports`` are extra
    overrides (acefleet_proxy_port, acefleet_central_port, …)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(inventory_yaml)
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK)
    out = tmp_path / "haproxy.cfg"
    shared = ROOT / "roles" / "acefleet" / "defaults" / "main.yml"
    defaults = ROOT / "roles" / "haproxy" / "defaults" / "main.yml"
    overrides: dict[str, object] = {
        **ports,
        "haproxy_frontend_port": front,
        "haproxy_control_port": 0,
        "haproxy_check_interval": "200ms",
        "haproxy_check_rise": 1,
        "haproxy_maxconn": 1000,  # the role's 20000 needs more open files than a test process
        "acefleet_haproxy_socket": str(sock),
        "acefleet_haproxy_health_port": procs.free_port(),
        "acefleet_haproxy_metrics_port": procs.free_port(),
        # nothing listens there: an agent-check that cannot connect leaves the server as it is
        "acefleet_agent_check_port": procs.free_port(),
    }
    extra = ["-e", f"@{shared}", "-e", f"@{defaults}"]
    for name, value in overrides.items():
        extra += ["-e", f"{name}={value}"]
    env = {"ROLE_TEMPLATES": str(ROOT / "roles" / "haproxy" / "templates"), "OUT": str(out)}
    ansible.playbook(playbook, str(inventory), *extra, env=env)
    # The role binds every address (the VIP among them); here only loopback.
    out.write_text(out.read_text().replace("    bind :", "    bind 127.0.0.1:"))
    return out
