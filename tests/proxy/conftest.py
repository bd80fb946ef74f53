"""Fixtures for the proxy tests: real simulators and real proxy processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import procs

StartProxy = Callable[..., procs.Service]
StartSim = Callable[..., procs.Service]


@pytest.fixture
def start_sim(log_dir: Path) -> Iterator[StartSim]:
    """Start extra simulators (fast timing, fault injection on), stopped at teardown."""
    started: list[procs.Service] = []

    def start(*args: str) -> procs.Service:
        port = procs.free_port()
        svc = procs.start(
            "acefleet-engine-sim",
            ["--http-port", str(port), "--timing", "fast", "--chaos", *args],
            port=port,
            ready_path="/webui/api/service?method=get_version",
            log_dir=log_dir,
        )
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture
def start_proxy(log_dir: Path) -> Iterator[StartProxy]:
    """Start acefleet-proxy with ``engines`` (host:port list) and extra flags."""
    started: list[procs.Service] = []

    def start(*engines: str, args: tuple[str, ...] = (), **env: str) -> procs.Service:
        port = procs.free_port()
        argv = ["--host", "127.0.0.1", "--port", str(port), "--log-format", "json"]
        if engines:
            argv += ["--engines", ",".join(engines)]
        svc = procs.start(
            "acefleet-proxy",
            [*argv, *args],
            port=port,
            ready_path="/readyz",
            log_dir=log_dir,
            # generous per-client limits by default: every test client is 127.0.0.1
            env={
                "ACEFLEET_PROXY_CLIENT_BURST": "1000",
                "ACEFLEET_PROXY_CLIENT_RATE": "1000",
                "ACEFLEET_PROXY_DRAIN_TIMEOUT_S": "1",
                **{f"ACEFLEET_PROXY_{k.upper()}": v for k, v in env.items()},
            },
        )
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


def endpoint(svc: procs.Service) -> str:
    return f"127.0.0.1:{svc.port}"
