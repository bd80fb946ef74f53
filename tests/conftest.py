"""Fixtures shared by every test area. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import procs


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def docker_available() -> None:
    """Tests marked ``docker`` need a dockerd (scripts/test.sh starts one); CI fails, never skips"""
    import os

    if not docker_answers():
        if os.environ.get("CI"):
            pytest.fail("dockerd does not answer; scripts/bootstrap.sh should have started it")
        pytest.skip("dockerd does not answer (run scripts/bootstrap.sh)")


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def sim(log_dir: Path) -> Iterator[procs.Service]:
    """A real engine simulator on a free loopback port, fast timing profile."""
    port = procs.free_port()
    svc = procs.start(
        "acefleet-engine-sim",
        ["--http-port", str(port), "--timing", "fast"],
        port=port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=log_dir,
    )
    yield svc
    svc.stop()
