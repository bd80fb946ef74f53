"""The agent's API contract, against a real agent process whose Docker daemon refuses to answer."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.agent.app import create_app
from orchestrator.agent.settings import AgentSettings
from tests.agent.helpers import API_KEY, AUTH
from tests.support import procs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dockerless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Service]:
    """An agent pointed at a Docker socket nobody listens on (shared: tests leave it as found)."""
    tmp_path = tmp_path_factory.mktemp("dockerless")
    log_dir = tmp_path / "logs"
    port, check = procs.free_port(), procs.free_port()
    svc = procs.start(
        "acefleet-agent",
        [
            "--host",
            "nodocker",
            "--listen-port",
            str(port),
            "--agent-check-port",
            str(check),
            "--agent-check-host",
            "127.0.0.1",
            "--docker-url",
            f"unix://{tmp_path}/no-docker.sock",
            "--reconcile-interval-s",
            "0.2",
        ],
        port=port,
        ready_path="/livez",
        log_dir=log_dir,
        env={"ACEFLEET_AGENT_API_KEY": API_KEY},
    )
    svc.env["check_port"] = str(check)
    yield svc
    svc.stop()


def test_refusing_daemon_gives_precise_errors_not_a_crash(dockerless: procs.Service) -> None:
    url = dockerless.url
    r = httpx.get(url + "/readyz")
    assert r.status_code == 503
    assert "Docker daemon unreachable" in r.json()["error"]["message"]
    status = httpx.get(url + "/v1/status").json()
    assert status["ready"] is False
    assert status["provisioning"]["state"] == "blocked"
    assert status["provisioning"]["reason"].startswith("docker_unavailable")
    # the alert rule AcefleetProvisioningBlocked watches this gauge
    assert "acefleet_agent_provisioning_blocked 1.0" in httpx.get(url + "/metrics").text
    r = httpx.post(url + "/v1/engines", headers=AUTH)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "docker_unavailable"
    assert dockerless.alive()
    assert httpx.get(url + "/livez").status_code == 200


def test_mutating_calls_need_the_key(dockerless: procs.Service) -> None:
    url = dockerless.url
    for method, path in [
        ("POST", "/v1/engines"),
        ("DELETE", "/v1/engines/x"),
        ("POST", "/v1/claims"),
        ("DELETE", "/v1/claims/x"),
        ("POST", "/v1/drain"),
        ("DELETE", "/v1/drain"),
    ]:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-key-000000"},
            {"Authorization": API_KEY},
        ):
            r = httpx.request(method, url + path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"]["code"] == "unauthorized"
    # Reads stay open.
    assert httpx.get(url + "/v1/engines").status_code == 200


def test_bad_input_gets_json_4xx_and_the_agent_keeps_serving(dockerless: procs.Service) -> None:
    url = dockerless.url
    cases = [
        ("/v1/claims", {"content_key": "nonsense", "proxy_id": "p", "host": "h"}),
        ("/v1/claims", {"content_key": "id:abc", "proxy_id": "", "host": "h"}),
        ("/v1/claims", {"content_key": "id:abc", "proxy_id": "p", "host": "h", "extra": 1}),
        ("/v1/claims/abc/confirm", {"stat_url": 5}),
    ]
    for path, body in cases:
        r = httpx.post(url + path, headers=AUTH, json=body)
        assert r.status_code == 422, (path, body, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    r = httpx.post(
        url + "/v1/claims",
        headers={**AUTH, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"
    r = httpx.get(url + "/v1/engines/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "engine_not_found"
    r = httpx.delete(url + "/v1/claims/nope", headers=AUTH)
    assert r.json()["error"]["code"] == "claim_not_found"
    assert httpx.get(url + "/v1/nothing-here").json()["error"]["code"] == "not_found"
    # No engines on this host: a claim is refused with a retry hint, not an error page.
    r = httpx.post(
        url + "/v1/claims",
        headers=AUTH,
        json={"content_key": "id:abc", "proxy_id": "p", "host": "h"},
    )
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "no_capacity"
    assert "Retry-After" in r.headers
    assert dockerless.alive()
    assert httpx.get(url + "/v1/status").status_code == 200


def test_engine_list_etag_gives_304(dockerless: procs.Service) -> None:
    url = dockerless.url
    r = httpx.get(url + "/v1/engines")
    etag = r.headers["ETag"]
    assert r.json() == {"host": "nodocker", "engines": []}
    r2 = httpx.get(url + "/v1/engines", headers={"If-None-Match": etag})
    assert r2.status_code == 304
    assert r2.content == b""
    r3 = httpx.get(url + "/v1/engines", headers={"If-None-Match": '"other"'})
    assert r3.status_code == 200


def _agent_check(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while chunk := s.recv(100):
            data += chunk
    return data


def test_drain_switches_the_haproxy_agent_check(dockerless: procs.Service) -> None:
    url, port = dockerless.url, int(dockerless.env["check_port"])
    # No engines and no way to provision: the weight is the floor, but the host is not drained.
    assert _agent_check(port) == b"ready 1%\n"
    assert httpx.post(url + "/v1/drain", headers=AUTH).json() == {"draining": True}
    assert _agent_check(port) == b"drain\n"
    assert httpx.get(url + "/v1/status").json()["draining"] is True
    r = httpx.post(
        url + "/v1/claims",
        headers=AUTH,
        json={"content_key": "id:abc", "proxy_id": "p", "host": "h"},
    )
    assert r.json()["error"]["code"] == "draining"
    assert httpx.delete(url + "/v1/drain", headers=AUTH).json() == {"draining": False}
    assert _agent_check(port) == b"ready 1%\n"


def test_metrics_are_prometheus_text(dockerless: procs.Service) -> None:
    text = httpx.get(dockerless.url + "/metrics").text
    assert "acefleet_agent_engines_free 0.0" in text
    assert "# TYPE acefleet_agent_provisions_total counter" in text


def test_committed_openapi_matches_the_app() -> None:
    app = create_app(AgentSettings(api_key=API_KEY, host="openapi"))
    committed = json.loads((REPO / "docs/openapi/agent.json").read_text())
    assert app.openapi() == committed, "regenerate: python -m orchestrator.agent.openapi"


def test_config_refuses_placeholder_key_and_bad_ranges(log_dir: Path) -> None:
    import subprocess

    def check(*args: str, key: str = API_KEY) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["acefleet-agent", "--check-config", *args],
            capture_output=True,
            text=True,
            env={"PATH": str(procs.BIN), "ACEFLEET_AGENT_API_KEY": key},
            check=False,
        )

    assert check().returncode == 0
    bad = check(key="changeme")
    assert bad.returncode == 2
    assert "api_key" in bad.stderr
    bad = check("--http-port-range", "2000-1000")
    assert bad.returncode == 2
    assert "LOW <= HIGH" in bad.stderr
    bad = check("--min-engines", "5", "--max-engines", "2")
    assert bad.returncode == 2
    bad = check("--central-url", "http://127.0.0.1:1")
    assert bad.returncode == 2
    assert "central_api_key is required" in bad.stderr
