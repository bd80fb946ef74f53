"""The haproxy role's viewers frontend sends what players read (the playlist, the guide, the
HDHomeRun files, a player's secret URLs under /p/) to acefleet-central on the control host, and
to an edge's proxy only while central is down (the edges serve their last copy of the catalog);
streams keep hashing to the edges. Real haproxy on loopback, configured by the role's template
rendered with its defaults; central and the edges are small HTTP servers that answer with their
name and the X-Forwarded-For HAProxy sent them, and answer HAProxy's GET /readyz like the real
services."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from tests.ansible.haproxy_render import (
    Backend,
    loopback_inventory,
    render_haproxy,
    server_states,
)
from tests.support import procs, tools

EDGES = ("edge1", "edge2")
CENTRAL = "control1"
SECRET = "x" * 43  # a player's secret (43 urlsafe characters)
PLAYER_FILES = [
    "/playlist.m3u",
    "/playlist.m3u?format=hls",
    "/epg.xml",
    "/discover.json",
    "/lineup.json",
    "/lineup_status.json",
    "/device.xml",
    f"/p/{SECRET}/playlist.m3u",
    f"/p/{SECRET}/epg.xml",
    f"/p/{SECRET}/discover.json",
    f"/p/{SECRET}/lineup.json?format=hls",
    # a query naming a channel does not make a player file a stream
    "/playlist.m3u?id=some-channel",
]
STREAMS = ["/ace/getstream?id=one", "/ace/manifest.m3u8?infohash=" + "ab" * 20]


class _Handler(BaseHTTPRequestHandler):
    """Every GET: the server's name as the body, the X-Forwarded-For it got in a header."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Host

    def do_GET(self) -> None:
        body = self.server.name.encode()
        if self.path != "/readyz":
            self.server.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Forwarded-For", self.headers.get("X-Forwarded-For", ""))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: HAProxy checks every 200 ms


class _Host(Backend):
    handler = _Handler


def _serve(name: str, address: str, port: int) -> _Host:
    host = _Host(name, address, port)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    return host


@dataclass
class Lab:
    url: str
    socket: Path
    central_address: tuple[str, int]
    hosts: dict[str, _Host] = field(default_factory=dict)

    def stop_central(self) -> None:
        central = self.hosts.pop(CENTRAL)
        central.shutdown()
        central.server_close()

    def start_central(self) -> None:
        self.hosts[CENTRAL] = _serve(CENTRAL, *self.central_address)


def _wait_states(lab: Lab, backend: str, wanted: dict[str, str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = server_states(lab.socket, backend)
        if all(states.get(name) == state for name, state in wanted.items()):
            return
        time.sleep(0.1)
    pytest.fail(f"{backend}: servers {states}, waited for {wanted}")


def _render(tmp_path: Path, proxy_port: int, central_port: int, front: int, sock: Path) -> Path:
    """The role's template with its defaults; an inventory of one control host and the edges,
    each on its own loopback address, as they are deployed (one port per kind of service)."""
    return render_haproxy(
        tmp_path,
        loopback_inventory(EDGES, CENTRAL),
        front,
        sock,
        acefleet_proxy_port=proxy_port,
        acefleet_central_port=central_port,
    )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    haproxy = tools.require("haproxy", "haproxy")  # a failure with the install hint, not a skip
    proxy_port, central_port = procs.free_port(), procs.free_port()
    front, sock = procs.free_port(), tmp_path / "haproxy.sock"
    config = _render(tmp_path, proxy_port, central_port, front, sock)
    lab = Lab(f"http://127.0.0.1:{front}", sock, ("127.0.0.30", central_port))
    lab.start_central()
    for n, name in enumerate(EDGES):
        lab.hosts[name] = _serve(name, f"127.0.0.{31 + n}", proxy_port)
    hap = subprocess.Popen(
        [haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            if hap.poll() is not None:
                pytest.fail(f"haproxy exited: {hap.stderr.read().decode() if hap.stderr else ''}")
            time.sleep(0.1)
        _wait_states(lab, "player_files", {CENTRAL: "2", **dict.fromkeys(EDGES, "2")})
        _wait_states(lab, "edges", dict.fromkeys(EDGES, "2"))
        yield lab
    finally:
        hap.terminate()
        hap.wait(timeout=10)
        for host in lab.hosts.values():
            host.shutdown()
            host.server_close()


def _get(client: httpx.Client, path: str) -> httpx.Response:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response


@pytest.mark.slow
def test_player_files_go_to_central_and_to_an_edge_while_central_is_down(lab: Lab) -> None:
    with httpx.Client(base_url=lab.url, timeout=10) as client:
        for path in PLAYER_FILES:
            answer = _get(client, path)
            assert answer.text == CENTRAL, path
            assert answer.headers["x-acefleet-served-by"] == CENTRAL, path
            # central's per-client limits see the player, not HAProxy
            assert answer.headers["x-seen-forwarded-for"] == "127.0.0.1", path
        assert lab.hosts[CENTRAL].requests == PLAYER_FILES
        for path in STREAMS:
            assert _get(client, path).text in EDGES, path
        assert not any(p.startswith("/ace/") for p in lab.hosts[CENTRAL].requests)

        lab.stop_central()
        _wait_states(lab, "player_files", {CENTRAL: "0"})
        served = {path: _get(client, path) for path in PLAYER_FILES}
        backups = {answer.text for answer in served.values()}
        # the first edge, a backup server (HAProxy uses the first one that is up)
        assert backups == {EDGES[0]}, backups
        assert {a.headers["x-acefleet-served-by"] for a in served.values()} == {EDGES[0]}
        assert {a.headers["x-seen-forwarded-for"] for a in served.values()} == {"127.0.0.1"}
        for path in STREAMS:
            assert _get(client, path).text in EDGES, path

        lab.start_central()
        _wait_states(lab, "player_files", {CENTRAL: "2"})
        assert _get(client, "/playlist.m3u").text == CENTRAL
        assert _get(client, f"/p/{SECRET}/device.xml").text == CENTRAL


@pytest.mark.slow
def test_streams_never_reach_central(lab: Lab) -> None:
    """Stream, HLS and status paths hash to the edges as before; a path that only starts like a
    player file is no player file."""
    paths = [
        *STREAMS,
        f"/ace/hls/{'A' * 22}/index.m3u8?id=one",
        "/playlist.m3u8?id=one",
        "/pp/x",
        "/ace/getstream?id=two&next=/playlist.m3u",
    ]
    with httpx.Client(base_url=lab.url, timeout=10) as client:
        for path in paths:
            answer = _get(client, path)
            assert answer.text in EDGES, path
            assert answer.headers["x-acefleet-edge"] == answer.text, path
    assert lab.hosts[CENTRAL].requests == []
