"""The HTTP surface: roles, error shapes, ETags, rate limits, live updates, metrics, OpenAPI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from orchestrator.central import openapi
from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    VIEWER_KEY,
    Agent,
    claim_body,
)

REPO = Path(__file__).resolve().parents[2]


def test_roles_are_enforced(
    central: Running,
    anonymous: httpx.Client,
    viewer: httpx.Client,
    service: httpx.Client,
    operator: httpx.Client,
) -> None:
    Agent("edge0", 1).beat(service)
    claim = claim_body("id:r", "edge0")
    hb = Agent("edge0", 1).heartbeat_body().model_dump(mode="json")
    mutations = [
        ("POST", "/v1/claims", claim),
        ("POST", "/v1/hosts/edge0/heartbeat", hb),
        ("POST", "/v1/hosts/edge0/drain", None),
        ("PUT", "/v1/provisioning/buffer", {"warm_buffer_per_edge": 1}),
    ]
    for method, path, body in mutations:
        r = anonymous.request(method, path, json=body)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"  # RFC 9110: a 401 names the scheme
        r = viewer.request(method, path, json=body)
        assert r.status_code == 403, path
        assert r.json()["error"]["code"] == "forbidden"
    assert anonymous.get("/v1/hosts").status_code == 401
    # A key in a URL would leak to logs: never accepted there, not even on the live feed.
    assert anonymous.get(f"/v1/hosts?api_key={VIEWER_KEY}").status_code == 401
    assert anonymous.get(f"/v1/live?api_key={VIEWER_KEY}").status_code == 401
    assert (
        anonymous.get("/v1/hosts", headers={"X-API-Key": "wrong-key-wrong-key"}).status_code == 401
    )
    assert viewer.get("/v1/hosts").status_code == 200
    # Services place work; operators steer the fleet; neither does the other's job.
    assert operator.post("/v1/claims", json=claim).status_code == 403
    assert service.post("/v1/hosts/edge0/drain").status_code == 403
    assert operator.post("/v1/hosts/edge0/drain").status_code == 200
    bearer = {"Authorization": f"Bearer {SERVICE_KEY}"}
    assert anonymous.post("/v1/claims", json=claim, headers=bearer).status_code in (200, 503)
    # Health and metrics stay open for load balancers and Prometheus.
    assert anonymous.get("/livez").json() == {"status": "ok"}
    assert anonymous.get("/readyz").status_code == 200
    assert anonymous.get("/metrics").status_code == 200


MALFORMED = [
    ("/v1/claims", b"{not json", "body"),
    ("/v1/claims", b'{"content_key": "nokind", "proxy_id": "p", "host": "h"}', "content_key"),
    ("/v1/claims", b'{"content_key": "id:a", "proxy_id": "p"}', "host"),
    ("/v1/claims", b'{"content_key": "id:a", "proxy_id": "p", "host": "h", "x": 1}', "x"),
    ("/v1/events", b'{"proxy_id": "p", "events": [{"event_id": "e"}]}', "type"),
    ("/v1/hosts/h/heartbeat", b"[]", "body"),
]


def test_malformed_bodies_get_json_errors(service: httpx.Client) -> None:
    for path, body, field in MALFORMED:
        r = service.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, body)
        error = r.json()["error"]
        assert error["code"] == "invalid_request"
        assert field in error["message"], error
        # The service keeps serving everyone else.
        assert service.get("/v1/fleet").status_code == 200


def test_heartbeat_for_another_host_is_refused(service: httpx.Client) -> None:
    hb = Agent("edge0", 1).heartbeat_body().model_dump(mode="json")
    r = service.post("/v1/hosts/edge9/heartbeat", json=hb)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "host_mismatch"


def test_unknown_routes_use_the_error_shape(anonymous: httpx.Client) -> None:
    r = anonymous.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_list_endpoints_have_etags(service: httpx.Client, viewer: httpx.Client) -> None:
    agent = Agent("edge0", 1)
    agent.beat(service)
    for path in ("/v1/hosts", "/v1/engines", "/v1/streams", "/v1/claims", "/v1/streams/history"):
        r = viewer.get(path)
        tag = r.headers["etag"]
        assert viewer.get(path, headers={"If-None-Match": tag}).status_code == 304, path
    before = viewer.get("/v1/engines").headers["etag"]
    service.post("/v1/claims", json=claim_body("id:e", "edge0"))
    r = viewer.get("/v1/engines", headers={"If-None-Match": before})
    assert r.status_code == 200
    assert r.headers["etag"] != before


def test_rate_limit_headers_and_429(start_central: StartCentral) -> None:
    svc = start_central(rate_limit_rps="1")
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": VIEWER_KEY}) as viewer:
        first = viewer.get("/v1/hosts")
        assert first.headers["x-ratelimit-limit"] == "2"
        assert first.headers["x-ratelimit-remaining"] == "1"
        statuses = [viewer.get("/v1/fleet").status_code for _ in range(5)]
        assert 429 in statuses
        r = viewer.get("/v1/fleet")
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
    # Another key has its own bucket.
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}) as operator:
        assert operator.get("/v1/fleet").status_code == 200


def test_live_updates_stream_fleet_changes(central: Running, service: httpx.Client) -> None:
    Agent("edge0", 2).beat(service)
    url = f"{central.url}/v1/live"
    frames: list[dict[str, object]] = []
    headers = {"X-API-Key": VIEWER_KEY}
    with httpx.Client(timeout=10, headers=headers) as client, client.stream("GET", url) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        for line in lines:  # bounded by the client timeout and the break below
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
                if len(frames) == 1:
                    Agent("edge1", 1).beat(service)
                if len(frames) == 2:
                    break
    assert [h["name"] for h in frames[0]["hosts"]] == ["edge0"]  # type: ignore[index]
    assert [h["name"] for h in frames[1]["hosts"]] == ["edge0", "edge1"]  # type: ignore[index]
    assert len(frames[1]["engines"]) == 3  # type: ignore[arg-type]


def test_metrics_cover_fleet_claims_and_heartbeats(
    service: httpx.Client, anonymous: httpx.Client
) -> None:
    agent = Agent("edge0", 2)
    agent.beat(service)
    agent.beat(service)
    service.post("/v1/claims", json=claim_body("id:m", "edge0"))
    text = anonymous.get("/metrics").text
    for needle in (
        'acefleet_central_hosts{status="live"} 1.0',
        'acefleet_central_engines{health="healthy"} 2.0',
        'acefleet_central_claims_live{kind="engine",state="pending"} 1.0',
        "acefleet_central_claim_duration_seconds_count 1.0",
        'acefleet_central_claim_answers_total{outcome="engine"} 1.0',
        "acefleet_central_heartbeat_lag_seconds_count 1.0",
        "acefleet_central_heartbeat_age_max_seconds",
        'acefleet_central_engine_slots{state="free"} 1.0',
    ):
        assert needle in text, needle


def test_committed_openapi_matches_the_app() -> None:
    committed = (REPO / "docs/openapi/central.json").read_text(encoding="utf-8")
    assert committed == openapi.render(), (
        "regenerate: python -m orchestrator.central.openapi docs/openapi/central.json"
    )


def _central(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "acefleet-central"
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_settings_refuse_missing_and_placeholder_keys() -> None:
    r = _central("--check-config")
    assert r.returncode == 2
    assert "service_keys" in r.stderr
    r = _central("--check-config", "--operator-keys", "changeme")
    assert r.returncode == 2
    assert "at least 16" in r.stderr
    r = _central(
        "--check-config",
        env={"ACEFLEET_CENTRAL_SERVICE_KEYS": SERVICE_KEY, "ACEFLEET_CENTRAL_STALE_AFTER_S": "40"},
    )
    assert r.returncode == 2
    assert "lost_after_s" in r.stderr
    r = _central("--check-config", "--service-keys", f"{SERVICE_KEY},{SERVICE_KEY}x")
    assert r.returncode == 0, r.stderr
    # both keys are accepted, and --check-config never prints them
    assert json.loads(r.stdout)["service_keys"] == ["***", "***"]
    assert SERVICE_KEY not in r.stdout


def test_claim_fast_path_keeps_headers_and_limits(start_central: StartCentral) -> None:
    svc = start_central(service_rate_limit_rps="1")
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        r = service.post("/v1/claims", json=claim_body("id:z", "edge0"))
        assert r.status_code == 503  # no hosts yet; answered by the fast path
        assert r.headers["x-ratelimit-limit"] == "2"
        assert r.headers["content-type"] == "application/json"
        statuses = [
            service.post("/v1/claims", json=claim_body("id:z", "edge0")).status_code
            for _ in range(4)
        ]
        assert 429 in statuses
        r = service.delete("/v1/claims/whatever")
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
