"""Running a real ansible-playbook from a test, with the checkout's ansible.cfg (roles, the
collection link) and variables handed in through the environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def playbook(
    playbook_path: Path,
    inventory: str,
    *extra: str,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``playbook_path`` against ``inventory`` (a file or ``localhost,``); with ``check``,
    a failed play fails the test with ansible's own output."""
    ansible = shutil.which("ansible-playbook") or str(ROOT / ".venv" / "bin" / "ansible-playbook")
    done = subprocess.run(
        [ansible, "-i", inventory, *extra, str(playbook_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **(env or {})},
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done
