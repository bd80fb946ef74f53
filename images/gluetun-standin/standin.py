"""A stand-in for Gluetun (github.com/qdm12/gluetun): its control server, none of its VPN.

acefleet runs it where a real Gluetun cannot run (tests, the lab: no VPN account, no way out).
A container of this image holds the network namespace that engines join
(``network_mode: container:<it>``) and answers Gluetun's HTTP control API as the agent reads
it. Standard library only, Debian's python3. The assumptions it makes about Gluetun are listed
in docs/vpn.md ("The stand-in"); the rules:

1. Settings come from the same environment variables as Gluetun's. Like Gluetun, it refuses
   to start (one ``ERROR`` line, exit 1) on settings Gluetun refuses: no
   ``VPN_SERVICE_PROVIDER`` (stricter than Gluetun, whose image defaults it), an unknown
   ``VPN_TYPE``, missing credentials for the type (wireguard: ``WIREGUARD_PRIVATE_KEY``;
   openvpn: ``OPENVPN_USER`` and ``OPENVPN_PASSWORD``), a bad ``VPN_PORT_FORWARDING``,
   ``HTTP_CONTROL_SERVER_ADDRESS`` or ``HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE``.
2. Auth as Gluetun's middleware: a route no role covers answers 401, and so does a request
   that fails every role covering its route. ``HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE`` (JSON,
   ``auth`` none | apikey | basic) covers every route; without it only the routes Gluetun
   v3.40/v3.41 leave public by default are open (with a warning). API key: header
   ``X-API-Key`` or query ``api_key``.
3. The VPN is "starting" for ``STANDIN_CONNECT_S`` seconds (default 1), then "running": it
   reports a public IP from 203.0.113.0/24 and, with port forwarding on, a forwarded port from
   40000-59999 (``STANDIN_PUBLIC_IP`` / ``STANDIN_FORWARDED_PORT`` pin them). Stopped, it
   reports port 0 and an empty public IP, as Gluetun clears both when the VPN goes down; started
   again, it gets the same IP and port back.
4. ``STANDIN_GLUETUN_VERSION`` picks the routes: ``3.41`` (default) serves
   ``GET /v1/portforward`` and redirects ``/v1/openvpn/portforwarded`` there (301); ``3.40``
   has no ``/v1/portforward`` (401: no role covers an unknown route) and answers the port on
   ``/v1/openvpn/portforwarded``.
5. Test controls, under ``/standin/`` with the same auth: ``PUT /standin/portforward``
   ``{"port": N}`` sets the forwarded port (0 = the provider gives none).
6. Logs go to stdout in Gluetun's shape (``<time> INFO [area] message``); SIGTERM and SIGINT
   stop it at once (exit 0).
7. ``standin.py healthcheck`` (the image's HEALTHCHECK) succeeds while the VPN runs, as
   Gluetun's own healthcheck fails while its tunnel does not work. It reads the status the
   server writes to ``STATUS_FILE``, so health checks add no requests to the log.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

VERSIONS = ("3.40", "3.41")
VPN_TYPES = ("openvpn", "wireguard")
ON = ("on", "yes", "true", "enabled")
OFF = ("off", "no", "false", "disabled")

# Routes Gluetun's auth middleware knows ("METHOD /path"); any other answers 401.
ROUTES_340 = frozenset(
    {
        "GET /v1/version",
        "GET /v1/vpn/status",
        "PUT /v1/vpn/status",
        "GET /v1/vpn/settings",
        "PUT /v1/vpn/settings",
        "GET /v1/openvpn/status",
        "PUT /v1/openvpn/status",
        "GET /v1/openvpn/portforwarded",
        "GET /v1/openvpn/settings",
        "GET /v1/dns/status",
        "PUT /v1/dns/status",
        "GET /v1/updater/status",
        "PUT /v1/updater/status",
        "GET /v1/publicip/ip",
    }
)
ROUTES_341 = ROUTES_340 | {"GET /v1/portforward"}
# Public when no role is configured at all (Gluetun up to v3.41; later ones: none).
PUBLIC_BY_DEFAULT = frozenset(
    {
        "GET /v1/version",
        "GET /v1/vpn/status",
        "PUT /v1/vpn/status",
        "GET /v1/openvpn/status",
        "PUT /v1/openvpn/status",
        "GET /v1/openvpn/portforwarded",
        "GET /v1/dns/status",
        "PUT /v1/dns/status",
        "GET /v1/updater/status",
        "PUT /v1/updater/status",
        "GET /v1/publicip/ip",
    }
)
STANDIN_ROUTES = frozenset({"PUT /standin/portforward"})
STATUS_FILE = "/tmp/gluetun-standin/status"


def log(level: str, area: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {level} [{area}] {message}", flush=True)


class Refusal(Exception):
    """Settings Gluetun would refuse: the message is its ERROR line."""


@dataclass(frozen=True)
class Role:
    name: str
    auth: str  # none | apikey | basic
    apikey: str = ""
    username: str = ""
    password: str = ""

    def allows(self, headers: Any, query: dict[str, list[str]]) -> bool:
        if self.auth == "none":
            return True
        if self.auth == "apikey":
            given = headers.get("X-API-Key") or (query.get("api_key") or [""])[0]
            return hmac.compare_digest(given.encode(), self.apikey.encode())
        raw = headers.get("Authorization") or ""
        if not raw.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(raw[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user.encode(), self.username.encode()) and hmac.compare_digest(
            password.encode(), self.password.encode()
        )


@dataclass(frozen=True)
class Settings:
    provider: str
    vpn_type: str
    port_forwarding: bool
    host: str
    port: int
    role: Role | None  # None: no role configured, Gluetun's default public routes apply
    version: str
    connect_s: float
    public_ip: str
    forwarded_port: int
    log_requests: bool


def parse_role(raw: str) -> Role | None:
    raw = raw.strip()
    if raw in ("", "{}"):
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise Refusal(f"control server settings: decoding default role: {exc}") from exc
    if not isinstance(data, dict):
        raise Refusal("control server settings: decoding default role: not a JSON object")
    known = {"name", "auth", "apikey", "username", "password"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise Refusal(
            f'control server settings: decoding default role: json: unknown field "{unknown[0]}"'
        )
    values = {k: data.get(k, "") for k in known}
    if not all(isinstance(v, str) for v in values.values()):
        raise Refusal("control server settings: decoding default role: fields must be strings")
    if values["auth"] == "":
        return None
    role = Role(
        values["name"] or "default",
        values["auth"],
        values["apikey"],
        values["username"],
        values["password"],
    )
    if role.auth not in ("none", "apikey", "basic"):
        raise Refusal(
            "control server settings: validating default role: authentication method not"
            f" supported: {role.auth}"
        )
    if role.auth == "apikey" and not role.apikey:
        raise Refusal(
            f"control server settings: validating default role: for role {role.name}:"
            " api key is empty"
        )
    if role.auth == "basic" and not (role.username and role.password):
        raise Refusal(
            f"control server settings: validating default role: for role {role.name}:"
            " username or password is empty"
        )
    return role


def parse_address(raw: str) -> tuple[str, int]:
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Refusal(f"control server settings: server listening address is not valid: {raw!r}")
    host = host.strip("[]")
    if host in ("", "::", "0.0.0.0"):
        host = "0.0.0.0"  # Docker networks here are IPv4: listen on all IPv4 addresses
    return host, int(port_text)


def parse_onoff(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ON:
        return True
    if value in OFF:
        return False
    raise Refusal(f"VPN settings: {name}: value is unknown: {raw!r}")


def load(env: dict[str, str]) -> Settings:
    provider = env.get("VPN_SERVICE_PROVIDER", "").strip()
    if not provider:
        raise Refusal("VPN settings: provider settings: VPN_SERVICE_PROVIDER is not set")
    vpn_type = env.get("VPN_TYPE", "openvpn").strip().lower() or "openvpn"
    if vpn_type not in VPN_TYPES:
        raise Refusal(f"VPN settings: VPN type is not valid: {vpn_type}")
    if vpn_type == "wireguard" and not env.get("WIREGUARD_PRIVATE_KEY", "").strip():
        raise Refusal("VPN settings: Wireguard settings: private key is not set")
    if vpn_type == "openvpn":
        if not env.get("OPENVPN_USER", "").strip():
            raise Refusal("VPN settings: OpenVPN settings: user is empty")
        if not env.get("OPENVPN_PASSWORD", "").strip():
            raise Refusal("VPN settings: OpenVPN settings: password is empty")
    port_forwarding = parse_onoff("VPN_PORT_FORWARDING", env.get("VPN_PORT_FORWARDING", "off"))
    host, port = parse_address(env.get("HTTP_CONTROL_SERVER_ADDRESS", ":8000"))
    role = parse_role(env.get("HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE", ""))
    log_requests = parse_onoff("HTTP_CONTROL_SERVER_LOG", env.get("HTTP_CONTROL_SERVER_LOG", "on"))
    version = env.get("STANDIN_GLUETUN_VERSION", "3.41").strip().removeprefix("v")
    if version not in VERSIONS:
        raise Refusal(f"stand-in: STANDIN_GLUETUN_VERSION must be one of {', '.join(VERSIONS)}")
    try:
        connect_s = float(env.get("STANDIN_CONNECT_S", "1"))
        forwarded_port = int(env.get("STANDIN_FORWARDED_PORT") or random.randint(40000, 59999))
    except ValueError as exc:
        raise Refusal(f"stand-in: {exc}") from exc
    if connect_s < 0 or not 0 < forwarded_port < 65536:
        raise Refusal("stand-in: STANDIN_CONNECT_S >= 0 and STANDIN_FORWARDED_PORT 1-65535")
    public_ip = env.get("STANDIN_PUBLIC_IP") or f"203.0.113.{random.randint(1, 254)}"
    return Settings(
        provider,
        vpn_type,
        port_forwarding,
        host,
        port,
        role,
        version,
        connect_s,
        public_ip,
        forwarded_port,
        log_requests,
    )


class Tunnel:
    """The VPN loop's state as Gluetun's control server reports it (rule 3)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Condition()
        self.status = "stopped"
        self.provider_port = settings.forwarded_port if settings.port_forwarding else 0
        self.generation = 0

    def _set(self, status: str) -> None:
        """Change the status (lock held) and publish it for the healthcheck (rule 7)."""
        self.status = status
        self.lock.notify_all()
        try:
            os.makedirs(os.path.dirname(STATUS_FILE), exist_ok=True)
            with open(STATUS_FILE + ".tmp", "w") as f:
                f.write(status)
            os.replace(STATUS_FILE + ".tmp", STATUS_FILE)
        except OSError as exc:
            log("WARN", "healthcheck", f"cannot write {STATUS_FILE}: {exc}")

    def start(self) -> None:
        with self.lock:
            if self.status != "stopped":
                return
            self._set("starting")
            self.generation += 1
            generation = self.generation
        log("INFO", "vpn", f"connecting to {self.settings.provider} ({self.settings.vpn_type})")
        threading.Thread(target=self._connect, args=(generation,), daemon=True).start()

    def _connect(self, generation: int) -> None:
        time.sleep(self.settings.connect_s)
        with self.lock:
            if self.status != "starting" or self.generation != generation:
                return
            self._set("running")
        log("INFO", "ip getter", f"Public IP address is {self.settings.public_ip} (stand-in)")
        if self.provider_port:
            log("INFO", "port forwarding", f"port forwarded is {self.provider_port}")

    def stop(self) -> None:
        with self.lock:
            self._set("stopped")
            self.generation += 1
        log("INFO", "vpn", "stopped: public IP and forwarded port cleared")

    def wait_settled(self, timeout: float) -> str:
        with self.lock:
            self.lock.wait_for(lambda: self.status != "starting", timeout)
            return self.status

    def forwarded_port(self) -> int:
        with self.lock:
            return self.provider_port if self.status == "running" else 0

    def public_ip(self) -> str:
        with self.lock:
            return self.settings.public_ip if self.status == "running" else ""

    def set_port(self, port: int) -> None:
        with self.lock:
            self.provider_port = port
        log("INFO", "port forwarding", f"stand-in: forwarded port set to {port}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like Go's server: every answer has a length
    server_version = "gluetun-standin"
    sys_version = ""
    raw_body = b""
    settings: Settings
    tunnel: Tunnel
    warned: set[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request in Gluetun's shape instead (send_response)

    def do_GET(self) -> None:
        self.route("GET")

    def do_PUT(self) -> None:
        self.route("PUT")

    def do_POST(self) -> None:
        self.route("POST")

    def route(self, method: str) -> None:
        # Read the body whatever the answer: on a kept-alive connection an unread body would be
        # taken for the next request.
        self.raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        key = f"{method} {path}"
        if not self.authorized(key, parse_qs(url.query)):
            self.text(401, "Unauthorized")
            return
        handler = {
            "GET /v1/version": self.get_version,
            "GET /v1/vpn/status": self.get_status,
            "PUT /v1/vpn/status": self.put_status,
            "GET /v1/openvpn/status": self.get_status,
            "PUT /v1/openvpn/status": self.put_status,
            "GET /v1/openvpn/portforwarded": self.get_port_old,
            "GET /v1/portforward": self.get_port,
            "GET /v1/publicip/ip": self.get_public_ip,
            "PUT /standin/portforward": self.put_standin_port,
        }.get(key)
        if handler is None:
            # Known to the auth layer, but the stand-in does not serve it (settings, DNS, updater).
            self.text(400, f"{method} {path} not supported by the Gluetun stand-in")
            return
        handler()

    def authorized(self, key: str, query: dict[str, list[str]]) -> bool:
        routes = ROUTES_341 if self.settings.version == "3.41" else ROUTES_340
        if key not in routes and key not in STANDIN_ROUTES:
            return False
        role = self.settings.role
        if role is None:
            if key in PUBLIC_BY_DEFAULT:
                if key not in self.warned:
                    self.warned.add(key)
                    log("WARN", "http server", f"route {key} is unprotected by default")
                return True
            return False
        return role.allows(self.headers, query)

    def body(self) -> Any:
        return json.loads(self.raw_body or b"null")

    def json(self, data: Any, code: int = 200) -> None:
        payload = (json.dumps(data, separators=(",", ":")) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def text(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        payload = (message + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        if self.settings.log_requests:
            log(
                "INFO",
                "http server",
                # The path without its query: ?api_key= would put the key in the log.
                f"{code} {self.command} {urlsplit(self.path).path} from {self.client_address[0]}",
            )

    def get_version(self) -> None:
        self.json(
            {"version": f"v{self.settings.version}.0", "commit": "standin", "created": "stand-in"}
        )

    def get_status(self) -> None:
        with self.tunnel.lock:
            status = self.tunnel.status
        self.json({"status": status})

    def put_status(self) -> None:
        try:
            wanted = self.body().get("status")
        except (ValueError, AttributeError) as exc:
            self.text(400, f"decoding body: {exc}")
            return
        if wanted not in ("running", "stopped"):
            self.text(400, f"invalid status: {wanted}: possible values are: stopped, running")
            return
        with self.tunnel.lock:
            existing = self.tunnel.status
        if wanted == "running":
            if existing != "stopped":
                self.json({"outcome": f"already {existing}"})
                return
            self.tunnel.start()
            # Gluetun answers once the loop has reacted: the new status, not "starting".
            self.json({"outcome": self.tunnel.wait_settled(self.settings.connect_s + 5)})
            return
        if existing != "running":
            self.json({"outcome": f"already {existing}"})
            return
        self.tunnel.stop()
        self.json({"outcome": "stopped"})

    def get_port_old(self) -> None:
        if self.settings.version == "3.41":
            self.text(
                301,
                '<a href="/v1/portforward">Moved Permanently</a>.',
                {"Location": "/v1/portforward"},
            )
            return
        self.json({"port": self.tunnel.forwarded_port()})

    def get_port(self) -> None:
        port = self.tunnel.forwarded_port()
        self.json({"port": port, "ports": [port] if port else []})

    def get_public_ip(self) -> None:
        ip = self.tunnel.public_ip()
        self.json({"public_ip": ip, "country": "Stand-in"} if ip else {"public_ip": ""})

    def put_standin_port(self) -> None:
        try:
            port = self.body().get("port")
        except (ValueError, AttributeError) as exc:
            self.text(400, f"decoding body: {exc}")
            return
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            self.text(400, f"port must be an integer 0-65535, not {port!r}")
            return
        self.tunnel.set_port(port)
        self.json({"port": port})


def healthcheck() -> int:
    try:
        with open(STATUS_FILE) as f:
            status = f.read().strip()
    except OSError as exc:
        print(f"no status yet: {exc}")
        return 1
    print(f"VPN {status}")
    return 0 if status == "running" else 1


def main() -> int:
    if sys.argv[1:] == ["healthcheck"]:
        return healthcheck()
    try:
        settings = load(dict(os.environ))
    except Refusal as exc:
        log("ERROR", "settings", str(exc))
        return 1
    tunnel = Tunnel(settings)
    handler = type(
        "BoundHandler", (Handler,), {"settings": settings, "tunnel": tunnel, "warned": set()}
    )
    try:
        server = ThreadingHTTPServer((settings.host, settings.port), handler)
    except OSError as exc:
        log("ERROR", "http server", f"listening on {settings.host}:{settings.port}: {exc}")
        return 1
    server.daemon_threads = True

    def stop(signum: int, _frame: object) -> None:
        log("INFO", "main", f"caught OS signal {signal.Signals(signum).name}, shutting down")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log("INFO", "main", f"Gluetun stand-in, routes of Gluetun v{settings.version}")
    log("INFO", "http server", f"http server listening on {settings.host}:{settings.port}")
    if settings.role is None:
        log("WARN", "http server", "no authentication role set: only Gluetun's public routes open")
    tunnel.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
