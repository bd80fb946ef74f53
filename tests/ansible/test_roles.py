"""The rollout's roles keep their contracts: every knob in defaults/main.yml is declared in
meta/argument_specs.yml (and the other way round), knobs carry the role's name, templates say
they are managed, and configs are installed validated."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ansible, tools

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "main.yml").is_file())
ROLE_DEFAULTS = [d for d in (r / "defaults" / "main.yml" for r in ROLES) if d.is_file()]


def _load(path: Path) -> Any:
    with path.open() as fh:
        return yaml.safe_load(fh)


def _defaults(role: Path) -> dict[str, Any]:
    path = role / "defaults" / "main.yml"
    return (_load(path) or {}) if path.is_file() else {}


def _role_ids() -> list[str]:
    return [r.name for r in ROLES]


def test_the_rollout_has_its_roles() -> None:
    expected = {"acefleet", "agent", "central", "docker", "engine_image", "haproxy"}
    expected |= {"keepalived", "proxy", "venv", "edge"}
    assert expected <= {r.name for r in ROLES}


@pytest.mark.parametrize("role", ROLES, ids=_role_ids())
def test_argument_specs_match_defaults(role: Path) -> None:
    defaults = _defaults(role)
    specs = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"] or {}
    undeclared = sorted(set(defaults) - set(specs))
    without_default = sorted(set(specs) - set(defaults))
    assert not undeclared, f"{role.name}: defaults missing from argument_specs: {undeclared}"
    assert not without_default, f"{role.name}: argument_specs without a default: {without_default}"
    for name, spec in specs.items():
        assert spec.get("description"), f"{role.name}: {name} has no description"
        assert "type" in spec, f"{role.name}: {name} has no type"


@pytest.mark.parametrize("role", ROLES, ids=_role_ids())
def test_defaults_are_prefixed_with_the_role_name(role: Path) -> None:
    defaults = _defaults(role)
    stray = [name for name in defaults if not name.startswith(f"{role.name}_")]
    assert not stray, f"{role.name}: knobs without the role prefix: {stray}"


_TYPES = {
    "str": str,
    "int": int,
    "float": (int, float),  # YAML writes 30 for 30.0: both are a float option
    "bool": bool,
    "list": list,
    "dict": dict,
    "path": str,
}


@pytest.mark.parametrize("role", ROLES, ids=_role_ids())
def test_literal_defaults_have_the_declared_type(role: Path) -> None:
    defaults = _defaults(role)
    specs = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"] or {}
    for name, value in defaults.items():
        if isinstance(value, str) and "{{" in value:
            continue  # a template: its type is known only on a host
        expected = _TYPES[specs[name]["type"]]
        assert isinstance(value, expected), f"{role.name}: {name}={value!r} is not {expected}"
        if "choices" in specs[name]:
            assert value in specs[name]["choices"], f"{role.name}: {name}={value!r}"


def test_templates_say_they_are_managed() -> None:
    templates = sorted((ROOT / "roles").glob("*/templates/*.j2"))
    assert templates
    for template in templates:
        first = template.read_text().splitlines()[0]
        assert first == "{{ ansible_managed | comment }}", f"{template}: {first!r}"


def test_service_configs_are_validated_before_install() -> None:
    """HAProxy, keepalived and every acefleet service config go through validate:."""
    wanted = {
        "haproxy.cfg.j2": "haproxy -c",
        "keepalived.conf.j2": "keepalived --config-test",
        "service.toml.j2": "--check-config",
    }
    found: dict[str, str] = {}
    for tasks in (ROOT / "roles").glob("*/tasks/*.yml"):
        for task in _load(tasks) or []:
            template = task.get("ansible.builtin.template")
            if template:
                found[Path(template["src"]).name] = template.get("validate", "")
    for src, command in wanted.items():
        assert command in found.get(src, ""), f"{src} is installed without '{command}'"


def test_handlers_listen_on_topics() -> None:
    for handlers in (ROOT / "roles").glob("*/handlers/main.yml"):
        for handler in _load(handlers) or []:
            assert handler.get("listen"), f"{handlers}: {handler['name']} has no listen: topic"


def test_haproxy_reloads_and_never_restarts() -> None:
    handlers = _load(ROOT / "roles" / "haproxy" / "handlers" / "main.yml")
    states = {h["ansible.builtin.systemd_service"]["state"] for h in handlers}
    assert states == {"reloaded"}


def test_haproxy_hashes_the_content_key_consistently() -> None:
    config = (ROOT / "roles" / "haproxy" / "templates" / "haproxy.cfg.j2").read_text()
    assert "hash-type consistent" in config
    assert re.search(r"balance hash var\(txn\.content_key\)", config)
    defaults = _load(ROOT / "roles" / "haproxy" / "defaults" / "main.yml")
    assert {"id", "infohash"} <= set(defaults["haproxy_content_key_params"])


def test_example_inventory_keeps_secrets_in_vault_variables() -> None:
    example = ROOT / "inventories" / "example"
    vault = example / "group_vars" / "all" / "vault.yml"
    names = set(_load(vault) or {})
    assert names
    assert all(n.startswith("vault_") for n in names)
    used = set(re.findall(r"vault_[a-z_]+", "".join(p.read_text() for p in ROLE_DEFAULTS)))
    assert used <= names, f"vault variables the roles use but the example lacks: {used - names}"


RENDER_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.template:
        src: "{{ lookup('env', 'ROLE_TEMPLATES') }}/haproxy.cfg.j2"
        dest: "{{ lookup('env', 'OUT') }}"
        mode: "0644"
      vars:
        haproxy_edge_group: edges
"""


