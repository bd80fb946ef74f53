"""The agent-check responder as real HAProxy reads it: weight from free capacity, drain/undrain."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agent.helpers import API_KEY, AUTH, wait_for
from tests.support import procs, tools


@pytest.fixture
def agent_behind_haproxy(tmp_path: Path, log_dir: Path) -> Iterator[tuple[str, Path]]:
    haproxy = tools.require("haproxy", "haproxy")  # a failure with the install hint, not a skip
    port, check, front = procs.free_port(), procs.free_port(), procs.free_port()
    agent = procs.start(
        "acefleet-agent",
        [
            "--host", "hap", "--listen-port", str(port), "--agent-check-port", str(check),
            "--agent-check-host", "127.0.0.1", "--docker-url", f"unix://{tmp_path}/none.sock",
        ],
        port=port,
        ready_path="/livez",
        log_dir=log_dir,
        env={"ACEFLEET_AGENT_API_KEY": API_KEY},
    )  # fmt: skip
    sock = tmp_path / "haproxy.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"""global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend players
    bind 127.0.0.1:{front}
    default_backend edges
backend edges
    server edge1 127.0.0.1:{port} check inter 200ms weight 100 \
        agent-check agent-port {check} agent-inter 200ms
"""
    )
    hap = subprocess.Popen(
        [haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for("haproxy socket", sock.exists, timeout=10)
        yield agent.url, sock
    finally:
        hap.terminate()
        hap.wait(timeout=10)
        agent.stop()


def _server(sock: Path) -> dict[str, str]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") == "edge1":
            return row
    raise AssertionError(f"no edge1 in {lines}")


def test_haproxy_follows_the_agent_check(agent_behind_haproxy: tuple[str, Path]) -> None:
    url, sock = agent_behind_haproxy
    # No engines and no Docker: the agent offers the minimum weight, 1% of 100.
    wait_for("weight from agent", lambda: _server(sock)["weight"] == "1", timeout=15)
    assert _server(sock)["status"] == "UP"
    httpx.post(url + "/v1/drain", headers=AUTH).raise_for_status()
    wait_for("drained", lambda: _server(sock)["status"] == "DRAIN (agent)", timeout=15)
    httpx.delete(url + "/v1/drain", headers=AUTH).raise_for_status()
    wait_for("back up in haproxy", lambda: _server(sock)["status"] == "UP", timeout=15)
    time.sleep(0.5)
    assert _server(sock)["weight"] == "1"
