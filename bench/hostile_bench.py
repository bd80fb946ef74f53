"""Hostile input on the VIP: what each attack costs HAProxy (configured by the haproxy role's
template with its defaults, as tests/ansible/test_haproxy_tls* run it on loopback) and what a
legitimate viewer, from another address, sees meanwhile.

Attacks, each from 127.0.0.1 for --seconds, the viewer on 127.0.0.2:
  baseline     nothing: the viewer's latency alone
  slowloris    --conns connections trickling header lines (one every 2 s), re-opened when cut
  slow-body    the same on the operator port, with a body that never completes
  headers      as fast as it can: requests of 100 headers, and of one 20 KiB header (400)
  bodies       as fast as it can: 1 MiB POSTs on the player port (413)
  guessing     as fast as it can: API calls with wrong keys (401, then 429)

Figures per attack: HAProxy's CPU seconds and resident memory (peak over the run, and per held
attacker connection for the slow attacks), attacker requests or connections and how they ended,
requests that reached a server, and the viewer's latency (p50/p95/max of fresh-connection GETs).

    .venv/bin/python bench/hostile_bench.py [--seconds 15] [--conns 400]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.ansible.test_haproxy_tls import STREAM, Vip, vip
from tests.support import procs


def _address(base: str) -> tuple[str, int]:
    host, port = base.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def _status(sock: socket.socket) -> str:
    """The status code of the answer on ``sock``, or how the connection ended."""
    sock.settimeout(10)
    try:
        head = sock.recv(64)
    except TimeoutError:
        return "no answer"
    except ConnectionResetError:
        return "reset"
    return head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "closed"


class Viewer(threading.Thread):
    """Fresh-connection GETs of a stream from 127.0.0.2, one after another."""

    def __init__(self, lb: Vip) -> None:
        super().__init__(daemon=True)
        self.lb = lb
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                with httpx.Client(base_url=self.lb.plain, transport=transport, timeout=10) as c:
                    ok = c.get(STREAM, headers={"Connection": "close"}).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                self.latencies.append(time.perf_counter() - started)
            else:
                self.failures += 1
            time.sleep(0.02)


def _hold(
    target: tuple[str, int],
    head: bytes,
    drip: bytes,
    conns: int,
    stop: threading.Event,
    out: Counter[str],
) -> None:
    """``conns`` connections that sent ``head`` and send ``drip`` every 2 s; a cut one is
    opened again."""
    held: list[socket.socket] = []
    while not stop.is_set():
        while len(held) < conns and not stop.is_set():
            try:
                sock = socket.create_connection(target, timeout=5)
                sock.sendall(head)
                held.append(sock)
                out["opened"] += 1
            except OSError:
                out["refused"] += 1
                break
        deadline = time.monotonic() + 2
        for sock in list(held):
            try:
                sock.sendall(drip)
            except OSError:
                out["cut"] += 1
                held.remove(sock)
                sock.close()
        out["held_max"] = max(out["held_max"], len(held))
        stop.wait(max(0.0, deadline - time.monotonic()))
    for sock in held:
        sock.close()


def slowloris(lb: Vip, conns: int, stop: threading.Event, out: Counter[str]) -> None:
    """Player-port requests whose head never ends (one more header line every 2 s)."""
    head = b"GET /ace/getstream?id=slow HTTP/1.1\r\nHost: vip\r\n"
    _hold(_address(lb.plain), head, b"X-Slow: 1\r\n", conns, stop, out)


def slow_body(lb: Vip, conns: int, stop: threading.Event, out: Counter[str]) -> None:
    """Operator requests announcing 100 bytes of body and sending one every 2 s."""
    head = b"POST /v1/channels HTTP/1.1\r\nHost: vip\r\nContent-Length: 100\r\n\r\n"
    _hold(_address(lb.control), head, b"x", conns, stop, out)


def _one(base: str, request: bytes, body: bytes = b"") -> str:
    """Send ``request`` (and ``body``, as far as it is read) on a new connection: its answer."""
    try:
        with socket.create_connection(_address(base), timeout=5) as sock:
            sock.sendall(request)
            with contextlib.suppress(OSError):
                sock.sendall(body)
            return _status(sock)
    except OSError:
        return "refused"


def headers(lb: Vip, stop: threading.Event, out: Counter[str]) -> None:
    """Requests of 100 headers and of one 20 KiB header, in turn, as fast as answered."""
    many = b"".join(b"X-Flood-%d: 1\r\n" % n for n in range(100))
    huge = b"X-Huge: " + b"h" * 20000 + b"\r\n"
    head = b"GET /ace/getstream?id=f HTTP/1.1\r\nHost: v\r\n"
    n = 0
    while not stop.is_set():
        n += 1
        out[_one(lb.plain, head + (many if n % 2 else huge) + b"\r\n")] += 1


def bodies(lb: Vip, stop: threading.Event, out: Counter[str]) -> None:
    """1 MiB POSTs on the player port, as fast as answered."""
    body = b"x" * (1024 * 1024)
    head = b"POST /ace/getstream?id=b HTTP/1.1\r\nHost: v\r\nContent-Length: %d\r\n\r\n"
    while not stop.is_set():
        out[_one(lb.plain, head % len(body), body)] += 1


def guessing(lb: Vip, stop: threading.Event, out: Counter[str]) -> None:
    """API calls with wrong keys, as fast as answered."""
    with httpx.Client(base_url=lb.control, timeout=10) as client:
        n = 0
        while not stop.is_set():
            n += 1
            answer = client.get("/v1/hosts", headers={"X-API-Key": f"guess-{n}"})
            out[str(answer.status_code)] += 1


Attack = Callable[[Vip, threading.Event, Counter[str]], None]


@dataclass
class Result:
    haproxy_cpu_s: float
    rss_kib: int
    rss_peak_kib: int
    attacker: Counter[str]
    reached_servers: int
    viewer_latencies: list[float]
    viewer_failed: int

    def line(self, name: str) -> str:
        held = self.attacker.get("held_max", 0)
        grown = self.rss_peak_kib - self.rss_kib
        per_conn = f", {grown / held:.1f} KiB per held connection" if held else ""
        answered = sum(n for k, n in self.attacker.items() if k.isdigit())
        if answered and not held:
            per_conn += f", {self.haproxy_cpu_s / answered * 1e6:.0f} CPU µs per attacker request"
        lat = sorted(self.viewer_latencies)
        ms = (
            f"p50 {statistics.median(lat) * 1000:.1f} / p95 {lat[int(len(lat) * 0.95)] * 1000:.1f}"
            f" / max {lat[-1] * 1000:.1f} ms"
            if lat
            else "no answer"
        )
        return (
            f"{name:10} haproxy {self.haproxy_cpu_s:.2f} CPU s, RSS {self.rss_kib}->"
            f"{self.rss_peak_kib} KiB{per_conn}; attacker {dict(self.attacker)}; reached servers "
            f"{self.reached_servers}; viewer {len(lat)} ok / {self.viewer_failed} failed, {ms}"
        )


def run(attack: Attack | None, seconds: float, conns: int) -> Result:
    with (
        tempfile.TemporaryDirectory() as tmp,
        vip(
            Path(tmp), haproxy_maxconn=conns * 2 + 500, haproxy_max_conn_per_source=conns + 100
        ) as lb,
    ):
        viewer = Viewer(lb)
        stop = threading.Event()
        out: Counter[str] = Counter()
        rss0, cpu0 = procs.memory_kib(lb.pid), procs.cpu_seconds(lb.pid)
        rss_peak = rss0
        threads: list[threading.Thread] = [viewer]
        if attack is not None:
            threads.append(threading.Thread(target=attack, args=(lb, stop, out), daemon=True))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - started < seconds:
            time.sleep(0.5)
            rss_peak = max(rss_peak, procs.memory_kib(lb.pid))
        cpu = procs.cpu_seconds(lb.pid) - cpu0
        stop.set()
        viewer.stop.set()
        for thread in threads:
            thread.join(timeout=15)
        reached = sum(1 for h in lb.hosts.values() for path in h.requests if path != STREAM)
        return Result(cpu, rss0, rss_peak, out, reached, viewer.latencies, viewer.failures)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--conns", type=int, default=400, help="slow attacker connections")
    ap.add_argument("--only", nargs="*", help="attacks to run (default all)")
    args = ap.parse_args()
    attacks: dict[str, Attack | None] = {
        "baseline": None,
        "slowloris": lambda lb, stop, out: slowloris(lb, args.conns, stop, out),
        "slow-body": lambda lb, stop, out: slow_body(lb, args.conns, stop, out),
        "headers": headers,
        "bodies": bodies,
        "guessing": guessing,
    }
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} cores")
    for name, attack in attacks.items():
        if args.only and name not in args.only:
            continue
        print(run(attack, args.seconds, args.conns).line(name), flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