@pytest.mark.slow
def test_haproxy_template_renders_a_config_haproxy_accepts(tmp_path: Path) -> None:
    """The real template with the role's defaults and an inventory, checked by the real haproxy."""
    haproxy = tools.require("haproxy", "haproxy")  # a failure with the install hint, not a skip
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    edges:\n      hosts:\n        edge1:\n        edge2:\n"
        "    control:\n      hosts:\n        control1:\n"
    )
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK)
    out = tmp_path / "haproxy.cfg"
    defaults = ROOT / "roles" / "haproxy" / "defaults" / "main.yml"
    shared = ROOT / "roles" / "acefleet" / "defaults" / "main.yml"
    env = {"ROLE_TEMPLATES": str(ROOT / "roles" / "haproxy" / "templates"), "OUT": str(out)}
    extra = ("-e", f"@{shared}", "-e", f"@{defaults}")
    ansible.playbook(playbook, str(inventory), *extra, env=env)
    config = out.read_text()
    assert "server edge1 edge1:6880" in config
    assert "server control1 control1:8000" in config
    # init-addr none lets haproxy start although edge1 does not resolve here.
    check = subprocess.run(
        [haproxy, "-c", "-f", str(out)], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


PREFLIGHT_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: "{{ item }}"
        tasks_from: preflight
      loop: [central, agent]
"""


def _preflight(tmp_path: Path, vault: Path, environment: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PREFLIGHT_PLAYBOOK)
    extra = ("-e", f"@{vault}", "-e", f"acefleet_environment={environment}")
    return ansible.playbook(playbook, "localhost,", *extra, check=False)


@pytest.mark.slow
def test_preflight_refuses_placeholder_keys_outside_the_lab(tmp_path: Path) -> None:
    example_vault = ROOT / "inventories" / "example" / "group_vars" / "all" / "vault.yml"
    done = _preflight(tmp_path, example_vault, "production")
    assert done.returncode != 0
    assert "no placeholder keys" in done.stdout


@pytest.mark.slow
def test_preflight_accepts_the_lab_keys_in_the_lab(tmp_path: Path) -> None:
    lab_vault = ROOT / "inventories" / "lab" / "group_vars" / "all" / "vault.yml"
    done = _preflight(tmp_path, lab_vault, "lab")
    assert done.returncode == 0, done.stdout + done.stderr
    refused = _preflight(tmp_path, lab_vault, "production")
    assert refused.returncode != 0
