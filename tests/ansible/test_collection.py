"""The rollout ships as the collection acefleet.fleet: it builds from the checkout, the tarball
holds the roles and playbooks (and nothing of the Python services, tests or build outputs), and
an installed copy runs acefleet.fleet.site and the roles by their FQCN."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MAX_TARBALL_BYTES = 200_000

# What the tarball may hold: collection metadata, roles, playbooks, the changelog.
ALLOWED = re.compile(
    r"^(MANIFEST\.json|FILES\.json|README\.md|meta(/runtime\.yml)?|changelogs(/changelog\.yaml)?"
    r"|playbooks(/[a-z_]+\.yml)?|roles(/[a-z_]+(/README\.md"
    r"|/(defaults|handlers|meta|tasks|templates|vars)(/[a-z_.]+\.(yml|j2))?"
    # files/: the monitoring role's alert rule tests and Grafana dashboards.
    r"|/files(/[a-z_]+)?(/[a-z_.]+\.(yml|json))?)?)?)$"
)

SYNTAX_PLAYBOOK = """
- name: The collection's whole-fleet playbook
  ansible.builtin.import_playbook: acefleet.fleet.site

- name: The collection's rolling update
  ansible.builtin.import_playbook: acefleet.fleet.rolling_update

- name: Roles by their FQCN
  hosts: lb
  roles:
    - role: acefleet.fleet.haproxy
    - role: acefleet.fleet.keepalived
"""

INVENTORY = """
all:
  children:
    lb: {hosts: {lb1: {}}}
    control: {hosts: {control1: {}}}
    edges: {hosts: {edge1: {}}}
"""


def _tool(name: str) -> str:
    found = shutil.which(name) or str(ROOT / ".venv" / "bin" / name)
    if not Path(found).exists():
        pytest.skip(f"{name} is not installed (scripts/bootstrap.sh)")
    return found


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, cwd=cwd, env=env, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    args = [_tool("ansible-galaxy"), "collection", "build", "--output-path", str(out)]
    done = _run(args, ROOT, env)
    assert done.returncode == 0, done.stdout + done.stderr
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    path = out / f"acefleet-fleet-{version}.tar.gz"
    assert path.is_file(), done.stdout
    return path


def test_tarball_holds_only_the_rollout(tarball: Path) -> None:
    size = tarball.stat().st_size
    assert size < MAX_TARBALL_BYTES, f"{tarball.name} is {size} bytes: check build_ignore"
    with tarfile.open(tarball) as tar:
        names = [m.name.rstrip("/") for m in tar.getmembers()]
    stray = [n for n in names if not ALLOWED.match(n)]
    assert not stray, f"files outside the collection's layout (galaxy.yml build_ignore): {stray}"
    roles = {n.split("/")[1] for n in names if n.startswith("roles/") and n.count("/") >= 1}
    on_disk = {p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "main.yml").is_file()}
    assert roles == on_disk
    assert {"playbooks/site.yml", "playbooks/rolling_update.yml", "meta/runtime.yml"} <= set(names)
    assert all(f"roles/{r}/README.md" in names for r in on_disk)


def test_installed_collection_runs_by_fqcn(tarball: Path, tmp_path: Path) -> None:
    """Install the tarball into an empty collections path (next to the Galaxy collections it
    needs, nothing of the checkout) and syntax-check playbooks that use acefleet.fleet.*."""
    colls = tmp_path / "collections"
    env = dict(os.environ, ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"))
    (tmp_path / "ansible.cfg").write_text(
        f"[defaults]\ncollections_path = {colls}\nroles_path = {tmp_path / 'no-roles'}\n"
    )
    args = [_tool("ansible-galaxy"), "collection", "install", str(tarball), "--no-deps"]
    done = _run([*args, "-p", str(colls)], tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    installed = colls / "ansible_collections" / "acefleet" / "fleet"
    assert (installed / "roles" / "acefleet" / "defaults" / "main.yml").is_file()
    assert not installed.is_symlink()
    # The dependencies (community.docker, community.general) from the checkout's extraction.
    community = ROOT / "collections" / "ansible_collections" / "community"
    if not community.is_dir():
        pytest.skip("collections/ is empty: run scripts/install-collections.sh")
    (colls / "ansible_collections" / "community").symlink_to(community)

    (tmp_path / "hosts.yml").write_text(INVENTORY)
    (tmp_path / "fleet.yml").write_text(SYNTAX_PLAYBOOK)
    playbook = _tool("ansible-playbook")
    for target in ("fleet.yml", "acefleet.fleet.site"):
        args = [playbook, "-i", "hosts.yml", "--syntax-check", target]
        done = _run(args, tmp_path, env)
        assert done.returncode == 0, f"{target}:\n{done.stdout}{done.stderr}"
    listed = _run([playbook, "-i", "hosts.yml", "--list-tasks", "fleet.yml"], tmp_path, env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "acefleet.fleet.proxy : " in listed.stdout
    assert str(ROOT) not in listed.stdout + listed.stderr
