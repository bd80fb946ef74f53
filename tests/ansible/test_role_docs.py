"""Each role's README.md is generated from its meta/argument_specs.yml: a changed spec or default
without a regenerated README fails here (scripts/role-docs.py writes them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_role_readmes_match_their_argument_specs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role-docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_role_has_a_readme_naming_its_variables() -> None:
    for role in sorted((ROOT / "roles").iterdir()):
        if not (role / "meta" / "main.yml").is_file():
            continue
        readme = (role / "README.md").read_text()
        assert readme.startswith(f"# acefleet.fleet.{role.name}\n"), role.name
        defaults = role / "defaults" / "main.yml"
        if defaults.is_file():
            for line in defaults.read_text().splitlines():
                name = line.split(":", 1)[0]
                if line and not line.startswith(("#", " ", "-")) and name != "---":
                    assert f"`{name}`" in readme, f"{role.name}: {name} missing from README.md"
