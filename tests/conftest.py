"""Fixtures shared by every test area. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import procs, tools


@pytest.fixture(scope="session")
def docker_available() -> None:
    """Tests that need a dockerd: a missing or silent one fails them with the hint, never skips."""
    tools.require_docker()


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
