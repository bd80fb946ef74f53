"""``acefleet check-config INVENTORY``: what the fleet needs from an Ansible inventory, checked
before a rollout (the roles' preflights check the same on the hosts, one failure at a time).

The inventory is read with ``ansible-inventory -i DIR --list`` (group_vars and host_vars
included, templates left as written). Checks: at least one host in each of the groups
``control``, ``edges`` and ``lb``; the API keys and the VRRP password each host's roles use are
set, long enough and (outside ``acefleet_environment: lab``) not the example placeholders; the
ports each host listens on do not clash; an edge's engine pool sizes are coherent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acefleetctl.errors import CliError, Exit

GROUPS = ("control", "edges", "lb")
# The same pattern as the roles' preflight asserts (roles/central/tasks/preflight.yml).
PLACEHOLDER = re.compile(r"(?i)^lab-|change-?me|placeholder|example")
VRRP_PLACEHOLDER = re.compile(r"(?i)^lab|change|example")
MIN_KEY_LENGTH = 16
VRRP_MAX_LENGTH = 8
# The secrets each group's roles read (roles/*/defaults/main.yml take them from these vault_*).
SECRETS = {
    "control": ("vault_acefleet_service_api_key", "vault_acefleet_operator_api_key"),
    "edges": ("vault_acefleet_service_api_key", "vault_acefleet_agent_api_key"),
    "lb": ("vault_keepalived_auth_pass",),
}
# The ports a host of each group listens on, with the roles' defaults (roles/acefleet and
# roles/haproxy defaults/main.yml; tests/cli check these against those files).
PORTS: dict[str, dict[str, Any]] = {
    "edges": {
        "acefleet_proxy_port": 6880,
        "acefleet_agent_port": 8100,
        "acefleet_agent_check_port": 8101,
    },
    "control": {"acefleet_central_port": 8000},
    "lb": {
        "haproxy_frontend_port": 80,
        "haproxy_control_port": "{{ acefleet_central_port }}",
        "acefleet_haproxy_health_port": 8405,
    },
}
PORT_DEFAULTS = {name: value for ports in PORTS.values() for name, value in ports.items()}
# roles/agent/defaults/main.yml
POOL_DEFAULTS = {"agent_min_engines": 1, "agent_free_engines": 1, "agent_max_engines": 10}
_SIMPLE_TEMPLATE = re.compile(r"^\{\{\s*(\w+)\s*\}\}$")


@dataclass(frozen=True)
class Problem:
    host: str | None  # None: the inventory as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.host}: {self.message}" if self.host else self.message


def load(directory: Path) -> dict[str, Any]:
    """The inventory as ``ansible-inventory --list`` prints it."""
    if not directory.exists():
        raise CliError(Exit.usage, f"inventory {directory} does not exist")
    exe = shutil.which("ansible-inventory")
    if exe is None:
        raise CliError(
            Exit.other,
            "ansible-inventory is missing: install ansible-core (pip install 'acefleet[dev]')",
        )
    done = subprocess.run(
        [exe, "-i", str(directory), "--list"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise CliError(
            Exit.other, f"ansible-inventory could not read {directory}: {' '.join(detail[-3:])}"
        )
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def group_hosts(data: Mapping[str, Any], group: str) -> set[str]:
    """Every host in ``group`` and its child groups."""
    entry = data.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts |= group_hosts(data, child)
    return hosts


def check(data: Mapping[str, Any]) -> list[Problem]:
    """Every problem found, in a stable order (groups, then hosts by name)."""
    hostvars: Mapping[str, Mapping[str, Any]] = data.get("_meta", {}).get("hostvars", {})
    members = {g: group_hosts(data, g) for g in GROUPS}
    problems = [
        Problem(None, f"group {g} has no hosts (the fleet needs at least one)")
        for g in GROUPS
        if not members[g]
    ]
    every = sorted(set().union(*members.values()))
    for host in every:
        groups = [g for g in GROUPS if host in members[g]]
        variables = hostvars.get(host, {})
        problems += _secrets(host, groups, variables)
        problems += _ports(host, groups, variables)
        if "edges" in groups:
            problems += _pool(host, variables)
    return problems


def _secrets(host: str, groups: list[str], variables: Mapping[str, Any]) -> list[Problem]:
    lab = str(variables.get("acefleet_environment", "production")) == "lab"
    names = sorted({name for g in groups for name in SECRETS[g]})
    problems = []
    for name in names:
        value = variables.get(name)
        if isinstance(value, dict) and "__ansible_vault" in value:
            continue  # encrypted with ansible-vault: set, and only the vault password reveals it
        if value is None or value == "":
            problems.append(Problem(host, f"{name} is not set"))
            continue
        text = str(value)
        if "{{" in text:
            continue  # a template: its value exists only on the controller at run time
        vrrp = name == "vault_keepalived_auth_pass"
        pattern = VRRP_PLACEHOLDER if vrrp else PLACEHOLDER
        if not lab and pattern.search(text):
            problems.append(
                Problem(host, f"{name} is an example placeholder (acefleet_environment is not lab)")
            )
        if vrrp and len(text) > VRRP_MAX_LENGTH:
            problems.append(Problem(host, f"{name} is longer than {VRRP_MAX_LENGTH} characters"))
        if not vrrp and len(text) < MIN_KEY_LENGTH:
            problems.append(Problem(host, f"{name} is shorter than {MIN_KEY_LENGTH} characters"))
    return problems


def _value(name: str, variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
    """A variable's value, following one ``{{ other }}`` indirection (ports default that way)."""
    value = variables.get(name, defaults.get(name))
    for _ in range(3):
        match = _SIMPLE_TEMPLATE.match(value) if isinstance(value, str) else None
        if match is None:
            break
        value = variables.get(match[1], defaults.get(match[1]))
    return value


def _ports(host: str, groups: list[str], variables: Mapping[str, Any]) -> list[Problem]:
    problems = []
    used: dict[int, list[str]] = {}
    for name in sorted({name for g in groups for name in PORTS[g]}):
        value = _value(name, variables, PORT_DEFAULTS)
        if isinstance(value, str) and "{{" in value:
            continue  # computed at run time; the role's own checks see it
        try:
            port = int(value)
        except (TypeError, ValueError):
            problems.append(Problem(host, f"{name} is {value!r}, not a port number"))
            continue
        if name == "haproxy_control_port" and port == 0:
            continue  # 0 turns the operator frontend off
        if not 1 <= port <= 65535:
            problems.append(Problem(host, f"{name} is {port}, not a port number (1-65535)"))
            continue
        used.setdefault(port, []).append(name)
    for port, names in sorted(used.items()):
        if len(names) > 1:
            problems.append(Problem(host, f"{' and '.join(names)} share port {port}"))
    return problems


def _pool(host: str, variables: Mapping[str, Any]) -> list[Problem]:
    try:
        sizes = {n: int(_value(n, variables, POOL_DEFAULTS)) for n in POOL_DEFAULTS}
    except (TypeError, ValueError):
        return []  # templated sizes: the agent role's preflight checks them on the host
    top = sizes["agent_max_engines"]
    return [
        Problem(host, f"{n} ({sizes[n]}) exceeds agent_max_engines ({top})")
        for n in ("agent_min_engines", "agent_free_engines")
        if sizes[n] > top
    ]


def summary(data: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{len(group_hosts(data, g))} {g}" for g in GROUPS)
    return f"inventory ok: {counts}"
