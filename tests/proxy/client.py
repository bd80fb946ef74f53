"""Helpers for the proxy tests. The stream client itself (``request``, ``Stream``) is the shared
one in tests/support/viewers.py, re-exported here."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.support.viewers import Stream, packets_aligned, request

__all__ = [
    "Stream",
    "engine_infohash",
    "fault",
    "get_json",
    "metric",
    "packets_aligned",
    "request",
    "sim_sessions",
    "wait_for",
]


def get_json(url: str) -> Any:
    return httpx.get(url, timeout=5, trust_env=False).json()


def sim_sessions(sim_url: str) -> dict[str, Any]:
    data: dict[str, Any] = get_json(f"{sim_url}/_sim/sessions")
    return data


def metric(proxy_url: str, name: str, labels: str = "") -> float:
    """The value of one sample from /metrics (0 when absent)."""
    text = httpx.get(f"{proxy_url}/metrics", timeout=5, trust_env=False).text
    wanted = name + (f"{{{labels}}}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


async def wait_for(predicate: Any, within: float = 10.0, interval: float = 0.1) -> None:
    end = time.monotonic() + within
    while True:
        if await asyncio.to_thread(predicate):
            return
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


def fault(sim_url: str, **body: Any) -> None:
    """Inject a simulator fault (the simulator must run with --chaos)."""
    r = httpx.post(f"{sim_url}/_sim/faults", json=body, timeout=5, trust_env=False)
    r.raise_for_status()


def engine_infohash(sim_url: str, content_id: str) -> str:
    """Ask the simulator directly which infohash ``content_id`` has; stop that session again."""
    query = {"id": content_id, "format": "json", "pid": "infohash-probe"}
    r = httpx.get(f"{sim_url}/ace/getstream", params=query, timeout=5, trust_env=False)
    response = r.json()["response"]
    httpx.get(response["command_url"], params={"method": "stop"}, timeout=5, trust_env=False)
    return str(response["infohash"])
