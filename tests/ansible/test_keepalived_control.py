"""The keepalived role's control VIP: its configuration passes keepalived's own check, and its
notify script drives a real central between standby and serving.

keepalived itself does not run here (it would add addresses to this machine's interfaces): the
test renders the role's templates through a real ansible-playbook, has ``keepalived
--config-test`` judge the configuration, and runs the notify script with the arguments keepalived
gives it on a state change.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.central.conftest import StartCentral, start_central  # noqa: F401 (fixture)
from tests.support import ansible, tools

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "keepalived"

RENDER_PLAYBOOK = """
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    # the facts the role reads (its interface and address), as gathering would set them
    - ansible.builtin.set_fact:
        default_ipv4: {interface: eth0}
        eth0: {ipv4: {address: "{{ test_ip }}"}}
        cacheable: true
- hosts: control1
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.template:
        src: "{{ lookup('env', 'ROLE_TEMPLATES') }}/keepalived.conf.j2"
        dest: "{{ lookup('env', 'OUT') }}/keepalived.conf"
        mode: "0644"
    - ansible.builtin.template:
        src: "{{ lookup('env', 'ROLE_TEMPLATES') }}/control_notify.sh.j2"
        dest: "{{ lookup('env', 'OUT') }}/notify"
        mode: "0755"
"""


def _inventory(lb_too: bool) -> str:
    hosts = {"control1": "10.9.0.11", "control2": "10.9.0.12", "lb1": "10.9.0.21"}
    # connection local: the modules run with the test's own Python
    lines = ["all:", "  vars:", '    ansible_python_interpreter: "{{ ansible_playbook_python }}"']
    lines += ["  hosts:"]
    for name, ip in hosts.items():
        lines += [f"    {name}:", f"      test_ip: {ip}"]
    lines += ["  children:", "    control:", "      hosts:"]
    lines += ["        control1:", "        control2:"]
    lines += ["    lb:", "      hosts:", "        lb1:"]
    if lb_too:
        lines += ["        control1:", "    lb_second:", "      hosts:", "        control2:"]
    return "\n".join(lines) + "\n"


def _render(tmp_path: Path, lb_too: bool = False, **overrides: str) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(_inventory(lb_too))
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK)
    values = {
        "acefleet_control_vip": "10.9.0.100",
        "keepalived_vip": "10.9.0.200",
        "vault_keepalived_auth_pass": "t3stpass",
        "acefleet_central_port": "8000",
        "acefleet_haproxy_health_port": "8404",
        "keepalived_control_state_file": str(tmp_path / "run" / "control-vrrp-state"),
        **overrides,
    }
    extra = ["-e", f"@{ROLE / 'defaults' / 'main.yml'}", "-e", f"@{ROLE / 'vars' / 'main.yml'}"]
    for name, value in values.items():
        extra += ["-e", f"{name}={value}"]
    env = {"ROLE_TEMPLATES": str(ROLE / "templates"), "OUT": str(out)}
    ansible.playbook(playbook, str(inventory), *extra, env=env)
    return out


def _config_test(config: Path) -> subprocess.CompletedProcess[str]:
    keepalived = tools.require("keepalived", "keepalived")
    return subprocess.run(
        [keepalived, "--config-test", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_control_host_gets_the_control_vip_instance(tmp_path: Path) -> None:
    out = _render(tmp_path)
    config = (out / "keepalived.conf").read_text()
    # control1 is not an lb host: only the control VIP, its peers the other control hosts
    assert "vrrp_instance acefleet_vip " not in config
    assert "vrrp_instance acefleet_control_vip {" in config
    assert "10.9.0.100/24 dev eth0" in config
    assert "virtual_router_id 52" in config
    assert "nopreempt" in config
    assert "unicast_src_ip 10.9.0.11" in config
    assert "10.9.0.12" in config
    assert "10.9.0.21" not in config
    assert "http://127.0.0.1:8000/livez" in config
    assert 'notify "/bin/sh /etc/keepalived/acefleet-control-notify"' in config
    done = _config_test(out / "keepalived.conf")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_host_in_both_groups_runs_both_instances_and_tls_checks_verify(tmp_path: Path) -> None:
    out = _render(tmp_path, lb_too=True, acefleet_tls_internal="true")
    config = (out / "keepalived.conf").read_text()
    assert "vrrp_instance acefleet_vip {" in config
    assert "vrrp_instance acefleet_control_vip {" in config
    assert "10.9.0.200/24 dev eth0" in config
    assert "10.9.0.100/24 dev eth0" in config
    assert (
        "--cacert /etc/acefleet/tls/ca.crt --resolve control1:8000:127.0.0.1 "
        "https://control1:8000/livez" in config
    )
    done = _config_test(out / "keepalived.conf")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_control_vip_no_control_instance(tmp_path: Path) -> None:
    out = _render(tmp_path, acefleet_control_vip="")
    assert "acefleet_control_vip" not in (out / "keepalived.conf").read_text()


def _notify(script: Path, *args: str) -> None:
    subprocess.run(["/bin/sh", str(script), *args], check=True, timeout=10)


def _ready(url: str) -> tuple[int, str]:
    r = httpx.get(url + "/readyz", timeout=5)
    return r.status_code, r.json()["status"]


def _wait_ready(url: str, expected: tuple[int, str]) -> None:
    deadline = time.monotonic() + 10
    while _ready(url) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz never became {expected}: {_ready(url)}")
        time.sleep(0.05)


def test_the_notify_script_moves_central_between_standby_and_serving(
    tmp_path: Path,
    start_central: StartCentral,  # noqa: F811
) -> None:
    out = _render(tmp_path)
    notify = out / "notify"
    state_file = tmp_path / "run" / "control-vrrp-state"
    central = start_central(standby_state_file=str(state_file), standby_check_interval_s="0.1")
    # keepalived has said nothing yet (no file): not serving
    assert _ready(central.url) == (503, "standby")

    _notify(notify, "INSTANCE", "acefleet_control_vip", "MASTER", "100")
    assert state_file.read_text() == "MASTER\n"
    _wait_ready(central.url, (200, "ok"))

    # another instance's change (the lb VIP) is not the control VIP's
    _notify(notify, "INSTANCE", "acefleet_vip", "BACKUP", "100")
    assert state_file.read_text() == "MASTER\n"

    for state in ("BACKUP", "FAULT", "STOP"):
        _notify(notify, "INSTANCE", "acefleet_control_vip", "MASTER", "100")
        _wait_ready(central.url, (200, "ok"))
        _notify(notify, "INSTANCE", "acefleet_control_vip", state, "100")
        _wait_ready(central.url, (503, "standby"))
