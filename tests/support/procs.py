"""Start acefleet services as real subprocesses on loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (utime + stime from /proc, in seconds)."""
    # the command name in parentheses may hold spaces: split after its closing parenthesis
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int, key: str = "VmRSS") -> int:
    """A memory figure of a process from /proc/<pid>/status in KiB (VmRSS: resident now, VmHWM:
    its peak); 0 when the line is absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# Ports handed out lie below the kernel's ephemeral range (32768-60999 here, and Linux's
# default): a port the kernel picked could be taken, between this check and the service's bind,
# by any client socket of the run (seen in CI: "address already in use" for an agent under two
# pytest-xdist workers). Each xdist worker gets its own slice, so workers never race each other.
PORTS = range(20000, 32768)


def _port_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = len(PORTS) // max(1, count)
    return range(PORTS.start + index * size, PORTS.start + (index + 1) * size)


_slice = _port_slice()
_next = [_slice.start + os.getpid() % len(_slice)]  # another run at once starts elsewhere


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now, from this process's slice (in turn: a port just handed out is
    not handed out again until the slice has gone round)."""
    for _ in range(len(_slice)):
        port = _next[0]
        _next[0] = port + 1 if port + 1 < _slice.stop else _slice.start
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue  # in use (or lingering): the next one
            return port
    raise RuntimeError(f"no free port in {_slice.start}-{_slice.stop - 1}")


@dataclass
class Service:
    """A running service process; ``url`` is its base URL on loopback."""

    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
        self.proc.wait(timeout=15)

    def stop(self, timeout: float = 10) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def start(
    name: str,
    args: Sequence[str],
    *,
    port: int,
    ready_path: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
    expect_status: int = 200,
    ca_file: str | None = None,
) -> Service:
    """Run console script ``name`` with ``args`` and wait until GET ``ready_path`` answers (over
    HTTPS verified against ``ca_file`` when one is given)."""
    exe = BIN / name
    argv = [str(exe) if exe.exists() else name, *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    fh = log_path.open("wb")
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    svc = Service(name, argv, port, proc, log_path, env or {})
    ready_url = svc.url + ready_path
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        ready_url = f"https://127.0.0.1:{port}{ready_path}"
        verify = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while time.monotonic() < deadline:
        if not svc.alive():
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{svc.log()}")
        try:
            r = httpx.get(ready_url, timeout=1.0, verify=verify)
            if r.status_code == expect_status:
                return svc
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)
    svc.stop()
    raise RuntimeError(f"{name} not ready on {ready_url} after {timeout}s ({last}):\n{svc.log()}")


def start_clip_sim(clip_dir: Path, log_dir: Path, *extra: str) -> Service:
    """A simulator on a free loopback port playing the real clips in ``clip_dir`` (fast timing)."""
    port = free_port()
    media = ["--media", "clips", "--clip-dir", str(clip_dir)]
    return start(
        "acefleet-engine-sim",
        ["--http-port", str(port), "--host", "127.0.0.1", "--timing", "fast", *media, *extra],
        port=port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=log_dir,
    )
