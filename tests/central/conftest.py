"""Central on a loopback port, with clients for each role.

By default central runs as a uvicorn server in a thread of the test process (real HTTP on
loopback, but no interpreter start and imports per test, which cost seconds on a busy machine);
``start_central(subprocess=True)`` runs the real ``acefleet-central`` console script instead, for
the tests that kill it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest
import uvicorn

from orchestrator.central.app import create_app
from orchestrator.central.cli import server_config
from orchestrator.central.settings import CentralSettings
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, VIEWER_KEY
from tests.support import postgres, procs, tools
from tests.support.tls_ca import TestCA, start_https


class Running(Protocol):
    port: int

    @property
    def url(self) -> str: ...

    def alive(self) -> bool: ...

    def log(self) -> str: ...

    def stop(self, timeout: float = 10) -> None: ...


class ThreadCentral:
    """create_app() served by uvicorn on its own event loop in a daemon thread (over HTTPS when the
    settings name a certificate)."""

    def __init__(self, settings: CentralSettings) -> None:
        self.port = settings.listen_port
        # As the console script runs it (server_config), on loopback.
        config = server_config(create_app(settings), settings, host="127.0.0.1")
        self.scheme = "https" if settings.tls_cert_file else "http"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="central", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("central did not start in its thread")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.thread.is_alive()

    def log(self) -> str:
        return ""

    def stop(self, timeout: float = 10) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


StartCentral = Callable[..., Running]

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


def tls_env(cert_file: str, key_file: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a real ``acefleet-central`` serving HTTPS with ``cert_file`` and
    ``key_file`` (fast timings, the test keys, its database a file in ``tmp_path``)."""
    return {
        **FAST,
        "ACEFLEET_CENTRAL_SERVICE_KEYS": SERVICE_KEY,
        "ACEFLEET_CENTRAL_OPERATOR_KEYS": OPERATOR_KEY,
        "ACEFLEET_CENTRAL_VIEWER_KEYS": VIEWER_KEY,
        "ACEFLEET_CENTRAL_LOG_FORMAT": "json",
        "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        "ACEFLEET_CENTRAL_TLS_CERT_FILE": cert_file,
        "ACEFLEET_CENTRAL_TLS_KEY_FILE": key_file,
    }


def start_https_central(ca: TestCA, tmp_path: Path, log_dir: Path) -> procs.Service:
    """The real ``acefleet-central`` on a free port serving HTTPS with a certificate ``ca`` issues
    for "control", once its /readyz answers verified against ``ca``; the caller stops it."""
    files = ca.issue("control")
    port = procs.free_port()
    return start_https(
        "acefleet-central",
        ["--listen-port", str(port)],
        port=port,
        ca_file=ca.ca_file,
        log_dir=log_dir,
        env=tls_env(files.cert_file, files.key_file, tmp_path),
        ready_path="/readyz",
    )


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.Cluster]:
    """One throwaway PostgreSQL server for the session (started by the first test asking)."""
    try:
        cluster = postgres.start()
    except RuntimeError as exc:  # a missing package or a server that would not start: fail
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Central's database URL, once per backend: a file in tmp_path, or a fresh PostgreSQL
    database (dropped afterwards). SQL tests take it and pass it on:
    ``start_central(database_url=database_url)``."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
        return
    cluster: postgres.Cluster = request.getfixturevalue("postgres_cluster")
    name = cluster.new_database()
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture
def start_central(tmp_path: Path, log_dir: Path) -> Iterator[StartCentral]:
    """Starts central; ``database_url=`` (e.g. from the ``database_url`` fixture) replaces the
    default SQLite file in tmp_path (kept across restarts within a test)."""
    started: list[Running] = []

    def start(port: int | None = None, subprocess: bool = False, **overrides: str) -> Running:
        port = port or procs.free_port()
        overrides.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'central.db'}")
        if not subprocess:
            values = {k.removeprefix("ACEFLEET_CENTRAL_").lower(): v for k, v in FAST.items()}
            values.update(overrides)
            settings = CentralSettings(
                listen_port=port,
                service_keys=[SERVICE_KEY],
                operator_keys=[OPERATOR_KEY],
                viewer_keys=[VIEWER_KEY],
                **values,  # type: ignore[arg-type]
            )
            thread_central = ThreadCentral(settings)
            started.append(thread_central)
            return thread_central
        env = {
            **FAST,
            "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
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
def central(start_central: StartCentral) -> Running:
    return start_central()


def _client(svc: Running, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=svc.url, headers=headers, timeout=10)


@pytest.fixture
def service(central: Running) -> Iterator[httpx.Client]:
    with _client(central, SERVICE_KEY) as c:
        yield c


@pytest.fixture
def operator(central: Running) -> Iterator[httpx.Client]:
    with _client(central, OPERATOR_KEY) as c:
        yield c


@pytest.fixture
def viewer(central: Running) -> Iterator[httpx.Client]:
    with _client(central, VIEWER_KEY) as c:
        yield c


@pytest.fixture
def anonymous(central: Running) -> Iterator[httpx.Client]:
    with _client(central, None) as c:
        yield c


CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium headless as root; the background-networking flags keep it from calling out
# (this machine's closed network refuses those connections, many at a time).
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():  # a failure with the install hint, not a skip
        pytest.fail(tools.missing(str(CHROMIUM), "chromium"), pytrace=False)
    return CHROMIUM
