"""The agent role's VPN tunnels (issue 18): agent_vpn_tunnels is rendered into the agent's tunnels
file, 0600 and owned by the agent's user (it holds the VPN credentials), as the JSON list the
agent reads, with the defaults filled in; the agent's config names that file only when there are
tunnels, and the real acefleet-agent accepts both. The preflight refuses, before anything is
installed and with a message saying what to change, what the agent would refuse (a tunnel without
credentials, a malformed or repeated name, tunnels next to another network namespace for the
engines) and, outside the lab, placeholder secrets; the credentials never show in the output."""

from __future__ import annotations

import copy
import grp
import json
import os
import pwd
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ansible

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "roles" / "agent"
LAB = ROOT / "inventories" / "lab" / "group_vars"
LAB_VAULT = LAB / "all" / "vault.yml"
LAB_VPN = LAB / "edges" / "vpn.yml"
LAB_ENGINES = LAB / "edges" / "engines.yml"
# Real-looking secrets for the runs outside the lab (none of the placeholder patterns).
REAL = {
    "vault_acefleet_service_api_key": "s" * 24,
    "vault_acefleet_operator_api_key": "o" * 24,
    "vault_acefleet_agent_api_key": "g" * 24,
    "vault_acefleet_vpn_api_key": "v" * 24,
    "vault_acefleet_vpn_t1_private_key": "wg-private-key-of-t1-AAAAAAAAAAAAAAAA=",
    "vault_acefleet_vpn_t2_private_key": "wg-private-key-of-t2-BBBBBBBBBBBBBBBB=",
}

PREFLIGHT = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: agent
        tasks_from: preflight
"""

RENDER = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: agent
        tasks_from: vpn_tunnels
        public: true
    - ansible.builtin.template:
        src: "{{ lookup('env', 'TEMPLATES') }}/service.toml.j2"
        dest: "{{ lookup('env', 'OUT') }}/acefleet-agent.toml"
        mode: "0600"
    - ansible.builtin.include_role:
        name: agent
        tasks_from: vpn_tunnels_cleanup
"""


def _lab_tunnels() -> list[dict[str, Any]]:
    tunnels = yaml.safe_load(LAB_VPN.read_text())["agent_vpn_tunnels"]
    assert isinstance(tunnels, list)
    return tunnels


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _preflight(
    tmp_path: Path, environment: str = "lab", secrets: dict[str, str] | None = None, **values: Any
) -> subprocess.CompletedProcess[str]:
    """The agent role's preflight with the lab's edge settings (engines.yml, vpn.yml) and vault,
    then ``secrets`` and ``values`` on top."""
    playbook = _write(tmp_path, "preflight.yml", PREFLIGHT)
    extra = _write(
        tmp_path,
        "extra.json",
        json.dumps({"acefleet_environment": environment, **(secrets or {}), **values}),
    )
    args = ["-e", f"@{LAB_VAULT}", "-e", f"@{LAB_ENGINES}", "-e", f"@{LAB_VPN}"]
    return ansible.playbook(playbook, "localhost,", *args, "-e", f"@{extra}", check=False)


def _secrets_in(output: str, tunnels: list[dict[str, Any]]) -> list[str]:
    found = []
    for tunnel in tunnels:
        for value in (tunnel.get("credentials") or {}).values():
            if isinstance(value, str) and value and "{{" not in value and value in output:
                found.append(value)
    return found


