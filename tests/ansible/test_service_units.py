"""The acefleet services' units, rendered by a real ansible-playbook run from the roles' own
include vars: the proxy's unit reloads hitlessly (Type=notify, NotifyAccess=all for the new
process's MAINPID=, ExecReload=acefleet-proxy reload, a RuntimeDirectory for the control socket the
proxy's config names), the agent's and central's are unchanged; the handlers reload what can
reload and restart only on a new unit; the rolling update applies the roles of site.yml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ansible, tools

ROOT = Path(__file__).resolve().parents[2]
ACEFLEET = ROOT / "roles" / "acefleet"

RENDER_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.template:
        src: "{{ lookup('env', 'TEMPLATES') }}/service.service.j2"
        dest: "{{ lookup('env', 'OUT') }}/{{ acefleet_service_name }}.service"
        mode: "0644"
    - ansible.builtin.template:
        src: "{{ lookup('env', 'TEMPLATES') }}/service.toml.j2"
        dest: "{{ lookup('env', 'OUT') }}/{{ acefleet_service_name }}.toml"
        mode: "0644"
"""


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _service_vars(role: str) -> dict[str, Any]:
    """The vars a service role hands to the acefleet role's tasks_from=service."""
    for task in _load(ROOT / "roles" / role / "tasks" / "main.yml"):
        include = task.get("ansible.builtin.include_role")
        if include and include.get("tasks_from") == "service":
            return dict(task["vars"])
    raise AssertionError(f"{role}: no include of the acefleet role's service tasks")


def _render(tmp_path: Path, role: str, venv: Path) -> tuple[dict[str, str], str]:
    """(the unit's [Service] keys, the config) of ``role``, from the role's defaults and vars."""
    work = tmp_path / role
    work.mkdir()
    variables = work / "service-vars.yml"
    variables.write_text(yaml.safe_dump(_service_vars(role)))
    extra = ["-e", f"@{ACEFLEET / 'defaults' / 'main.yml'}"]
    for source in ("defaults", "vars"):
        path = ROOT / "roles" / role / source / "main.yml"
        if path.is_file():
            extra += ["-e", f"@{path}"]
    extra += ["-e", f"@{variables}", "-e", f"acefleet_venv={venv}"]
    extra += ["-e", f"ansible_python_interpreter={sys.executable}"]
    # facts the agent role reads from the host's Docker socket at run time
    extra += ["-e", "agent_socket_group=docker"]
    # the keys the lab's vault holds (the roles read them from vault_* variables)
    extra += ["-e", f"@{ROOT / 'inventories' / 'lab' / 'group_vars' / 'all' / 'vault.yml'}"]
    env = {"TEMPLATES": str(ACEFLEET / "templates"), "OUT": str(work)}
    ansible.playbook(tmp_path / "render.yml", "localhost,", *extra, env=env)
    name = _service_vars(role)["acefleet_service_name"]
    unit = (work / f"{name}.service").read_text()
    keys: dict[str, str] = {}
    section = ""
    for line in unit.splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys[key] = value
    (work / "unit").write_text(unit)
    return keys, (work / f"{name}.toml").read_text()


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A stand-in venv whose console scripts exist (systemd-analyze checks ExecStart)."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("acefleet-proxy", "acefleet-agent", "acefleet-central"):
        script = bin_dir / name
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    (tmp_path / "render.yml").write_text(RENDER_PLAYBOOK)
    return tmp_path / "venv"


