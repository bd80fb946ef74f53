"""The haproxy role's viewers frontend, rendered from the real template and run by the real
haproxy on loopback, sends every request of one channel to one edge: the TS stream, the HLS
master playlist, the media playlist and the segments of a player's HLS session, whichever of
id/content_id/infohash names the channel and in whichever case an infohash is spelled. That is
what lets one engine session feed a channel's TS and HLS viewers behind the VIP.

The edges are small HTTP servers that answer with their own name; HAProxy's health checks reach
them like real edge proxies (GET /readyz).
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.ansible.haproxy_render import render_haproxy, server_states
from tests.support import procs, tools

EDGES = ("edge1", "edge2", "edge3")
SID = "AbCdEfGhIjKlMnOpQrStUv"  # a player's HLS session id (22 chars, urlsafe base64)


class _EdgeHandler(BaseHTTPRequestHandler):
    """Answers every GET with the edge's name (body and X-Served-By), keep-alive."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no delayed-ACK wait between
    server: _Edge

    def do_GET(self) -> None:
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", self.server.name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: HAProxy checks every 200 ms


class _Edge(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str, address: str, port: int) -> None:
        super().__init__((address, port), _EdgeHandler)
        self.name = name
        self.address = address


@dataclass
class Balancer:
    url: str
    socket: Path


def _render(tmp_path: Path, edges: list[_Edge], port: int, front: int, sock: Path) -> Path:
    """The role's template with its defaults and an inventory of the fake edges: each on its own
    loopback address, all on the one proxy port (acefleet_proxy_port), as edges are deployed."""
    hosts = "".join(f"        {e.name}:\n          acefleet_address: {e.address}\n" for e in edges)
    inventory = f"all:\n  children:\n    edges:\n      hosts:\n{hosts}"
    return render_haproxy(tmp_path, inventory, front, sock, acefleet_proxy_port=port)


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    haproxy = tools.require("haproxy", "haproxy")  # a failure with the install hint, not a skip
    port = procs.free_port()
    edges = [_Edge(name, f"127.0.0.{11 + n}", port) for n, name in enumerate(EDGES)]
    for edge in edges:
        threading.Thread(target=edge.serve_forever, daemon=True).start()
    front, sock = procs.free_port(), tmp_path / "haproxy.sock"
    config = _render(tmp_path, edges, port, front, sock)
    hap = subprocess.Popen(
        [haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            if hap.poll() is not None:
                pytest.fail(f"haproxy exited: {hap.stderr.read().decode() if hap.stderr else ''}")
            if sock.exists():
                states = server_states(sock, "edges")
                if sorted(states) == sorted(EDGES) and set(states.values()) == {"2"}:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"the edges are not all up in haproxy: {states}")
        yield Balancer(f"http://127.0.0.1:{front}", sock)
    finally:
        hap.terminate()
        hap.wait(timeout=10)
        for edge in edges:
            edge.shutdown()
            edge.server_close()


def _channel_urls(selector: str) -> list[str]:
    """What one TS viewer and one HLS player of a channel ask for (``selector`` = ``id=X``)."""
    return [
        f"/ace/getstream?{selector}",
        f"/ace/manifest.m3u8?{selector}",
        f"/ace/hls/{SID}/index.m3u8?{selector}",
        f"/ace/hls/{SID}/12.ts?{selector}",
        f"/ace/hls/{SID}/13.ts?{selector}&_HLS_msn=13",
    ]


def _edge_of(client: httpx.Client, path: str) -> str:
    response = client.get(path)
    response.raise_for_status()
    # the role tells players which edge serves them; the edge itself says who answered
    assert response.headers["x-acefleet-edge"] == response.text, path
    return response.text


@pytest.mark.slow
def test_ts_and_hls_of_one_channel_reach_one_edge(balancer: Balancer) -> None:
    # One keep-alive connection for everything, as a browser would use: HAProxy must pick the
    # edge per request, not per connection.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    where: dict[str, str] = {}
    with httpx.Client(base_url=balancer.url, limits=limits, timeout=10) as client:
        for n in range(24):
            channel = f"channel-{n}"
            urls = _channel_urls(f"id={channel}") + _channel_urls(f"content_id={channel}")
            edges = {path: _edge_of(client, path) for path in urls}
            assert len(set(edges.values())) == 1, f"{channel} split over edges: {edges}"
            where[channel] = next(iter(edges.values()))
        for n in range(24):
            infohash = hashlib.sha1(f"infohash-{n}".encode()).hexdigest()
            urls = _channel_urls(f"infohash={infohash}") + _channel_urls(
                f"infohash={infohash.upper()}"
            )
            urls += _channel_urls(f"id={infohash.upper()}")
            edges = {path: _edge_of(client, path) for path in urls}
            assert len(set(edges.values())) == 1, f"{infohash} split over edges: {edges}"
            where[infohash] = next(iter(edges.values()))
    # Consistent hashing spreads channels: every edge serves some of these 48.
    assert sorted(set(where.values())) == sorted(EDGES), where


@pytest.mark.slow
def test_an_idle_player_connection_outlives_the_request_timeout(balancer: Balancer) -> None:
    """Between two playlist polls a player's connection idles; HAProxy keeps it for
    haproxy_timeout_keep_alive (15 s), not for the 10 s slowloris bound on a request's arrival
    that it would fall back to, so a player polling every target duration keeps one connection
    (11 s: a slow poll at a 6 s target duration, with slack)."""
    host, port = balancer.url.removeprefix("http://").split(":")
    answers: list[str] = []
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        reader = conn.makefile("rb")
        for pause in (11.0, 0.0):
            conn.sendall(
                f"GET /ace/hls/{SID}/index.m3u8?id=polled HTTP/1.1\r\nHost: vip\r\n\r\n".encode()
            )
            status = reader.readline()
            assert b" 200 " in status, f"the connection was closed after {answers}: {status!r}"
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            answers.append(reader.read(length).decode())
            time.sleep(pause)
    assert len(set(answers)) == 1, answers
    assert answers[0] in EDGES, answers
