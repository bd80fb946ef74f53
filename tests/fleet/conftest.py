"""One fleet (central, two agents with real simulator engines, two proxies) for the whole
directory: starting engines is the slow part, so the tests share it and each test leaves every
service running again when it is done (tests that kill something restart it)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.fleet.harness import SIM_IMAGE, Fleet


@pytest.fixture(scope="session")
def fleet(docker_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    probe = subprocess.run(["docker", "image", "inspect", SIM_IMAGE], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"{SIM_IMAGE} is missing: run scripts/build-images.sh")
    fleet = Fleet.up(tmp_path_factory.mktemp("fleet"))
    try:
        yield fleet
    finally:
        fleet.close()  # removes every engine by its run-unique host label, even on failure


@pytest.fixture
def healthy(fleet: Fleet) -> Fleet:
    """The shared fleet with every service up (a failed test may have left one down)."""
    if fleet.central is None or not fleet.central.alive():
        fleet.start_central()
    for edge in fleet.edges.values():
        if edge.agent is None or not edge.agent.alive():
            fleet.start_agent(edge)
        if edge.proxy is None or not edge.proxy.alive():
            fleet.start_proxy(edge)
    return fleet
