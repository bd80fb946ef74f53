"""Values several roles need live once, in the acefleet role's defaults; the acefleet services'
handlers live once, in the acefleet role; an edge's roles are listed once, by the edge role."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "roles" / "acefleet" / "defaults" / "main.yml"
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "main.yml").is_file())


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rollout_files() -> list[Path]:
    """Roles (without their Molecule scaffolding), playbooks and site.yml."""
    files = [ROOT / "site.yml", *sorted((ROOT / "playbooks").glob("*.yml"))]
    for path in sorted((ROOT / "roles").rglob("*")):
        rel = path.relative_to(ROOT / "roles")
        if path.is_file() and path.suffix in {".yml", ".j2"} and "molecule" not in rel.parts:
            files.append(path)
    return [f for f in files if f != SHARED]


# A shared value spelled out anywhere but the acefleet role's defaults is a second source.
LITERALS = {
    "acefleet_proxy_port": r"\b6880\b",
    "acefleet_agent_port": r"\b8100\b",
    "acefleet_agent_check_port": r"\b8101\b",
    "acefleet_central_port": r"(?<![\d.])8000\b",
    "acefleet_haproxy_health_port": r"\b8405\b",
    "acefleet_haproxy_metrics_port": r"\b8404\b",
    "acefleet_haproxy_socket": r"/run/haproxy/admin\.sock",
    "acefleet_haproxy_backend": r"backend:? +edges\b",
    "acefleet_engine_image": r"acefleet/engine-sim",
    "acefleet_docker_socket": r"docker\.sock",
}


@pytest.mark.parametrize("name", sorted(LITERALS))
def test_shared_values_are_spelled_out_only_in_the_acefleet_role(name: str) -> None:
    assert name in _load(SHARED), f"{name} is not a default of the acefleet role"
    pattern = re.compile(LITERALS[name])
    hits = []
    for path in _rollout_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if path.suffix == ".yml" else line
            if pattern.search(code):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, f"{name}'s value outside roles/acefleet/defaults/main.yml:\n" + "\n".join(hits)


def test_every_role_depends_on_the_acefleet_role() -> None:
    for role in ROLES:
        if role.name in {"acefleet", "edge"}:
            continue
        deps = [d["role"] for d in _load(role / "meta" / "main.yml")["dependencies"]]
        assert "acefleet.fleet.acefleet" in deps, f"{role.name} does not depend on acefleet"


def test_service_handlers_live_once_in_the_acefleet_role() -> None:
    for service in ("central", "agent", "proxy"):
        assert not (ROOT / "roles" / service / "handlers").exists(), f"{service} has handlers"
    listened = set()
    for handlers in (ROOT / "roles").glob("*/handlers/main.yml"):
        listened |= {h["listen"] for h in _load(handlers)}
    notified = set()
    for tasks in (ROOT / "roles").glob("*/tasks/*.yml"):
        for task in _load(tasks) or []:
            topic = task.get("notify")
            notified |= set(topic if isinstance(topic, list) else [topic] if topic else [])
    assert notified, "no task notifies a handler"
    assert notified <= listened, f"topics nobody listens to: {notified - listened}"


def _play_roles(playbook: str) -> list[list[str]]:
    plays = _load(ROOT / "playbooks" / playbook)
    return [[r["role"] for r in play.get("roles", [])] for play in plays if "hosts" in play]


def test_site_and_the_rolling_update_apply_the_same_edge_roles() -> None:
    assert _play_roles("edges.yml") == [["acefleet.fleet.docker", "acefleet.fleet.edge"]]
    # the rolling update's plays: control hosts, edges, lb hosts
    assert _play_roles("rolling_update.yml")[1] == ["acefleet.fleet.edge"]
    deps = [d["role"] for d in _load(ROOT / "roles" / "edge" / "meta" / "main.yml")["dependencies"]]
    assert deps == [f"acefleet.fleet.{r}" for r in ("venv", "engine_image", "agent", "proxy")]


def test_playbooks_name_roles_by_fqcn() -> None:
    for playbook in sorted((ROOT / "playbooks").glob("*.yml")):
        for roles in _play_roles(playbook.name):
            stray = [r for r in roles if not r.startswith("acefleet.fleet.")]
            assert not stray, f"{playbook.name}: roles without their FQCN: {stray}"