@pytest.mark.slow
def test_the_lab_tunnels_pass_in_the_lab_and_need_real_secrets_elsewhere(tmp_path: Path) -> None:
    done = _preflight(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    refused = _preflight(tmp_path, "production", {k: v for k, v in REAL.items() if "vpn" not in k})
    assert refused.returncode != 0
    assert "VPN tunnel's credentials are placeholders" in refused.stdout, refused.stdout
    assert "lab-wg-" not in refused.stdout  # the placeholder credential itself is not shown
    done = _preflight(tmp_path, "production", REAL)
    assert done.returncode == 0, done.stdout + done.stderr


def _without(key: str) -> list[dict[str, Any]]:
    tunnels = copy.deepcopy(_lab_tunnels())
    del tunnels[1][key]
    return tunnels


def _with(**second: Any) -> list[dict[str, Any]]:
    tunnels = copy.deepcopy(_lab_tunnels())
    tunnels[1].update(second)
    return tunnels


@pytest.mark.slow
@pytest.mark.parametrize(
    "tunnels",
    [
        _without("credentials"),
        _with(credentials={}),
        _with(credentials={"WIREGUARD_PRIVATE_KEY": ""}),
        _with(credentials={"WIREGUARD_PRIVATE_KEY": "  "}),
    ],
    ids=["no-credentials", "empty-credentials", "empty-key", "blank-key"],
)
def test_preflight_refuses_a_tunnel_without_credentials(
    tmp_path: Path, tunnels: list[dict[str, Any]]
) -> None:
    done = _preflight(tmp_path, secrets=REAL, agent_vpn_tunnels=tunnels)
    assert done.returncode != 0, done.stdout
    assert "agent: every VPN tunnel needs its own credentials" in done.stdout, done.stdout
    # the first tunnel's key (which is fine) is not in the output either
    assert REAL["vault_acefleet_vpn_t1_private_key"] not in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"agent_vpn_tunnels": _with(name="t1")}, "that no other tunnel of the edge has"),
        ({"agent_vpn_tunnels": _with(name="T2")}, "that no other tunnel of the edge has"),
        ({"agent_vpn_tunnels": _with(name="a-name-of-17-char")}, "a name of 1-16 characters"),
        ({"agent_vpn_tunnels": _without("name")}, "a name of 1-16 characters"),
        ({"agent_vpn_tunnels": _with(vpn_type="ipsec")}, "vpn_type wireguard or openvpn"),
        ({"agent_vpn_tunnels": _with(engines=0)}, "engines from 1 to 32"),
        ({"agent_vpn_tunnels": _with(env={"VPN_TYPE": "openvpn"})}, "the agent"),
        ({"agent_vpn_tunnels": _with(server="nl1")}, "with only the keys"),
        ({"agent_engine_network_container": "edge1"}, "leave agent_engine_network_container"),
        ({"agent_settings": {"vpn_container": "gluetun"}}, "the legacy"),
        ({"vault_acefleet_vpn_api_key": "short"}, "at least 12 characters"),
        ({"agent_vpn_rotation_timeout_s": 601}, "agent_vpn_rotation_timeout_s above 0 and at most"),
    ],
    ids=[
        "duplicate-name",
        "upper-case-name",
        "long-name",
        "no-name",
        "vpn-type",
        "no-engines",
        "reserved-env",
        "unknown-key",
        "with-engine-network-container",
        "with-legacy-vpn-container",
        "short-api-key",
        "long-rotation-timeout",
    ],
)
def test_preflight_refuses_what_the_agent_would_refuse(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    done = _preflight(tmp_path, secrets=REAL, **values)
    assert done.returncode != 0, done.stdout
    assert message in done.stdout, done.stdout
    assert not _secrets_in(done.stdout + done.stderr, values.get("agent_vpn_tunnels", []))


def _service_vars() -> dict[str, Any]:
    """The vars the agent role hands to the acefleet role's service tasks (its config)."""
    for task in yaml.safe_load((AGENT / "tasks" / "main.yml").read_text()):
        include = task.get("ansible.builtin.include_role")
        if include and include.get("tasks_from") == "service":
            return dict(task["vars"])
    raise AssertionError("the agent role installs no service")


def _render(tmp_path: Path, owner: str, group: str, tunnels: object) -> tuple[str, str]:
    """Run the role's tunnels tasks and render the agent's config with ``tunnels`` into
    ``tmp_path``/etc: (ansible's output, the config)."""
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    playbook = _write(tmp_path, "render.yml", RENDER)
    extra = _write(
        tmp_path,
        "render.json",
        json.dumps(
            {
                "acefleet_config_dir": str(etc),
                "acefleet_user": owner,
                "acefleet_group": group,
                "acefleet_environment": "lab",
                # the agent alone (no central in this inventory)
                "acefleet_central_url": "",
                "agent_socket_group": "docker",
                "agent_vpn_tunnels": tunnels,
                "ansible_python_interpreter": sys.executable,
            }
        ),
    )
    service = _write(tmp_path, "service.yml", yaml.safe_dump(_service_vars()))
    args = ["-e", f"@{ROOT / 'roles' / 'acefleet' / 'defaults' / 'main.yml'}", "-e", f"@{service}"]
    args += ["-e", f"@{LAB_VAULT}", "-e", f"@{LAB_ENGINES}", "-e", f"@{LAB_VPN}"]
    env = {"TEMPLATES": str(ROOT / "roles" / "acefleet" / "templates"), "OUT": str(etc)}
    done = ansible.playbook(
        playbook, "localhost,", *args, "-e", f"@{extra}", "-v", env=env, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr, (etc / "acefleet-agent.toml").read_text()


def _check_config(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = _write(tmp_path, "check.toml", config)
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "acefleet-agent"), "--check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tunnels_file(config: str) -> Path:
    found = re.search(r'^vpn_tunnels_file = "([^"]+)"$', config, re.M)
    assert found, config
    return Path(found.group(1))


@pytest.mark.slow
def test_the_tunnels_file_is_rendered_0600_for_the_agent(tmp_path: Path) -> None:
    # owned by the agent's user: another user than the one running the play, when we can
    owner = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(pwd.getpwnam(owner).pw_gid).gr_name
    lab = yaml.safe_load(LAB_VAULT.read_text())
    tunnels = copy.deepcopy(_lab_tunnels())
    # the second tunnel leaves every optional key to its default
    tunnels[1] = {
        "name": "t2",
        "provider": "mullvad",
        "credentials": {"WIREGUARD_PRIVATE_KEY": "{{ vault_acefleet_vpn_t2_private_key }}"},
    }
    output, config = _render(tmp_path, owner, group, tunnels)

    # the agent's config names the file, in the config directory...
    path = _tunnels_file(config)
    assert path.parent == tmp_path / "etc"
    assert path.name.startswith("acefleet-agent-tunnels-")
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == pwd.getpwnam(owner).pw_uid
    assert json.loads(path.read_text()) == [
        {
            "name": "t1",
            "provider": "protonvpn",
            "vpn_type": "wireguard",
            "credentials": {"WIREGUARD_PRIVATE_KEY": lab["vault_acefleet_vpn_t1_private_key"]},
            "env": {"SERVER_COUNTRIES": "Netherlands"},
            "engines": 4,
            "port_forwarding": True,
            "rotate_after_s": 0,
        },
        {
            "name": "t2",
            "provider": "mullvad",
            "vpn_type": "wireguard",
            "credentials": {"WIREGUARD_PRIVATE_KEY": lab["vault_acefleet_vpn_t2_private_key"]},
            "env": {},
            "engines": 4,
            "port_forwarding": True,
            "rotate_after_s": 0,
        },
    ]
    # no_log: the credentials are not in the play's (verbose) output
    assert lab["vault_acefleet_vpn_t1_private_key"] not in output
    assert lab["vault_acefleet_vpn_t2_private_key"] not in output

    # the agent announces a URL central can call (its API listens on 0.0.0.0 in the lab): never
    # the wildcard address, which made central unable to forward a rotation
    assert re.search(r'^agent_url = "http://localhost:\d+"$', config, re.M), config
    # ...with the lab's tunnel settings...
    assert 'vpn_image = "acefleet/gluetun-standin:latest"' in config
    assert 'vpn_docker_network = "acefleet-lab"' in config
    assert 'vpn_tun_device = ""' in config
    assert "vpn_down_after_s = 10.0" in config
    assert "vpn_rotation_timeout_s = 120.0" in config
    # ...and the real agent accepts both (it reads the file: 0600, valid specs, credentials)
    done = _check_config(config, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # the file must stay private: the agent refuses it group-readable
    path.chmod(0o640)
    refused = _check_config(config, tmp_path)
    assert refused.returncode != 0
    assert str(path) in refused.stdout + refused.stderr  # the error names the file

    # a new credential is a new file, so a new config (the handler restarts a running agent);
    # the old file is gone once the config names the new one
    tunnels[1]["credentials"] = {"WIREGUARD_PRIVATE_KEY": "a-new-key-for-t2-0123456789"}
    _, second = _render(tmp_path, owner, group, tunnels)
    assert second != config
    assert _tunnels_file(second) != path
    assert sorted((tmp_path / "etc").glob("acefleet-agent-tunnels-*")) == [_tunnels_file(second)]
    assert stat.S_IMODE(_tunnels_file(second).stat().st_mode) == 0o600
    # the same tunnels again: the same file and config (no restart)
    _, again = _render(tmp_path, owner, group, tunnels)
    assert again == second

    # without tunnels the files go, and the config names none of the VPN settings
    _, config = _render(tmp_path, owner, group, [])
    assert not list((tmp_path / "etc").glob("acefleet-agent-tunnels-*"))
    assert "vpn_" not in config
    done = _check_config(config, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
