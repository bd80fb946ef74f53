"""The haproxy role on the VIP: TLS for players (the same routes as the plain port) and for
operators (a TLS twin of the control port, with HSTS there only), plain HTTP by setting, and the
bounds on hostile input (slow headers and bodies, header floods, bodies where none belong,
oversized API bodies, key guessing, connection floods from one source). Real haproxy on
loopback, configured by the role's template with its defaults, a certificate bundle from a CA
made here; central and the edges are small HTTP servers that answer like the real services
(401 without the key, 404 for an unknown player URL)."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import ansible, procs, tools

ROOT = Path(__file__).resolve().parents[2]
EDGES = ("edge1", "edge2")
CENTRAL = "control1"
KEY = "right-key"
STREAM = "/ace/getstream?id=one"
PLAYLIST = "/playlist.m3u"

RENDER_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.template:
        src: "{{ lookup('env', 'ROLE_TEMPLATES') }}/haproxy.cfg.j2"
        dest: "{{ lookup('env', 'OUT') }}"
        mode: "0644"
"""


# --- certificates -------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_bundle(directory: Path) -> tuple[Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca.crt, HAProxy's bundle)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test fleet CA"))
        .issuer_name(_name("test fleet CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    # one certificate for the VIP and for central (HAProxy verifies central by its inventory name)
    sans = [
        x509.DNSName("localhost"),
        x509.DNSName(CENTRAL),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("lb1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, bundle = directory / "ca.crt", directory / "acefleet.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    bundle.write_bytes(
        cert.public_bytes(pem)
        + ca.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, bundle


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


class _Host(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, address: str, port: int) -> None:
        super().__init__((address, port), _Handler)
        self.name = name
        self.requests: list[str] = []

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's checks and cut connections reset sockets: nothing to report


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


def _render(tmp_path: Path, bundle: Path, overrides: dict[str, object]) -> Path:
    edges = "".join(
        f"        {name}:\n          acefleet_address: 127.0.0.{31 + n}\n"
        for n, name in enumerate(EDGES)
    )
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    edges:\n      hosts:\n" + edges + "    control:\n      hosts:\n"
        f"        {CENTRAL}:\n          acefleet_address: 127.0.0.30\n"
    )
    (tmp_path / "render.yml").write_text(RENDER_PLAYBOOK)
    out = tmp_path / "haproxy.cfg"
    extra = ["-e", f"@{ROOT / 'roles/acefleet/defaults/main.yml'}"]
    extra += ["-e", f"@{ROOT / 'roles/haproxy/defaults/main.yml'}"]
    values: dict[str, object] = {
        "haproxy_check_interval": "200ms",
        "haproxy_check_rise": 1,
        "haproxy_maxconn": 1000,  # the role's 20000 needs more open files than a test process
        "acefleet_haproxy_health_port": procs.free_port(),
        "acefleet_haproxy_metrics_port": procs.free_port(),
        "acefleet_agent_check_port": procs.free_port(),  # nothing there: servers stay as they are
        "haproxy_tls_bundle": str(bundle),
        # the role sets it from the bundle it found
        "haproxy_tls_bundle_checksum": "test",
        **overrides,
    }
    for name, value in values.items():
        extra += ["-e", f"{name}={value}"]
    env = {"ROLE_TEMPLATES": str(ROOT / "roles" / "haproxy" / "templates"), "OUT": str(out)}
    ansible.playbook(tmp_path / "render.yml", str(tmp_path / "hosts.yml"), *extra, env=env)
    # The role binds every address (the VIP among them); here only loopback.
    out.write_text(out.read_text().replace("    bind :", "    bind 127.0.0.1:"))
    return out


def _wait_up(sock: Path, hap: subprocess.Popen[bytes], backends: dict[str, list[str]]) -> None:
    deadline = time.monotonic() + 20
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        if hap.poll() is not None:
            err = hap.stderr.read().decode() if hap.stderr else ""
            pytest.fail(f"haproxy exited: {err}")
        if sock.exists():
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
                s.sendall(b"show servers state\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            rows = [ln.split() for ln in data.decode().splitlines() if ln[:1].isdigit()]
            states = {f"{row[1]}/{row[3]}": row[5] for row in rows if len(row) > 5}
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
    config = _render(
        tmp_path,
        bundle,
        {
            "acefleet_proxy_port": proxy_port,
            "acefleet_central_port": central_port,
            "acefleet_haproxy_socket": str(sock),
            "haproxy_frontend_port": ports["plain"],
            "haproxy_tls_port": ports["tls"],
            "haproxy_control_port": ports["control"],
            "haproxy_control_tls_port": ports["control_tls"],
            **overrides,
        },
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
        done = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-CAfile",
                str(lb.ca),
                "-verify_return_error",
                "-verify_ip",
                "127.0.0.1",
                "-brief",
            ],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
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
