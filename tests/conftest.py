"""Fixtures shared by every test area. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.support import procs, tools

# The Gluetun stand-in's fixtures (tests/support/gluetun.py), for every area that runs tunnels.
from tests.support.gluetun import gluetun_image, gluetun_standin  # noqa: F401

# Areas whose tests share one resource across files and must run in one process under xdist
# (scripts/test.sh runs the suite on several workers, `--dist loadfile`): the fleet tests share
# one session-wide fleet; the image tests remove their containers by one fixed label.
ONE_WORKER_AREAS = ("fleet", "images")

# Services run inside the test process (ThreadCentral and the like) log through structlog's
# default configuration, whose console renderer draws a logged exception with rich, every
# frame's locals included: ~4 s for one crash behind FastAPI's stack, long enough for a client
# to time out on a loaded machine. Plain tracebacks, as the services' own configuration
# (acefleet/logs.py) writes them.
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]
)


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


@pytest.fixture(scope="session")
def clip_dir() -> Path:
    """build/clips, made (or confirmed current) by the same script the engine image uses."""
    tools.require("ffmpeg", "ffmpeg")
    tools.require("ffprobe", "ffmpeg")
    out = procs.REPO / "build" / "clips"
    done = subprocess.run(
        [str(procs.REPO / "scripts" / "make-clips.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"make-clips.sh failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture
def clip_sim(clip_dir: Path, log_dir: Path) -> Iterator[procs.Service]:
    """The simulator playing real clips (H.264 + AAC, a keyframe every 1.28 s), faults on."""
    svc = procs.start_clip_sim(clip_dir, log_dir, "--chaos")
    yield svc
    svc.stop()


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown when the plugin is off (-p no:xdist)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadfile`` (scripts/test.sh): a file's tests run in one worker (module
    fixtures start once) and so does each area of ONE_WORKER_AREAS. xdist's own ``loadgroup``
    cannot carry this: it renames node ids through an attribute pytest 9 no longer reads.
    xdist starts the groups with the most tests first (the fleet), not last."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class AreaScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]  # tests/<area>/test_x.py
            parts = path.split("/")
            return parts[1] if len(parts) > 2 and parts[1] in ONE_WORKER_AREAS else path

    return AreaScheduling(config, log)
