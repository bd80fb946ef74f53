"""The CLI against a real central: ``main(argv)`` in-process with its output captured, and a
small fleet (one edge, two engines, a claim, a live stream) heartbeated into central."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from acefleetctl.cli import main
from acefleetctl.config import CONFIG_ENV, KEY_ENV, URL_ENV
from tests.central import conftest as central_fixtures
from tests.central.conftest import Running
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    VIEWER_KEY,
    Agent,
    claim_body,
    event,
    send_events,
)

# Central on a loopback port with a service, an operator and a viewer key (tests/central's).
start_central = central_fixtures.start_central


@pytest.fixture
def central(start_central: central_fixtures.StartCentral) -> Running:
    """Hosts stay live for the whole test: tests/central's 1.5 s staleness would let a host go
    stale on a busy machine, and central's log line about it land in the captured output."""
    return start_central(stale_after_s="60", lost_after_s="120")


@dataclass
class Run:
    code: int
    out: str
    err: str


Cli = Callable[..., Run]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """Runs ``acefleet ARGV`` in-process; no URL, key or config file leaks in from the machine."""
    for name in (URL_ENV, KEY_ENV, CONFIG_ENV, "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@dataclass
class Fleet:
    url: str
    service: httpx.Client
    agent: Agent
    claim_id: str
    busy: str  # the engine the stream's claim placed it on
    free: str  # the other engine

    def as_operator(self) -> list[str]:
        return ["--url", self.url, "--api-key", OPERATOR_KEY]

    def as_viewer(self) -> list[str]:
        return ["--url", self.url, "--api-key", VIEWER_KEY]


def make_fleet(url: str, service: httpx.Client) -> Fleet:
    """edge0 with engines edge0-eng0 and edge0-eng1; stream s-1 of id:chan with 3 viewers on the
    engine central placed its claim on (``busy``)."""
    agent = Agent("edge0", 2)
    agent.beat(service)
    grant = service.post("/v1/claims", json=claim_body("id:chan", "edge0")).json()
    started = event(
        "stream_started",
        "s-1",
        content_key="id:chan",
        claim_id=grant["claim_id"],
        engine_id=grant["engine"]["id"],
    )
    send_events(service, "edge0", started, event("viewers", "s-1", viewers=3))
    busy = grant["engine"]["id"]
    free = next(e.id for e in agent.engines if e.id != busy)
    return Fleet(url, service, agent, grant["claim_id"], busy, free)


def service_client(svc: Running) -> httpx.Client:
    return httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY})


@pytest.fixture
def fleet(central: Running) -> Iterator[Fleet]:
    with service_client(central) as service:
        yield make_fleet(central.url, service)
