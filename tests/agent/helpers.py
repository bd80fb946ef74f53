"""Helpers for agent tests: the agent process handle, Docker shell-outs, polling."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import procs

API_KEY = "agent-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SIM_IMAGE = "acefleet/engine-sim"
# Seconds an engine may take to boot in a test: generous, because the 2-core machine is shared
# and 20 simulators booting at once can take 20 s each there.
BOOT = 90.0


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


def image_exists(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    )


def remove_by_label(label: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
    if ids:
        docker("rm", "-f", *ids, check=False)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0, every: float = 0.2) -> Any:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Agent:
    host: str
    svc: procs.Service
    args: list[str]
    check_port: int
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.svc.url, timeout=10)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, headers=AUTH, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.delete(path, headers=AUTH, **kw)

    def engines(self) -> list[dict[str, Any]]:
        r = self.get("/v1/engines")
        r.raise_for_status()
        engines: list[dict[str, Any]] = r.json()["engines"]
        return engines

    def healthy(self) -> list[dict[str, Any]]:
        return [e for e in self.engines() if e["health"] == "healthy"]

    def status(self) -> dict[str, Any]:
        r = self.get("/v1/status")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                key = line.split(" ")[0]
                if key == name or key.startswith(name + "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total


AgentFactory = Callable[..., Agent]


def _joined(flags: tuple[str, ...]) -> list[str]:
    """``--engine-extra-args X`` → ``--engine-extra-args=X`` (X starts with a dash)."""
    out: list[str] = []
    items = iter(flags)
    for flag in items:
        out.append(f"{flag}={next(items)}" if flag == "--engine-extra-args" else flag)
    return out


def restart(agent: Agent, log_dir: Path) -> Agent:
    """Start a new agent process with the same arguments (after the old one died)."""
    svc = procs.start(
        "acefleet-agent",
        agent.args,
        port=agent.svc.port,
        ready_path="/livez",
        log_dir=log_dir / "restarted",
        env={"ACEFLEET_AGENT_API_KEY": API_KEY},
    )
    new = Agent(agent.host, svc, agent.args, agent.check_port)
    wait_for("restarted agent ready", lambda: new.get("/readyz").status_code == 200)
    return new


def port_range(size: int) -> tuple[int, int]:
    """A run of ``size`` consecutive free ports (random spot, so parallel runs rarely meet)."""
    for _ in range(50):
        low = random.randrange(20000, 30000)
        if all(_free(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise AssertionError("no free port range found")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
