"""The metric names a PromQL expression reads, for checking the alert rules and the dashboards
against what the services really export. promtool parses PromQL but cannot list the names, so
this is a small extractor: after strings, label matchers, ranges, Grafana variables and the label
lists of by/without/on/ignoring/group_left/group_right are blanked, every identifier that is not
followed by "(" (a function or an aggregation) and is not a keyword is a metric name."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"offset", "bool", "atan2", "inf", "nan", "Inf", "NaN"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?")
# Grafana's template query label_values(<selector>, <label>): its selector is PromQL.
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", "{}", s)  # label matchers (their names are labels, not metrics)
    s = re.sub(r"\[[^\]]*\]", "[]", s)  # range and subquery durations
    s = re.sub(r"\$\{?\w+\}?", "", s)  # Grafana variables ($__rate_interval, ${host})
    s = _LABEL_LIST.sub(" ", s)  # "sum by (x) (...)" becomes "sum  (...)": a call
    names = set()
    for m in _IDENT.finditer(s):
        name, call = m.group(1), m.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    return names


def rule_expressions(rules: Path) -> Iterator[tuple[str, str]]:
    """(rule name, expr) of a Prometheus rules file."""
    for group in yaml.safe_load(rules.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def dashboard_expressions(dashboard: Path) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of a Grafana dashboard."""
    doc: dict[str, Any] = json.loads(dashboard.read_text())
    for panel in _panels(doc.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"{dashboard.name}: {panel['title']} ({target['refId']})", target["expr"]
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = _LABEL_VALUES.match(query)
            yield f"{dashboard.name}: variable {var['name']}", m.group(1) if m else query


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows hold their panels


def exposed_names(text: str) -> set[str]:
    """The series names a Prometheus text exposition offers, families without samples included
    (a labelled counter nobody incremented yet still has its # TYPE line): a counter family
    ``x`` of prometheus_client is exposed as ``x_total`` (and ``x_created``), a histogram as
    ``x_bucket``, ``x_sum`` and ``x_count``."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "counter":
                names |= {name} if name.endswith("_total") else {name + "_total", name + "_created"}
            elif kind == "histogram":
                names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
            elif kind == "summary":
                names |= {name + s for s in ("", "_sum", "_count", "_created")}
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
