"""Fixtures for agent tests: a real acefleet-agent subprocess driving the real dockerd.

Every agent gets a unique host name; its engines carry ``acefleet.host=<name>`` and are removed
by that label afterwards, so tests never touch each other's (or anybody's) containers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.helpers import (
    API_KEY,
    SIM_IMAGE,
    Agent,
    AgentFactory,
    _joined,
    image_exists,
    remove_by_label,
    wait_for,
)
from tests.support import procs


@pytest.fixture(scope="session")
def engine_image(docker_available: None) -> str:
    if image_exists(SIM_IMAGE):
        return SIM_IMAGE
    pytest.fail(f"{SIM_IMAGE} is missing: run scripts/build-images.sh")


@pytest.fixture
def agent_factory(log_dir: Path, engine_image: str) -> Iterator[AgentFactory]:
    """Start agents (``factory(*flags, host=None, image=None)``); all are stopped and their
    engines removed at the end."""
    started: list[Agent] = []
    hosts: set[str] = set()

    def factory(
        *flags: str, host: str | None = None, image: str | None = None, check: bool = True
    ) -> Agent:
        name = host or f"t{uuid.uuid4().hex[:8]}"
        hosts.add(name)
        port, check_port = procs.free_port(), procs.free_port()
        args = [
            "--host",
            name,
            "--listen-port",
            str(port),
            "--agent-check-port",
            str(check_port),
            "--agent-check-host",
            "127.0.0.1",
            "--engine-image",
            image or engine_image,
            "--engine-extra-args=--timing,fast",
            "--log-format",
            "json",
            "--reconcile-interval-s",
            "0.5",
            "--probe-interval-s",
            "0.5",
            "--ready-poll-s",
            "0.2",
            "--ready-timeout-s",
            "120",
            "--provision-min-interval-s",
            "0",
            "--stats-interval-s",
            "0.5",
            *_joined(flags),
        ]
        svc = procs.start(
            "acefleet-agent",
            args,
            port=port,
            ready_path="/livez",
            log_dir=log_dir,
            env={"ACEFLEET_AGENT_API_KEY": API_KEY},
        )
        agent = Agent(name, svc, args, check_port)
        started.append(agent)
        if check:
            wait_for("agent ready", lambda: agent.get("/readyz").status_code == 200)
        return agent

    yield factory
    for agent in started:
        agent.client.close()
        agent.svc.stop()
    for name in hosts:
        remove_by_label(f"acefleet.host={name}")
