"""The HAProxy role's template rendered for a test on loopback: the role's own defaults, a test
inventory and a few overrides (ports, fast checks), through a real ansible-playbook run."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def loopback_inventory(edges: tuple[str, ...], central: str) -> str:
    """An inventory of the control host ``central`` on 127.0.0.30 and ``edges`` on 127.0.0.31
    onwards, each on its own loopback address as they are deployed."""
    hosts = "".join(
        f"        {name}:\n          acefleet_address: 127.0.0.{31 + n}\n"
        for n, name in enumerate(edges)
    )
    return (
        "all:\n  children:\n    edges:\n      hosts:\n" + hosts + "    control:\n      hosts:\n"
        f"        {central}:\n          acefleet_address: 127.0.0.30\n"
    )


def render_haproxy(
    tmp_path: Path, inventory_yaml: str, front: int, sock: Path, **overrides: object
) -> Path:
    """haproxy.cfg for ``inventory_yaml``, listening on loopback ``front``; ``overrides`` are
    extra variables (acefleet_proxy_port, acefleet_central_port, …), applied last."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(inventory_yaml)
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK)
    out = tmp_path / "haproxy.cfg"
    shared = ROOT / "roles" / "acefleet" / "defaults" / "main.yml"
    defaults = ROOT / "roles" / "haproxy" / "defaults" / "main.yml"
    values: dict[str, object] = {
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
        **overrides,
    }
    extra = ["-e", f"@{shared}", "-e", f"@{defaults}"]
    for name, value in values.items():
        extra += ["-e", f"{name}={value}"]
    env = {"ROLE_TEMPLATES": str(ROOT / "roles" / "haproxy" / "templates"), "OUT": str(out)}
    ansible.playbook(playbook, str(inventory), *extra, env=env)
    # The role binds every address (the VIP among them); here only loopback.
    out.write_text(out.read_text().replace("    bind :", "    bind 127.0.0.1:"))
    return out


def server_states(sock: Path, backend: str) -> dict[str, str]:
    """Each server of ``backend`` → its operational state (0 down, 2 up), from HAProxy's
    runtime socket ``sock``."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(f"show servers state {backend}\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = [ln.split() for ln in data.decode().splitlines() if ln and not ln.startswith("#")]
    return {row[3]: row[5] for row in rows if len(row) > 5}


class Backend(ThreadingHTTPServer):
    """A stand-in for central or an edge's proxy behind HAProxy, on its own loopback address:
    named, it keeps the paths it was asked for; a subclass names its ``handler``."""

    daemon_threads = True
    allow_reuse_address = True
    handler: type[BaseHTTPRequestHandler]

    def __init__(self, name: str, address: str, port: int) -> None:
        super().__init__((address, port), self.handler)
        self.name = name
        self.requests: list[str] = []

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's checks and cut connections reset sockets: nothing to report
