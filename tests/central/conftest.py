"""Central as a real subprocess on a loopback port, with clients for each role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, VIEWER_KEY
from tests.support import procs

StartCentral = Callable[..., procs.Service]

# Short intervals so stale/lost/expiry happen within a test; generous enough for a loaded CI box.
FAST = {
    "ACEFLEET_CENTRAL_HEARTBEAT_INTERVAL_S": "0.5",
    "ACEFLEET_CENTRAL_STALE_AFTER_S": "1.5",
    "ACEFLEET_CENTRAL_LOST_AFTER_S": "3",
    "ACEFLEET_CENTRAL_WARMUP_S": "0",
    "ACEFLEET_CENTRAL_CLAIM_TTL_S": "30",
    "ACEFLEET_CENTRAL_WARM_BUFFER_PER_EDGE": "0",
    "ACEFLEET_CENTRAL_LIVE_UPDATE_INTERVAL_S": "0.2",
}


@pytest.fixture
def start_central(tmp_path: Path, log_dir: Path) -> Iterator[StartCentral]:
    started: list[procs.Service] = []

    def start(port: int | None = None, **overrides: str) -> procs.Service:
        port = port or procs.free_port()
        env = {
            **FAST,
            "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
            "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
            "ACEFLEET_CENTRAL_SERVICE_KEYS": SERVICE_KEY,
            "ACEFLEET_CENTRAL_OPERATOR_KEYS": OPERATOR_KEY,
            "ACEFLEET_CENTRAL_VIEWER_KEYS": VIEWER_KEY,
            "ACEFLEET_CENTRAL_LOG_FORMAT": "json",
            **{f"ACEFLEET_CENTRAL_{k.upper()}": v for k, v in overrides.items()},
        }
        svc = procs.start(
            "acefleet-central", [], port=port, ready_path="/readyz", log_dir=log_dir, env=env
        )
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture
def central(start_central: StartCentral) -> procs.Service:
    return start_central()


def _client(svc: procs.Service, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=svc.url, headers=headers, timeout=10)


@pytest.fixture
def service(central: procs.Service) -> Iterator[httpx.Client]:
    with _client(central, SERVICE_KEY) as c:
        yield c


@pytest.fixture
def operator(central: procs.Service) -> Iterator[httpx.Client]:
    with _client(central, OPERATOR_KEY) as c:
        yield c


@pytest.fixture
def viewer(central: procs.Service) -> Iterator[httpx.Client]:
    with _client(central, VIEWER_KEY) as c:
        yield c


@pytest.fixture
def anonymous(central: procs.Service) -> Iterator[httpx.Client]:
    with _client(central, None) as c:
        yield c
