"""Every PromQL expression of the alert rules and the Grafana dashboards names only metrics the
services really export: a real central, agent (engines of the simulator image in the real
dockerd) and proxy, and a real HAProxy with its exporter, are scraped, and each name an
expression reads must be in some scrape, be a recording rule of ours, or be one of Prometheus'
own series (BUILTIN)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fleet.harness import SIM_IMAGE, Fleet
from tests.monitoring.conftest import ROLE
from tests.monitoring.promql import (
    dashboard_expressions,
    exposed_names,
    metric_names,
    rule_expressions,
)
from tests.support import procs, tools

DASHBOARDS = sorted((ROLE / "files" / "dashboards").glob("*.json"))
# Series Prometheus makes itself, not any service: up (1 when a scrape worked) for every target,
# ALERTS for every pending or firing alert.
BUILTIN = {"up", "ALERTS"}

HAPROXY_CFG = """
global
    maxconn 100
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
# The haproxy role's exporter frontend (roles/haproxy/templates/haproxy.cfg.j2), and one frontend,
# backend and server so every scope of the exporter has an object to report.
frontend metrics
    bind 127.0.0.1:{metrics}
    no log
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend viewers
    bind 127.0.0.1:{viewers}
    default_backend edges
backend edges
    server edge1 127.0.0.1:{viewers} check
backend lbhost_lb1
"""


# --- the extractor ----------------------------------------------------------------------------
def test_extractor_names_metrics_not_functions_labels_or_keywords() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, acefleet_host) (rate(acefleet_proxy_ttfb_seconds_"
        'bucket{acefleet_host=~"$host", job="x"}[$__rate_interval]))) > on (acefleet_host) '
        "group_left (reason) max without (instance) (acefleet_agent_breaker_open offset 5m) "
        'unless count(ALERTS{alertstate="firing"}) or vector(1e3) and bool acefleet:vip_holder'
    )
    assert metric_names(expr) == {
        "acefleet_proxy_ttfb_seconds_bucket",
        "acefleet_agent_breaker_open",
        "ALERTS",
        "acefleet:vip_holder",
    }


def test_extractor_reads_every_operand_of_binary_expressions() -> None:
    assert metric_names("a_total / ignoring(x) b + c * 8 - d{e='f'}") == {"a_total", "b", "c", "d"}
    assert metric_names("sum(increase(x_total[10m:1m]))") == {"x_total"}


def test_exposition_names_follow_prometheus_client_suffixes() -> None:
    text = (
        "# HELP acefleet_proxy_failovers_total Upstreams replaced\n"
        "# TYPE acefleet_proxy_failovers counter\n"
        "acefleet_proxy_failovers_total 0.0\n"
        "# TYPE acefleet_proxy_viewer_drops counter\n"  # labelled, no child yet
        "# TYPE acefleet_proxy_ttfb_seconds histogram\n"
        "# TYPE haproxy_frontend_http_requests_total counter\n"
        "# TYPE acefleet_proxy_viewers gauge\n"
    )
    names = exposed_names(text)
    assert "acefleet_proxy_failovers_total" in names
    assert "acefleet_proxy_failovers" not in names  # a counter is never exposed without _total
    assert "acefleet_proxy_viewer_drops_total" in names
    assert "acefleet_proxy_ttfb_seconds_bucket" in names
    assert "acefleet_proxy_ttfb_seconds" not in names
    assert "haproxy_frontend_http_requests_total" in names
    assert "acefleet_proxy_viewers" in names


# --- the services' real scrapes ---------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(
    docker_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, set[str]]]:
    """What each service exposes on /metrics: central, an agent, a proxy (one edge of the fleet
    harness) and HAProxy's exporter."""
    probe = subprocess.run(["docker", "image", "inspect", SIM_IMAGE], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"{SIM_IMAGE} is missing: run scripts/build-images.sh")
    haproxy = tools.require("haproxy", "haproxy")
    tmp = tmp_path_factory.mktemp("scrape")
    # Engine ports of its own (tests/fleet uses 23000 and 23600), for runs side by side.
    fleet = Fleet.up(tmp / "fleet", edges=1, engines=2, base_port=24600)
    metrics_port, viewers_port = procs.free_port(), procs.free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(metrics=metrics_port, viewers=viewers_port))
    lb = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        edge = next(iter(fleet.edges.values()))
        urls = {
            "central": fleet.central_url,
            "agent": f"http://127.0.0.1:{edge.agent_port}",
            "proxy": f"http://127.0.0.1:{edge.proxy_port}",
            "haproxy": f"http://127.0.0.1:{metrics_port}",
        }
        found = {}
        for service, url in urls.items():
            found[service] = exposed_names(_scrape(url + "/metrics"))
        yield found
    finally:
        lb.terminate()
        lb.wait(timeout=10)
        fleet.close()


def _scrape(url: str) -> str:
    last = ""
    for _ in range(100):  # bounded: HAProxy may need a moment to bind
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code == 200:
                return r.text
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise AssertionError(f"{url}: {last}")


def _expressions(rendered: Path) -> list[tuple[str, str]]:
    rules = [(f"rules: {n}", e) for n, e in rule_expressions(rendered / "acefleet.rules.yml")]
    return rules + [x for d in DASHBOARDS for x in dashboard_expressions(d)]


@pytest.mark.docker
def test_each_service_exports_its_family(exported: dict[str, set[str]]) -> None:
    prefixes = {
        "central": "acefleet_central_",
        "agent": "acefleet_agent_",
        "proxy": "acefleet_proxy_",
        "haproxy": "haproxy_",
    }
    for service, prefix in prefixes.items():
        assert any(n.startswith(prefix) for n in exported[service]), (service, exported[service])


@pytest.mark.docker
def test_rules_and_dashboards_name_only_exported_metrics(
    rendered: Path, exported: dict[str, set[str]]
) -> None:
    records = {n for n, _ in rule_expressions(rendered / "acefleet.rules.yml") if ":" in n}
    known = set().union(*exported.values()) | records | BUILTIN
    expressions = _expressions(rendered)
    assert len(expressions) > 80  # 17 rules and four dashboards' panels
    unknown = {
        f"{where}: {sorted(metric_names(expr) - known)}"
        for where, expr in expressions
        if metric_names(expr) - known
    }
    assert not unknown, "metrics no service exports:\n" + "\n".join(sorted(unknown))
    # The check has teeth: every expression names at least one metric it verified.
    assert all(metric_names(expr) for _, expr in expressions)


# --- the dashboards themselves ----------------------------------------------------------------
def test_four_dashboards_with_unique_uids_and_a_prometheus_datasource() -> None:
    docs = [json.loads(d.read_text()) for d in DASHBOARDS]
    assert {d["uid"] for d in docs} == {
        "acefleet-fleet",
        "acefleet-edge",
        "acefleet-engines",
        "acefleet-central",
    }
    for doc in docs:
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), doc["uid"]
        for panel in doc["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (doc["uid"], panel["title"])
            assert panel["targets"], (doc["uid"], panel["title"])
            assert panel["gridPos"]["w"] <= 24


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each dashboard query (Grafana's variables replaced by values), as
    recording rules of a throwaway rules file."""
    promtool = tools.require("promtool", "prometheus")
    values = {"$__rate_interval": "5m", "$host": ".*"}
    rules = []
    for i, dashboard in enumerate(DASHBOARDS):
        for j, (_, expr) in enumerate(dashboard_expressions(dashboard)):
            for var, value in values.items():
                expr = expr.replace(var, value)
            rules.append({"record": f"dashboard:q{i}_{j}", "expr": expr})
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
