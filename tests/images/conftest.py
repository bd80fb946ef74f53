"""Fixtures for the image tests: build the images with scripts/build-images.sh, run engine-sim
containers in the real dockerd on published loopback ports, and remove them by label."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-images.sh"
ENGINE_IMAGE = "acefleet/engine-sim:latest"
BASE_IMAGE = "acefleet/base:bookworm"
# Every container these tests create carries this label; cleanup removes by it.
TEST_LABEL = "acefleet.test=images"
LIVENESS = "/webui/api/service?method=get_version"


@dataclass
class BuildRun:
    seconds: float
    output: str
    returncode: int

    def steps(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("==> ")]


def run_build(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> BuildRun:
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return BuildRun(time.monotonic() - start, proc.stdout + proc.stderr, proc.returncode)


def docker(*args: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def remove_test_containers() -> None:
    ids = docker("ps", "-aq", "--filter", f"label={TEST_LABEL}").split()
    if ids:
        docker("rm", "-f", *ids)


@pytest.fixture(scope="session")
def built_images(docker_available: None) -> BuildRun:
    """scripts/build-images.sh, run once per session (seconds when bootstrap already built)."""
    run = run_build()
    assert run.returncode == 0, run.output
    return run


@dataclass
class Engine:
    container: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict[str, object]:
        data = json.loads(docker("inspect", self.container))
        assert isinstance(data, list)
        state = data[0]
        assert isinstance(state, dict)
        return state

    def logs(self) -> str:
        proc = subprocess.run(
            ["docker", "logs", self.container], capture_output=True, text=True, check=False
        )
        return proc.stdout + proc.stderr


StartEngine = Callable[..., Engine]


@pytest.fixture
def start_engine(built_images: BuildRun) -> Iterator[StartEngine]:
    """Run engine-sim containers with the image's default command, published on 127.0.0.1."""
    remove_test_containers()

    def start(*env: str, command: Sequence[str] = (), ready_timeout: float = 60) -> Engine:
        name = f"acefleet-images-test-{uuid.uuid4().hex[:8]}"
        env_args = [arg for item in ("ACEFLEET_SIM_TIMING=fast", *env) for arg in ("-e", item)]
        # The port the engine listens on: the image's default unless the command picks one.
        port = 6878
        if "--http-port" in command:
            port = int(command[list(command).index("--http-port") + 1])
        docker(
            "run", "-d", "--name", name, "--label", TEST_LABEL,
            "-p", f"127.0.0.1::{port}", *env_args, ENGINE_IMAGE, *command,
        )  # fmt: skip
        published = docker("port", name, f"{port}/tcp").split()[0]
        engine = Engine(name, int(published.rsplit(":", 1)[1]))
        wait_live(engine, ready_timeout)
        return engine

    yield start
    remove_test_containers()


def wait_live(engine: Engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(engine.url + LIVENESS, timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"engine not live in {timeout} s ({last}); logs:\n{engine.logs()}")
