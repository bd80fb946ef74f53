"""``acefleet_tls_internal`` in the roles (docs/tls.md, "Between the services"): with the switch on,
the central, agent and proxy roles write configurations that serve HTTPS with the pki role's
host certificate, reach central and the edges by https URLs and verify them with the fleet CA —
and each service accepts its configuration (``--check-config``, as the roles validate before
installing). With the switch off nothing of it appears and every URL stays http."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support import ansible, procs
from tests.support.tls_ca import TestCA

ROOT = Path(__file__).resolve().parents[2]
LAB_VAULT = ROOT / "inventories" / "lab" / "group_vars" / "all" / "vault.yml"
SERVICES = {"proxy": "acefleet-proxy", "central": "acefleet-central", "agent": "acefleet-agent"}

PLAY = """
- hosts: edge1
  gather_facts: false
  vars_files:
    - {root}/roles/acefleet/defaults/main.yml
{files}
  tasks:
    - ansible.builtin.template:
        src: {root}/roles/acefleet/templates/service.toml.j2
        dest: "{out}/{{{{ item }}}}.toml"
        mode: "0600"
      vars:
        acefleet_service_name: "{{{{ item }}}}"
        acefleet_service_settings: "{{{{ lookup('vars', item ~ '_base_settings') }}}}"
      loop: [proxy, central, agent]
"""


def _render(tmp_path: Path, tls: bool, tls_dir: Path) -> dict[str, dict[str, Any]]:
    out = tmp_path / ("on" if tls else "off")
    out.mkdir()
    files = "\n".join(
        f"    - {ROOT}/roles/{role}/{kind}/main.yml"
        for role in SERVICES
        for kind in ("defaults", "vars")
    )
    playbook = tmp_path / "render.yml"
    playbook.write_text(PLAY.format(root=ROOT, files=files, out=out))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "children": {
                        "control": {"hosts": {"control1": {}}},
                        "edges": {
                            "hosts": {
                                "edge1": {
                                    "ansible_connection": "local",
                                    "ansible_python_interpreter": sys.executable,
                                }
                            }
                        },
                    }
                }
            }
        )
    )
    extra = tmp_path / f"extra-{tls}.json"
    extra.write_text(
        json.dumps(
            {
                "acefleet_tls_internal": tls,
                "acefleet_tls_dir": str(tls_dir),
                "acefleet_environment": "lab",
                "central_database_url": f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
            }
        )
    )
    ansible.playbook(playbook, str(inventory), "-e", f"@{LAB_VAULT}", "-e", f"@{extra}")
    configs = {}
    for name, command in SERVICES.items():
        path = out / f"{name}.toml"
        checked = subprocess.run(
            [str(procs.BIN / command), "--config", str(path), "--check-config"],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy(),
            check=False,
        )
        assert checked.returncode == 0, f"{name}: {checked.stderr}"
        configs[name] = tomllib.loads(path.read_text())
    return configs


@pytest.mark.slow
def test_the_switch_turns_on_https_between_the_services(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "tls")
    host = ca.issue("host")  # the pki role's file names
    os.rename(host.cert_file, tmp_path / "tls" / "host.crt")
    os.rename(host.key_file, tmp_path / "tls" / "host.key")
    tls = str(tmp_path / "tls")

    on = _render(tmp_path, True, tmp_path / "tls")
    central, proxy, agent = on["central"], on["proxy"], on["agent"]
    assert (central["tls_cert_file"], central["tls_key_file"]) == (
        f"{tls}/host.crt",
        f"{tls}/host.key",
    )
    assert central["proxy_url_template"] == "https://{host}:6443"
    assert proxy["central_url"] == agent["central_url"] == "https://control1:8000"
    assert proxy["tls_port"] == 6443
    assert (proxy["tls_cert_file"], proxy["tls_key_file"], proxy["tls_ca_file"]) == (
        f"{tls}/host.crt",
        f"{tls}/host.key",
        f"{tls}/ca.crt",
    )
    assert agent["tls_ca_file"] == f"{tls}/ca.crt"

    off = _render(tmp_path, False, tmp_path / "tls")
    assert off["proxy"]["central_url"] == off["agent"]["central_url"] == "http://control1:8000"
    assert off["central"]["proxy_url_template"] == "http://{host}:6880"
    assert off["proxy"]["tls_port"] == 0
    for config in off.values():
        assert not any(config.get(k) for k in ("tls_cert_file", "tls_key_file", "tls_ca_file"))
