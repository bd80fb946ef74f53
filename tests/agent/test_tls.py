"""The agent over TLS (docs/tls.md, internal section): the real ``acefleet-agent`` serves its
API over HTTPS with the certificate it is given and heartbeats to an HTTPS central, verifying
it against ``tls_ca_file``; central then knows the agent by its https URL. An agent whose CA
file names another CA refuses central's certificate: its heartbeats fail and central never
hears of it."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agent.helpers import API_KEY, remove_by_label, wait_for
from tests.central.conftest import start_https_central
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY
from tests.support import procs
from tests.support.tls_ca import TestCA, start_https

pytestmark = pytest.mark.docker


@pytest.fixture
def services(docker_available: None) -> Iterator[list[procs.Service]]:
    started: list[procs.Service] = []
    yield started
    for svc in started:
        svc.stop()


def test_the_agent_serves_https_and_heartbeats_to_an_https_central(
    tmp_path: Path, log_dir: Path, services: list[procs.Service], engine_image: str
) -> None:
    ca = TestCA(tmp_path / "ca")
    other = TestCA(tmp_path / "other", name="some other CA")
    central = start_https_central(ca, tmp_path, log_dir)
    services.append(central)
    central_url = f"https://127.0.0.1:{central.port}"
    edge = ca.issue("edge")
    names: list[str] = []

    def agent(ca_file: str) -> tuple[str, int, procs.Service]:
        name = f"t{uuid.uuid4().hex[:8]}"
        names.append(name)
        port = procs.free_port()
        svc = start_https(
            "acefleet-agent",
            [
                "--host",
                name,
                "--listen-port",
                str(port),
                "--agent-check-port",
                "0",
                "--engine-image",
                engine_image,
                "--min-engines",
                "0",
                "--log-format",
                "json",
                "--central-url",
                central_url,
                "--tls-cert-file",
                edge.cert_file,
                "--tls-key-file",
                edge.key_file,
                "--tls-ca-file",
                ca_file,
            ],
            port=port,
            ca_file=ca.ca_file,
            log_dir=log_dir,
            env={
                "ACEFLEET_AGENT_API_KEY": API_KEY,
                "ACEFLEET_AGENT_CENTRAL_API_KEY": SERVICE_KEY,
                "ACEFLEET_AGENT_HEARTBEAT_INTERVAL_S": "0.5",
            },
        )
        services.append(svc)
        return name, port, svc

    try:
        trusted = ssl.create_default_context(cafile=ca.ca_file)
        ops = httpx.Client(
            base_url=central_url, verify=trusted, headers={"X-API-Key": OPERATOR_KEY}
        )

        def hosts() -> dict[str, str]:
            items = ops.get("/v1/hosts").json()["items"]
            return {h["name"]: h["agent_url"] for h in items}

        with ops:
            good, good_port, _ = agent(ca.ca_file)
            wait_for("the agent in central", lambda: good in hosts(), timeout=30)
            assert hosts()[good] == f"https://127.0.0.1:{good_port}"
            # the agent's own API answers over HTTPS (readiness was polled over it too)
            r = httpx.get(
                f"https://127.0.0.1:{good_port}/v1/engines",
                verify=trusted,
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert r.status_code == 200, r.text

            bad, _, bad_svc = agent(other.ca_file)
            wait_for(
                "the heartbeat refused for central's certificate",
                lambda: "CERTIFICATE_VERIFY_FAILED" in bad_svc.log(),
                timeout=30,
            )
            assert bad not in hosts()
            assert '"heartbeat_failed"' in bad_svc.log()
    finally:
        for svc in services:
            svc.stop()
        for name in names:
            remove_by_label(f"acefleet.host={name}")
