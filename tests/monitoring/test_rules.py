"""acefleet's alert rules: promtool accepts them, and promtool's unit tests (files/rules_tests,
beside the rules in the role) see each alert fire on a synthetic series with its labels and
annotations, and stay quiet on a healthy one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.conftest import RULES_TESTS
from tests.support import tools

# Every alert the issue asks for (and HAProxy down, lost edges, rejected claims).
ALERTS = {
    "AcefleetEdgeDown",
    "AcefleetEdgeLost",
    "AcefleetCentralDown",
    "AcefleetHaproxyDown",
    "AcefleetEngineUnhealthy",
    "AcefleetEngineReplacedInLoop",
    "AcefleetProvisioningBlocked",
    "AcefleetFleetFreeSlotsLow",
    "AcefleetEdgeNoHealthyTunnel",
    "AcefleetViewerStalls",
    "AcefleetViewerSkips",
    "AcefleetFailovers",
    "AcefleetClaimErrors",
    "AcefleetClaimsRejected",
    "AcefleetEventQueueDrops",
    "AcefleetHistoryQueueDrops",
    "AcefleetVipMoved",
}

HOST = re.compile(r'acefleet_host="([^"]+)"')


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    promtool = tools.require("promtool", "prometheus")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def _alerts(rules: Path) -> set[str]:
    groups = yaml.safe_load(rules.read_text())["groups"]
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def test_promtool_accepts_the_rules(rendered: Path) -> None:
    done = _promtool("check", "rules", "acefleet.rules.yml", cwd=rendered)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _alerts(rendered / "acefleet.rules.yml") == ALERTS


def test_every_alert_fires_and_stays_quiet_in_promtools_unit_tests(
    rendered: Path, tmp_path: Path
) -> None:
    for test_file in RULES_TESTS.glob("*.test.yml"):
        shutil.copy(test_file, tmp_path)
    shutil.copy(rendered / "acefleet.rules.yml", tmp_path)
    tests = yaml.safe_load((tmp_path / "acefleet.rules.test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            if case["exp_alerts"]:
                firing.add(case["alertname"])
            if not case["exp_alerts"] or _has_quiet_series(test):
                quiet.add(case["alertname"])
    assert firing == ALERTS, f"alerts never seen firing: {ALERTS - firing}"
    assert quiet == ALERTS, f"alerts never checked quiet: {ALERTS - quiet}"
    names = sorted(p.name for p in tmp_path.glob("*.test.yml"))
    done = _promtool("test", "rules", *names, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _has_quiet_series(test: dict[str, Any]) -> bool:
    """A test whose input holds the series of a second, healthy host: it must stay out of the
    alerts, or promtool fails on the unexpected alert."""
    hosts = {m.group(1) for s in test["input_series"] for m in [HOST.search(s["series"])] if m}
    return len(hosts) > 1
