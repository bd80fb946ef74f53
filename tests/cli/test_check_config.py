"""``acefleet check-config`` on the committed inventories and on broken copies of the lab's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from acefleetctl import inventory
from tests.cli.conftest import Cli
from tests.support import tools

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventories" / "lab"
EXAMPLE = REPO / "inventories" / "example"


@pytest.fixture(autouse=True)
def _ansible() -> None:
    tools.require("ansible-inventory", "ansible-core (pip install -e '.[dev]')")


@pytest.fixture
def lab_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "inv"
    shutil.copytree(LAB, copy)
    return copy


def test_the_lab_inventory_passes(cli: Cli) -> None:
    r = cli("check-config", str(LAB))
    assert (r.code, r.out, r.err) == (0, "inventory ok: 2 control, 2 edges, 2 lb\n", "")


def test_a_broken_inventory_fails_with_each_problem(cli: Cli, lab_copy: Path) -> None:
    hosts = yaml.safe_load((lab_copy / "hosts.yml").read_text())
    del hosts["all"]["children"]["lb"]
    (lab_copy / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (lab_copy / "group_vars" / "edges" / "ports.yml").write_text("acefleet_agent_port: 6880\n")
    engines = lab_copy / "group_vars" / "edges" / "engines.yml"
    engines.write_text(engines.read_text() + "agent_min_engines: 9\n")  # the later key wins
    vault = lab_copy / "group_vars" / "all" / "vault.yml"
    vault.write_text(vault.read_text().replace("lab-service-key-0123456789", "too-short-key"))
    r = cli("check-config", str(lab_copy))
    assert (r.code, r.out) == (1, "")
    short = "vault_acefleet_service_api_key is shorter than 16 characters"
    clash = "acefleet_agent_port and acefleet_proxy_port share port 6880"
    pool = "agent_min_engines (9) exceeds agent_max_engines (4)"
    expected = [
        "group lb has no hosts (the fleet needs at least one)",
        f"control1: {short}",
        f"control2: {short}",
        f"edge1: {short}",
        f"edge1: {clash}",
        f"edge1: {pool}",
        f"edge2: {short}",
        f"edge2: {clash}",
        f"edge2: {pool}",
        "9 problems",
    ]
    assert r.err.splitlines() == [f"acefleet: {lab_copy}: {line}" for line in expected]


def test_placeholder_secrets_outside_the_lab(cli: Cli) -> None:
    r = cli("check-config", "--json", str(EXAMPLE))
    assert r.code == 1
    problems = json.loads(r.out)
    placeholder = "is an example placeholder (acefleet_environment is not lab)"
    assert {
        "host": "control1.example.net",
        "problem": f"vault_acefleet_operator_api_key {placeholder}",
    } in problems
    assert {
        "host": "lb2.example.net",
        "problem": f"vault_keepalived_auth_pass {placeholder}",
    } in problems
    assert len(problems) == 10  # 2 per control and edge host, 1 per lb host
    assert all(p["problem"].endswith(placeholder) for p in problems)


def test_lab_keys_are_placeholders_in_production(cli: Cli, lab_copy: Path) -> None:
    main = lab_copy / "group_vars" / "all" / "main.yml"
    main.write_text(
        main.read_text().replace("acefleet_environment: lab", "acefleet_environment: x")
    )
    r = cli("check-config", str(lab_copy))
    assert r.code == 1
    assert (
        f"acefleet: {lab_copy}: lb1: vault_keepalived_auth_pass is an example placeholder" in r.err
    )


def test_ports_clash_on_a_host_in_two_groups(cli: Cli, lab_copy: Path) -> None:
    # control1 also balances: HAProxy's operator frontend would take central's own port.
    hosts = yaml.safe_load((lab_copy / "hosts.yml").read_text())
    hosts["all"]["children"]["lb"]["hosts"]["control1"] = None
    (lab_copy / "hosts.yml").write_text(yaml.safe_dump(hosts))
    r = cli("check-config", str(lab_copy))
    assert r.code == 1
    assert r.err.splitlines()[0] == (
        f"acefleet: {lab_copy}: control1: acefleet_central_port and haproxy_control_port share"
        " port 8000"
    )


def test_a_missing_inventory(cli: Cli, tmp_path: Path) -> None:
    r = cli("check-config", str(tmp_path / "nope"))
    assert (r.code, r.err) == (2, f"acefleet: inventory {tmp_path / 'nope'} does not exist\n")


def test_the_defaults_are_the_roles_defaults() -> None:
    """check-config knows the roles' port and pool defaults; they must not drift apart."""
    roles = REPO / "roles"
    defaults: dict[str, object] = {}
    for role in ("acefleet", "haproxy", "agent"):
        defaults.update(yaml.safe_load((roles / role / "defaults" / "main.yml").read_text()))
    for name, value in {**inventory.PORT_DEFAULTS, **inventory.POOL_DEFAULTS}.items():
        assert defaults[name] == value, name


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """``acefleet … | head``: the pipe is closed before the CLI writes (it runs ansible-inventory
    first)."""
    exe = Path(sys.executable).parent / "acefleet"
    proc = subprocess.Popen(
        [exe, "check-config", "--json", str(EXAMPLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # nobody reads: the CLI's first write fails with EPIPE
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err == ""


def test_a_vault_encrypted_secret_counts_as_set(cli: Cli, tmp_path: Path) -> None:
    vault_cli = tools.require("ansible-vault", "ansible-core (pip install -e '.[dev]')")
    copy = tmp_path / "inv"
    shutil.copytree(EXAMPLE, copy)
    password = tmp_path / "vault-pass"
    password.write_text("a-password-for-this-test\n")
    encrypted = subprocess.run(
        [
            vault_cli,
            "encrypt_string",
            "--vault-password-file",
            str(password),
            "a-real-service-key-0123456789",
            "--name",
            "vault_acefleet_service_api_key",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    vault = copy / "group_vars" / "all" / "vault.yml"
    kept = [
        line
        for line in vault.read_text().splitlines(keepends=True)
        if not line.startswith("vault_acefleet_service_api_key:")
    ]
    vault.write_text("".join(kept) + encrypted)
    r = cli("check-config", "--json", str(copy))
    problems = json.loads(r.out)
    assert r.code == 1  # the other placeholders are still there
    assert len(problems) == 6  # control1: operator key; 3 edges: agent key; 2 lb: VRRP
    assert not [p for p in problems if "vault_acefleet_service_api_key" in p["problem"]]
