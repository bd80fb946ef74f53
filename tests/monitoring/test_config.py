"""The Prometheus configuration the role writes from the inventory: promtool accepts it, and it
scrapes every central, agent, proxy and HAProxy of the inventory on the shared ports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support import tools


def test_promtool_accepts_the_generated_config(rendered: Path, tmp_path: Path) -> None:
    promtool = tools.require("promtool", "prometheus")
    config = yaml.safe_load((rendered / "prometheus.yml").read_text())
    # The rules glob points at /etc/prometheus/rules; point it at the rendered rules so promtool
    # checks the pair as the host has it.
    (tmp_path / "rules").mkdir()
    shutil.copy(rendered / "acefleet.rules.yml", tmp_path / "rules")
    config["rule_files"] = [str(tmp_path / "rules" / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


def test_scrape_targets_come_from_the_inventory(rendered: Path) -> None:
    config = yaml.safe_load((rendered / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: {
            (t, group.get("labels", {}).get("acefleet_host"))
            for group in job["static_configs"]
            for t in group["targets"]
        }
        for job in config["scrape_configs"]
    }
    assert jobs["acefleet_central"] == {("control1:8000", "control1")}
    # acefleet_address wins over the inventory name (edge2 in the test inventory).
    # edge1's agent keeps the role's loopback-only API (unreachable): not scraped; edge2's listens
    # beyond loopback.
    assert jobs["acefleet_agent"] == {("10.0.0.32:8100", "edge2")}
    assert jobs["acefleet_proxy"] == {("edge1:6880", "edge1"), ("10.0.0.32:6880", "edge2")}
    assert jobs["haproxy"] == {("lb1:8404", "lb1"), ("lb2:8404", "lb2")}
    # The VIP from the lb hosts' keepalived_vip, without acefleet_host (any lb may answer).
    assert jobs["haproxy_vip"] == {("172.30.77.250:8404", None)}
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert "alerting" not in config  # no Alertmanager by default
