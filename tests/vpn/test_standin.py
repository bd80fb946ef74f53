"""The Gluetun stand-in image in the real dockerd: Gluetun's control routes, JSON shapes and
status codes, its auth, its refusals at start, VPN state changes, and the network namespace it
holds for engines. Containers are labelled acefleet.test=vpn and removed."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import tarfile
import time
import uuid

import httpx
import pytest

from tests.support import procs
from tests.support.gluetun import (
    API_KEY,
    Standin,
    StandinFactory,
    docker,
    expected_input_hash,
    standin_env,
)

pytestmark = [pytest.mark.docker]

LABEL = "acefleet.test=vpn"
DOCUMENTATION_NET = ipaddress.ip_network("203.0.113.0/24")


def exec_healthcheck(t: Standin) -> int:
    out = subprocess.run(
        ["docker", "exec", t.container, "/usr/bin/python3",
         "/usr/local/lib/gluetun-standin/standin.py", "healthcheck"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return out.returncode


def test_running_tunnel_answers_gluetuns_routes(gluetun_standin: StandinFactory) -> None:
    t = gluetun_standin(standin_env(STANDIN_FORWARDED_PORT="45123"))
    assert t.get("/v1/vpn/status").json() == {"status": "running"}
    assert t.get("/v1/openvpn/status").json() == {"status": "running"}
    r = t.get("/v1/portforward")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"port": 45123, "ports": [45123]}
    public_ip = t.get("/v1/publicip/ip").json()["public_ip"]
    assert ipaddress.ip_address(public_ip) in DOCUMENTATION_NET
    # Gluetun v3.41 moved the forwarded port: the old route redirects to the new one.
    old = t.get("/v1/openvpn/portforwarded")
    assert old.status_code == 301
    assert old.headers["location"] == "/v1/portforward"
    assert exec_healthcheck(t) == 0


def test_forwarded_port_is_drawn_from_the_providers_range(gluetun_standin: StandinFactory) -> None:
    t = gluetun_standin()
    port = t.get("/v1/portforward").json()["port"]
    assert 40000 <= port <= 59999


def test_port_forwarding_off_forwards_nothing(gluetun_standin: StandinFactory) -> None:
    t = gluetun_standin(standin_env(port_forwarding=False, vpn_type="openvpn"))
    assert t.status() == "running"
    assert t.get("/v1/portforward").json() == {"port": 0, "ports": []}


def test_api_key_guards_every_route(gluetun_standin: StandinFactory) -> None:
    t = gluetun_standin()
    routes = [("GET", "/v1/vpn/status"), ("GET", "/v1/portforward"), ("GET", "/v1/publicip/ip"),
              ("GET", "/v1/openvpn/status"), ("PUT", "/v1/vpn/status"),
              ("PUT", "/standin/portforward")]  # fmt: skip
    for headers in ({}, {"X-API-Key": "not-" + API_KEY}):
        for method, path in routes:
            if method == "GET":
                r = t.get(path, headers=headers)
            else:
                r = t.put(path, {"status": "stopped", "port": 1}, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.text == "Unauthorized\n"
    assert t.status() == "running"  # none of the refused PUTs stopped it
    # Gluetun also takes the key as a query parameter.
    assert t.get(f"/v1/vpn/status?api_key={API_KEY}", headers={}).status_code == 200
    # A route Gluetun does not know is refused by its auth layer, key or not.
    assert t.get("/v1/nonexistent").status_code == 401
    assert "INFO [http server] 401 GET /v1/portforward" in t.logs()


def test_without_a_role_only_gluetuns_public_routes_are_open(
    gluetun_standin: StandinFactory,
) -> None:
    env = standin_env()
    del env["HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE"]
    t = gluetun_standin(env)
    assert t.get("/v1/vpn/status", headers={}).json() == {"status": "running"}
    assert t.get("/v1/publicip/ip", headers={}).status_code == 200
    assert t.get("/v1/portforward", headers={}).status_code == 401  # new route: never public
    assert "route GET /v1/vpn/status is unprotected by default" in t.logs()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"VPN_SERVICE_PROVIDER": None}, "VPN_SERVICE_PROVIDER is not set"),
        ({"WIREGUARD_PRIVATE_KEY": None}, "Wireguard settings: private key is not set"),
        ({"VPN_TYPE": "openvpn", "OPENVPN_USER": "u"}, "OpenVPN settings: password is empty"),
        ({"VPN_TYPE": "ipsec"}, "VPN type is not valid: ipsec"),
        ({"HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE": '{"auth":"apikey"}'}, "api key is empty"),
        ({"HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE": '{"auth":"apikey","key":"x"}'},
         'unknown field "key"'),
        ({"HTTP_CONTROL_SERVER_ADDRESS": "8000"}, "server listening address is not valid"),
        ({"VPN_PORT_FORWARDING": "maybe"}, "VPN_PORT_FORWARDING: value is unknown"),
    ],
)  # fmt: skip
def test_refuses_to_start_like_gluetun(
    gluetun_image: str, change: dict[str, str | None], message: str
) -> None:
    env = {k: v for k, v in (standin_env() | change).items() if v is not None}
    name = f"acefleet-test-gluetun-refused-{uuid.uuid4().hex[:8]}"
    env_args = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
    try:
        done = subprocess.run(
            ["docker", "run", "--name", name, "--label", LABEL, *env_args, gluetun_image],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        docker("rm", "-f", name, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    error_lines = [line for line in done.stdout.splitlines() if " ERROR " in line]
    assert len(error_lines) == 1, done.stdout
    assert message in error_lines[0]
    assert "http server listening" not in done.stdout  # it stopped before serving anything


def test_stopping_the_vpn_clears_port_and_ip_until_it_runs_again(
    gluetun_standin: StandinFactory,
) -> None:
    t = gluetun_standin(standin_env(STANDIN_FORWARDED_PORT="47000"))
    ip = t.get("/v1/publicip/ip").json()["public_ip"]
    r = t.put("/v1/vpn/status", {"status": "stopped"})
    assert (r.status_code, r.json()) == (200, {"outcome": "stopped"})
    assert t.status() == "stopped"
    assert t.get("/v1/portforward").json() == {"port": 0, "ports": []}
    assert t.get("/v1/publicip/ip").json() == {"public_ip": ""}
    assert exec_healthcheck(t) == 1
    assert t.put("/v1/vpn/status", {"status": "stopped"}).json() == {"outcome": "already stopped"}
    bad = t.put("/v1/vpn/status", {"status": "paused"})
    assert bad.status_code == 400
    assert "invalid status" in bad.text
    # Gluetun answers a start once its loop has reacted: the VPN runs when the PUT returns.
    r = t.put("/v1/openvpn/status", {"status": "running"})
    assert (r.status_code, r.json()) == (200, {"outcome": "running"})
    assert t.get("/v1/portforward").json()["port"] == 47000
    assert t.get("/v1/publicip/ip").json()["public_ip"] == ip
    assert t.put("/v1/vpn/status", {"status": "running"}).json() == {"outcome": "already running"}
    assert exec_healthcheck(t) == 0


def test_standin_control_changes_the_forwarded_port(gluetun_standin: StandinFactory) -> None:
    t = gluetun_standin()
    t.set_forwarded_port(51234)
    assert t.get("/v1/portforward").json() == {"port": 51234, "ports": [51234]}
    t.set_forwarded_port(0)  # the provider lost it
    assert t.get("/v1/portforward").json() == {"port": 0, "ports": []}
    assert t.status() == "running"
    for bad in (-1, 70000, "51234", True):
        assert t.put("/standin/portforward", {"port": bad}).status_code == 400, bad


def test_older_gluetun_routes(gluetun_standin: StandinFactory) -> None:
    t = gluetun_standin(standin_env(STANDIN_GLUETUN_VERSION="3.40", STANDIN_FORWARDED_PORT="43210"))
    # v3.40 has no /v1/portforward: its auth layer refuses the unknown route, key or not.
    assert t.get("/v1/portforward").status_code == 401
    r = t.get("/v1/openvpn/portforwarded")
    assert (r.status_code, r.json()) == (200, {"port": 43210})
    assert t.get("/v1/vpn/status").json() == {"status": "running"}


def test_holds_the_network_namespace_engines_join(
    gluetun_standin: StandinFactory, gluetun_image: str
) -> None:
    t = gluetun_standin()
    joined = f"acefleet-test-gluetun-engine-{uuid.uuid4().hex[:8]}"
    probe = (
        "import json, urllib.request;"
        "req = urllib.request.Request('http://127.0.0.1:8000/v1/vpn/status',"
        f" headers={{'X-API-Key': {API_KEY!r}}});"
        "print(json.load(urllib.request.urlopen(req, timeout=5))['status'])"
    )
    try:
        # A process in the tunnel's namespace sees its control server on loopback...
        seen = docker(
            "run", "--rm", "--label", LABEL, "--network", f"container:{t.container}",
            "--entrypoint", "/usr/bin/python3", gluetun_image, "-c", probe,
        )  # fmt: skip
        assert seen == "running"
        # ...and what it serves is reached at the tunnel's address, as the agent reaches engines.
        docker(
            "run", "-d", "--name", joined, "--label", LABEL,
            "--network", f"container:{t.container}", "--entrypoint", "/usr/bin/python3",
            gluetun_image, "-m", "http.server", "6878", "--directory", "/usr/local/lib",
        )  # fmt: skip
        engine_like = Standin(joined, t.ip, API_KEY, port=6878)
        listing: httpx.Response | None = None
        deadline = time.monotonic() + 30
        while listing is None and time.monotonic() < deadline:
            try:
                listing = engine_like.get("/", headers={})
            except httpx.HTTPError:  # not listening yet
                time.sleep(0.1)
        assert listing is not None, docker("logs", joined)
        assert listing.status_code == 200
        assert "gluetun-standin" in listing.text
    finally:
        docker("rm", "-f", joined, check=False)


def test_sigterm_stops_it_cleanly(gluetun_standin: StandinFactory) -> None:
    t = gluetun_standin()
    # Without its own handler a PID 1 ignores SIGTERM, and docker would SIGKILL it after 30 s
    # (exit 137): exit code 0 says the stand-in handled the signal.
    docker("stop", "-t", "30", t.container, timeout=60)
    state = json.loads(docker("inspect", "-f", "{{json .State}}", t.container))
    assert state["ExitCode"] == 0, state
    assert "caught OS signal SIGTERM" in t.logs()


def test_build_images_labels_and_saves_the_standin(gluetun_image: str) -> None:
    label = docker("image", "inspect", "-f", '{{ index .Config.Labels "acefleet.input-hash" }}',
                   gluetun_image)  # fmt: skip
    assert label == expected_input_hash()  # rebuilt whenever images/gluetun-standin/ changes
    user = docker("image", "inspect", "-f", "{{.Config.User}}", gluetun_image)
    assert user == "gluetun"
    with tarfile.open(procs.REPO / "build" / "images" / "gluetun-standin.tar") as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    assert manifest[0]["RepoTags"] == [gluetun_image]
    image_id = docker("image", "inspect", "-f", "{{.Id}}", gluetun_image)
    assert manifest[0]["Config"].startswith(image_id.removeprefix("sha256:"))