def _verify(tmp_path: Path, role: str) -> None:
    """systemd's own check of the rendered unit (unknown keys, bad values)."""
    analyze = tools.require("systemd-analyze", "systemd")
    unit = tmp_path / role / "unit"
    name = _service_vars(role)["acefleet_service_name"]
    checked = tmp_path / role / "check" / f"{name}.service"
    checked.parent.mkdir()
    shutil.copy(unit, checked)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(checked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Only complaints about this unit count: the machine's own units are not ours to judge, and
    # the service user exists only on the hosts.
    ours = [
        ln
        for ln in (done.stdout + done.stderr).splitlines()
        if name in ln and "User" not in ln and "Group" not in ln
    ]
    assert not ours, "\n".join(ours)


@pytest.mark.slow
def test_the_proxy_unit_reloads_hitlessly(tmp_path: Path, venv: Path) -> None:
    keys, config = _render(tmp_path, "proxy", venv)
    assert keys["Type"] == "notify"
    assert keys["NotifyAccess"] == "all"  # the new process (a child) sends MAINPID= + READY=1
    assert keys["ExecReload"] == (
        f"{venv}/bin/acefleet-proxy reload --config /etc/acefleet/acefleet-proxy.toml"
    )
    assert keys["ExecStart"].endswith("--config /etc/acefleet/acefleet-proxy.toml")
    assert keys["RuntimeDirectory"] == "acefleet-proxy"
    assert keys["RuntimeDirectoryPreserve"] == "yes"
    handover = int(
        _load(ROOT / "roles" / "proxy" / "defaults" / "main.yml")["proxy_handover_timeout_s"]
    )
    # a reload (ExecReload) is bounded by TimeoutStartSec: it must outlast the takeover
    assert int(keys["TimeoutStartSec"]) > handover
    # the control socket the reload asks on is in that runtime directory
    assert 'handover_socket = "/run/acefleet-proxy/control.sock"' in config
    assert "standby_min_viewers = 0" in config  # the role's default: standby off
    _verify(tmp_path, "proxy")


@pytest.mark.slow
def test_the_agent_and_central_units_keep_exec_and_restarts(tmp_path: Path, venv: Path) -> None:
    for role in ("agent", "central"):
        keys, _ = _render(tmp_path, role, venv)
        assert keys["Type"] == "exec", role
        assert "ExecReload" not in keys, role
        assert "NotifyAccess" not in keys, role
        _verify(tmp_path, role)


def test_the_lab_keeps_a_standby_for_two_viewers() -> None:
    lab = _load(ROOT / "inventories" / "lab" / "group_vars" / "edges" / "proxy.yml")
    assert lab["proxy_standby_min_viewers"] == 2
    assert (
        _load(ROOT / "roles" / "proxy" / "defaults" / "main.yml")["proxy_standby_min_viewers"] == 0
    )


def test_config_changes_reload_and_only_a_new_unit_restarts() -> None:
    """The handlers restart the services noted for a restart and reload the others noted; the
    service tasks note a restart for a new unit (or a config change without a reload) and a
    reload for a config change of a unit that can reload; new code reloads what can reload."""
    handlers = {h["name"]: h for h in _load(ACEFLEET / "handlers" / "main.yml")}
    by_state: dict[str, list[str]] = {}
    for handler in handlers.values():
        systemd = handler.get("ansible.builtin.systemd_service")
        if systemd:
            by_state.setdefault(str(systemd["state"]), []).append(str(handler["loop"]))
    assert any("acefleet_services_to_restart" in loop for loop in by_state["restarted"])
    reloads = by_state["reloaded"]
    assert any("acefleet_services_to_reload" in loop for loop in reloads)
    # a service noted for both only restarts
    assert any("difference(acefleet_services_to_restart" in loop for loop in reloads)
    code = [
        h["ansible.builtin.systemd_service"]["state"]
        for h in handlers.values()
        if h["listen"] == "acefleet code changed" and "ansible.builtin.systemd_service" in h
    ]
    assert code == ["{{ 'reloaded' if item.stdout == 'yes' else 'restarted' }}"]
    tasks = {t["name"]: t for t in _load(ACEFLEET / "tasks" / "service.yml")}
    note = next(t for n, t in tasks.items() if n.startswith("Note whether a restart or a reload"))
    facts = note["ansible.builtin.set_fact"]
    assert "acefleet_service_unit is changed" in facts["acefleet_services_to_restart"]
    assert "acefleet_service_reloadable" in facts["acefleet_services_to_reload"]
    assert "acefleet_service_unit is not changed" in facts["acefleet_services_to_reload"]


def test_a_restart_is_refused_before_anything_is_written() -> None:
    """The guard on a new unit runs before the config and the unit are written."""
    names = [t["name"] for t in _load(ACEFLEET / "tasks" / "service.yml")]
    guard = next(i for i, n in enumerate(names) if n.startswith("Refuse a restart"))
    written = [i for i, n in enumerate(names) if n.startswith(("Write the", "Install the unit"))]
    assert written
    assert guard < min(written)
    proxy = _service_vars("proxy")
    assert proxy["acefleet_service_restart_allowed"] == "{{ proxy_restart_allowed | bool }}"


def _plays(playbook: str) -> list[dict[str, Any]]:
    return [p for p in _load(ROOT / "playbooks" / playbook) if "hosts" in p]


def test_the_rolling_update_applies_the_sites_roles_one_host_at_a_time() -> None:
    plays = {p["hosts"]: p for p in _plays("rolling_update.yml")}
    assert list(plays) == ["control", "edges", "lb"]
    for group, playbook in (("control", "control.yml"), ("lb", "lb.yml")):
        site = [r["role"] for r in _plays(playbook)[0]["roles"]]
        assert [r["role"] for r in plays[group]["roles"]] == site, group
        assert plays[group]["serial"] == 1, group
    assert plays["edges"]["serial"] == [1, "25%"]
    assert all(p["max_fail_percentage"] == 0 for p in plays.values())


def test_the_rolling_update_never_restarts_a_watched_proxy_unless_forced() -> None:
    edges = next(p for p in _plays("rolling_update.yml") if p["hosts"] == "edges")
    assert edges["vars"]["rolling_update_force"] is False
    facts = next(
        fact
        for fact in (t.get("ansible.builtin.set_fact") for t in edges["pre_tasks"])
        if fact and "proxy_restart_allowed" in fact
    )
    rule = facts["proxy_restart_allowed"]
    assert "== 0 or rolling_update_force" in rule
    # draining happens only on the forced path
    drains = [t for t in edges["pre_tasks"] if "Drain" in t["name"]]
    assert drains
    assert all("rolling_update_force" in t["when"] for t in drains)
