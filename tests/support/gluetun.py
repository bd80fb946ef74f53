"""The Gluetun stand-in image (images/gluetun-standin) for tests: the ``gluetun_image`` fixture
and helpers to run stand-in containers in the real dockerd and drive them.

``gluetun_image`` builds the image with scripts/build-images.sh when it is missing or older than
images/gluetun-standin/ (the same input hash the script labels it with), so a test never runs a
stale stand-in. Containers started here carry the label the caller gives (``acefleet.test=<area>``)
and are removed by it; tests reach them at their address on the Docker network, as the agent
does (nothing is published on the host).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx
import pytest

from tests.support import procs

STANDIN_IMAGE = "acefleet/gluetun-standin:latest"
BASE_IMAGE = "acefleet/base:bookworm"
STANDIN_DIR = procs.REPO / "images" / "gluetun-standin"
BUILD_SCRIPT = procs.REPO / "scripts" / "build-images.sh"
CONTROL_PORT = 8000
API_KEY = "standin-test-key-0123456789"


def docker(*args: str, check: bool = True, timeout: float = 60) -> str:
    out = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def _inspect_image(image: str, template: str) -> str | None:
    out = subprocess.run(
        ["docker", "image", "inspect", "-f", template, image],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def expected_input_hash() -> str | None:
    """The input hash scripts/build-images.sh gives the stand-in image now (None: no base)."""
    base_id = _inspect_image(BASE_IMAGE, "{{.Id}}")
    if base_id is None:
        return None
    files = sorted(
        p
        for p in STANDIN_DIR.rglob("*")
        if p.is_file() and p.suffix != ".pyc" and "__pycache__" not in p.parts
    )
    # As the script's `find . -type f -print0 | sort -z | xargs -0 sha256sum`: bytewise order.
    files.sort(key=lambda p: ("./" + p.relative_to(STANDIN_DIR).as_posix()).encode())
    lines = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(STANDIN_DIR).as_posix()}\n"
        for p in files
    )
    return hashlib.sha256(f"{base_id}\n{lines}".encode()).hexdigest()[:16]


@pytest.fixture(scope="session")
def gluetun_image(docker_available: None) -> str:
    """acefleet/gluetun-standin:latest, built (scripts/build-images.sh) if missing or stale."""
    have = _inspect_image(STANDIN_IMAGE, '{{ index .Config.Labels "acefleet.input-hash" }}')
    want = expected_input_hash()
    if have is None or want is None or have != want:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            cwd=procs.REPO,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        assert done.returncode == 0, f"scripts/build-images.sh failed:\n{done.stdout}{done.stderr}"
        have = _inspect_image(STANDIN_IMAGE, '{{ index .Config.Labels "acefleet.input-hash" }}')
        assert have is not None, f"{STANDIN_IMAGE} still missing after scripts/build-images.sh"
    return STANDIN_IMAGE


def apikey_role(api_key: str = API_KEY) -> str:
    """The HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE value the agent sets on its tunnels."""
    return json.dumps({"auth": "apikey", "apikey": api_key})


def standin_env(
    *,
    api_key: str = API_KEY,
    port_forwarding: bool = True,
    vpn_type: str = "wireguard",
    connect_s: float = 0.5,
    **extra: str,
) -> dict[str, str]:
    """The environment of a healthy stand-in tunnel (Gluetun's variables plus STANDIN_*)."""
    env = {
        "VPN_SERVICE_PROVIDER": "protonvpn",
        "VPN_TYPE": vpn_type,
        "VPN_PORT_FORWARDING": "on" if port_forwarding else "off",
        "HTTP_CONTROL_SERVER_ADDRESS": f":{CONTROL_PORT}",
        "HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE": apikey_role(api_key),
        "STANDIN_CONNECT_S": str(connect_s),
    }
    if vpn_type == "wireguard":
        env["WIREGUARD_PRIVATE_KEY"] = "c3RhbmQtaW4tbm90LWEtcmVhbC1rZXktMDAwMDAwMDA="
    else:
        env |= {"OPENVPN_USER": "standin", "OPENVPN_PASSWORD": "standin-password"}
    return env | extra


def container_ip(container: str, network: str = "bridge") -> str:
    ip = docker(
        "inspect", "-f", f'{{{{ (index .NetworkSettings.Networks "{network}").IPAddress }}}}',
        container,
    )  # fmt: skip
    assert ip, f"{container} has no address on network {network}"
    return ip


@dataclass
class Standin:
    """A running stand-in container and its control server's address."""

    container: str
    ip: str
    api_key: str
    port: int = CONTROL_PORT

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET with the API key (``headers`` replaces it: ``{}`` sends none)."""
        sent = self.headers if headers is None else headers
        return httpx.get(self.url + path, headers=sent, timeout=5)

    def put(self, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
        sent = self.headers if headers is None else headers
        return httpx.put(self.url + path, json=body, headers=sent, timeout=10)

    def status(self) -> str:
        r = self.get("/v1/vpn/status")
        assert r.status_code == 200, r.text
        return str(r.json()["status"])

    def wait_running(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        status = "?"
        while time.monotonic() < deadline:
            try:
                status = self.status()
            except httpx.HTTPError as exc:
                status = repr(exc)
            if status == "running":
                return
            time.sleep(0.1)
        raise AssertionError(
            f"{self.container} not running in {timeout} s ({status}):\n{self.logs()}"
        )

    def set_forwarded_port(self, port: int) -> None:
        """Change the forwarded port (0: the provider gives none), as a provider may."""
        r = self.put("/standin/portforward", {"port": port})
        assert r.status_code == 200, r.text

    def set_vpn(self, running: bool) -> None:
        r = self.put("/v1/vpn/status", {"status": "running" if running else "stopped"})
        assert r.status_code == 200, r.text

    def logs(self) -> str:
        out = subprocess.run(
            ["docker", "logs", self.container], capture_output=True, text=True, check=False
        )
        return out.stdout + out.stderr


def start_standin(
    image: str,
    env: Mapping[str, str],
    *,
    label: str,
    network: str = "bridge",
    name: str | None = None,
    wait: bool = True,
) -> Standin:
    """``docker run -d`` a stand-in on ``network`` labelled ``label``; waits until its VPN runs
    unless ``wait`` is false. The API key is read back from the env's default role."""
    name = name or f"acefleet-test-gluetun-{uuid.uuid4().hex[:8]}"
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    docker("run", "-d", "--name", name, "--label", label, "--network", network, *env_args, image)
    role = json.loads(env.get("HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE") or "{}")
    address = env.get("HTTP_CONTROL_SERVER_ADDRESS", f":{CONTROL_PORT}")
    standin = Standin(name, container_ip(name, network), role.get("apikey", ""),
                      int(address.rsplit(":", 1)[1]))  # fmt: skip
    if wait:
        standin.wait_running()
    return standin


def remove_by_label(label: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
    if ids:
        docker("rm", "-f", *ids, check=False)


StandinFactory = Callable[..., Standin]


@pytest.fixture
def gluetun_standin(gluetun_image: str) -> Iterator[StandinFactory]:
    """Start stand-ins: ``factory(env=None, *, label="acefleet.test=vpn", network="bridge",
    wait=True)`` (env default: ``standin_env()``); every one is removed at the end."""
    started: list[str] = []

    def factory(
        env: Mapping[str, str] | None = None,
        *,
        label: str = "acefleet.test=vpn",
        network: str = "bridge",
        wait: bool = True,
    ) -> Standin:
        name = f"acefleet-test-gluetun-{uuid.uuid4().hex[:8]}"
        started.append(name)
        return start_standin(
            gluetun_image, standin_env() if env is None else env, label=label,
            network=network, name=name, wait=wait,
        )  # fmt: skip

    yield factory
    if started:
        docker("rm", "-f", *started, check=False)
