"""The haproxy role on the VIP: TLS for players (the same routes as the plain port) and for
operators (a TLS twin of the control port, with HSTS there only), plain HTTP by setting, and the
bounds on hostile input (slow headers and bodies, header floods, bodies where none belong,
oversized API bodies, key guessing, connection floods from one source). Real haproxy on
loopback, configured by the role's template with its defaults, a certificate bundle from a CA
made here; central and the edges are small HTTP servers that answer like the real services
(401 without the key, 404 for an unknown player URL)."""

from __future__ import annotations

import contextlib
import socket
import ssl
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
from tests.support.tls_ca import TestCA, openssl_verify

EDGES = ("edge1", "edge2")
CENTRAL = "control1"
KEY = "right-key"
STREAM = "/ace/getstream?id=one"
PLAYLIST = "/playlist.m3u"

# --- certificates -------------------------------------------------------------------------


def make_bundle(directory: Path) -> tuple[Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca.crt, HAProxy's bundle)."""
    ca = TestCA(directory, "test fleet CA")
    # one certificate for the VIP and for central (HAProxy verifies central by its inventory name)
    host = ca.issue("lb1", ("localhost", CENTRAL, "127.0.0.1"))
    bundle = directory / "acefleet.pem"
    bundle.write_bytes(
        Path(host.cert_file).read_bytes()
        + Path(ca.ca_file).read_bytes()
        + Path(host.key_file).read_bytes()
    )
    return Path(ca.ca_file), bundle


# --- central and the edges ------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """GET/HEAD: the server's name; /v1/*: 401 without the key; /p/*: 404 (no such player);
    PUT/POST: the length of the body read."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Host

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/readyz":
            self.server.requests.append(self.path)
        if self.path.startswith("/v1/") and self.headers.get("X-API-Key") != KEY:
            self._answer(401, b"no key")
        elif self.path.startswith("/p/"):
            self._answer(404, b"no such player")
        else:
            self._answer(200, self.server.name.encode())

    do_HEAD = do_GET

    def do_PUT(self) -> None:
        self.server.requests.append(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        self._answer(200, str(len(self.rfile.read(length))).encode())

    do_POST = do_PUT

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: HAProxy checks often


class _Host(Backend):
    handler = _Handler


# --- the VIP --------------------------------------------------------------------------------


@dataclass
class Vip:
    """HAProxy on loopback with central and the edges behind it."""

    plain: str
    tls: str
    control: str
    control_tls: str
    ca: Path
    config: Path
    pid: int
    hosts: dict[str, _Host] = field(default_factory=dict)

    def client(self, base: str, **kwargs: object) -> httpx.Client:
        trust = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=base, verify=trust, timeout=10, **kwargs)  # type: ignore[arg-type]


def _wait_up(sock: Path, hap: subprocess.Popen[bytes], backends: dict[str, list[str]]) -> None:
    deadline = time.monotonic() + 20
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        if hap.poll() is not None:
            err = hap.stderr.read().decode() if hap.stderr else ""
            pytest.fail(f"haproxy exited: {err}")
        if sock.exists():
            states = {
                f"{backend}/{server}": state
                for backend in backends
                for server, state in server_states(sock, backend).items()
            }
            wanted = [f"{b}/{s}" for b, servers in backends.items() for s in servers]
            if all(states.get(name) == "2" for name in wanted):
                return
        time.sleep(0.1)
    pytest.fail(f"servers {states}, waited for {backends}")


@contextlib.contextmanager
def vip(tmp_path: Path, central_tls: bool = False, **overrides: object) -> Iterator[Vip]:
    """HAProxy with the role's template (``overrides`` on top of its defaults), TLS from a CA
    made here, central on 127.0.0.30 (HTTPS only with ``central_tls``, as with
    acefleet_tls_internal) and the edges on 127.0.0.31-32."""
    haproxy = tools.require("haproxy", "haproxy")  # a failure with the install hint, not a skip
    ca, bundle = make_bundle(tmp_path)
    proxy_port, central_port = procs.free_port(), procs.free_port()
    ports = {name: procs.free_port() for name in ("plain", "tls", "control", "control_tls")}
    sock = tmp_path / "haproxy.sock"
    config = render_haproxy(
        tmp_path,
        loopback_inventory(EDGES, CENTRAL),
        ports["plain"],
        sock,
        acefleet_proxy_port=proxy_port,
        acefleet_central_port=central_port,
        haproxy_tls_port=ports["tls"],
        haproxy_control_port=ports["control"],
        haproxy_control_tls_port=ports["control_tls"],
        haproxy_tls_bundle=bundle,
        haproxy_tls_bundle_checksum="test",  # the role sets it from the bundle it found
        **overrides,
    )
    hosts = {CENTRAL: _Host(CENTRAL, "127.0.0.30", central_port)}
    if central_tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(bundle)
        hosts[CENTRAL].socket = context.wrap_socket(hosts[CENTRAL].socket, server_side=True)
    for n, name in enumerate(EDGES):
        hosts[name] = _Host(name, f"127.0.0.{31 + n}", proxy_port)
    for host in hosts.values():
        threading.Thread(target=host.serve_forever, daemon=True).start()
    hap = subprocess.Popen(
        [haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_up(sock, hap, {"edges": list(EDGES), "player_files": [CENTRAL], "control": [CENTRAL]})
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        yield Vip(
            plain=url["plain"],
            tls=url["tls"].replace("http:", "https:"),
            control=url["control"],
            control_tls=url["control_tls"].replace("http:", "https:"),
            ca=ca,
            config=config,
            pid=hap.pid,
            hosts=hosts,
        )
    finally:
        hap.terminate()
        hap.wait(timeout=10)
        for host in hosts.values():
            host.shutdown()
            host.server_close()


def _json_error(response: httpx.Response) -> str:
    """The code of HAProxy's own JSON error body."""
    assert response.headers["content-type"] == "application/json", response.text
    code: str = response.json()["error"]["code"]
    return code


# --- TLS --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tls_ports_serve_the_same_routes_verified_by_the_ca(tmp_path: Path) -> None:
    with vip(tmp_path) as lb:
        for base in (lb.plain, lb.tls):
            with lb.client(base) as client:
                assert client.get(STREAM).text in EDGES
                assert client.get(PLAYLIST).text == CENTRAL
                # no HSTS for players: they must be able to fall back to plain HTTP
                assert "strict-transport-security" not in client.get(STREAM).headers
        for base in (lb.control, lb.control_tls):
            with lb.client(base, headers={"X-API-Key": KEY}) as client:
                assert client.get("/v1/hosts").text == CENTRAL
        with lb.client(lb.control_tls) as client:
            hsts = client.get("/v1/hosts", headers={"X-API-Key": KEY}).headers
            assert hsts["strict-transport-security"].startswith("max-age=")
        with lb.client(lb.control) as client:  # plain HTTP: HSTS would be ignored anyway
            assert "strict-transport-security" not in client.get("/v1/hosts").headers

        # openssl verifies the chain against the CA, as the lab's proof does
        port = lb.tls.rsplit(":", 1)[1]
        done = openssl_verify("127.0.0.1", int(port), lb.ca)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Verification: OK" in done.stderr + done.stdout

        # a client that does not trust the CA is refused by its own verification
        with pytest.raises(httpx.ConnectError), httpx.Client(base_url=lb.tls) as client:
            client.get(STREAM)


@pytest.mark.slow
def test_tls_offers_only_forward_secret_aead_ciphers_and_no_tickets(tmp_path: Path) -> None:
    with vip(tmp_path) as lb:
        port = int(lb.tls.rsplit(":", 1)[1])

        def handshake(ciphers: str) -> ssl.SSLSocket:
            context = ssl.create_default_context(cafile=str(lb.ca))
            context.maximum_version = ssl.TLSVersion.TLSv1_2  # 1.3's suites are all AEAD
            context.set_ciphers(ciphers)
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            return context.wrap_socket(raw, server_hostname="127.0.0.1")

        with handshake("ECDHE-ECDSA-AES128-GCM-SHA256") as tls:
            assert tls.version() == "TLSv1.2"
            tls.sendall(b"GET /ace/getstream?id=one HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(1024).startswith(b"HTTP/1.1 200")
            # no session ticket: its key would outlive a reload
            assert tls.session is not None
            assert not tls.session.has_ticket
        # CBC with SHA-1 (OpenSSL and HAProxy would agree on it by default) is refused
        with pytest.raises(ssl.SSLError):
            handshake("ECDHE-ECDSA-AES128-SHA").close()


@pytest.mark.slow
def test_plain_http_off_binds_only_the_tls_ports(tmp_path: Path) -> None:
    with vip(tmp_path, acefleet_haproxy_plain_http=False) as lb:
        for base in (lb.plain, lb.control):
            with pytest.raises(httpx.ConnectError), lb.client(base) as client:
                client.get(STREAM)
        with lb.client(lb.tls) as client:
            assert client.get(STREAM).text in EDGES
        with lb.client(lb.control_tls, headers={"X-API-Key": KEY}) as client:
            assert client.get("/v1/hosts").text == CENTRAL


@pytest.mark.slow
def test_internal_tls_reaches_central_over_verified_tls_and_edges_plain(tmp_path: Path) -> None:
    tls = {"haproxy_tls_internal": True, "haproxy_tls_ca_file": tmp_path / "ca.crt"}
    with vip(tmp_path, central_tls=True, **tls) as lb:
        for base in (lb.plain, lb.tls):
            with lb.client(base) as client:
                answer = client.get(PLAYLIST)
                assert answer.text == CENTRAL
                assert answer.headers["x-acefleet-served-by"] == CENTRAL
                # the edges' proxies keep their plain port (their reload hands it over)
                assert client.get(STREAM).text in EDGES
        with lb.client(lb.control_tls, headers={"X-API-Key": KEY}) as client:
            assert client.get("/v1/hosts").text == CENTRAL
        config = lb.config.read_text()
        assert f"verifyhost {CENTRAL}" in config
        assert "verifyhost edge" not in config
