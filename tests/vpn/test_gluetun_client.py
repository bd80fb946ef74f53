"""GluetunClient (orchestrator/agent/vpn.py) against stand-in tunnels in the real dockerd, at
their container address as the agent reaches them: status, public IP, forwarded port, the
refused key, the older routes of Gluetun v3.40, an unreachable and a silent control server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from orchestrator.agent.vpn import GluetunClient, GluetunError, VpnMonitor
from tests.support.gluetun import API_KEY, StandinFactory, docker, standin_env

pytestmark = [pytest.mark.docker]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_reads_a_running_tunnel(
    gluetun_standin: StandinFactory, http: httpx.AsyncClient
) -> None:
    t = gluetun_standin(standin_env(STANDIN_FORWARDED_PORT="45678"))
    status = await GluetunClient(http, t.url, API_KEY).read()
    assert status.reachable
    assert status.running
    assert status.forwarded_port == 45678
    assert status.public_ip == t.get("/v1/publicip/ip").json()["public_ip"]
    assert status.reason is None
    assert status.port_reason is None
    # Not asked for the port: none read.
    unasked = await GluetunClient(http, t.url, API_KEY).read(want_port=False)
    assert (unasked.running, unasked.forwarded_port, unasked.port_reason) == (True, None, None)


async def test_a_lost_port_is_none_with_its_reason(
    gluetun_standin: StandinFactory, http: httpx.AsyncClient
) -> None:
    t = gluetun_standin()
    client = GluetunClient(http, t.url, API_KEY)
    t.set_forwarded_port(0)
    status = await client.read()
    assert status.running
    assert status.forwarded_port is None
    assert status.port_reason is not None
    assert "no port" in status.port_reason
    t.set_forwarded_port(52000)
    assert (await client.read()).forwarded_port == 52000


async def test_a_wrong_key_is_named_in_the_reason(
    gluetun_standin: StandinFactory, http: httpx.AsyncClient
) -> None:
    t = gluetun_standin()
    status = await GluetunClient(http, t.url, "not-the-key-0000").read()
    assert status.reachable  # it answered: 401
    assert not status.running
    assert status.reason is not None
    assert "401" in status.reason
    assert "API key" in status.reason
    with pytest.raises(GluetunError, match="API key"):
        await GluetunClient(http, t.url, "not-the-key-0000").set_vpn(False)
    assert t.status() == "running"


async def test_set_vpn_stops_and_starts_the_tunnel(
    gluetun_standin: StandinFactory, http: httpx.AsyncClient
) -> None:
    t = gluetun_standin()
    client = GluetunClient(http, t.url, API_KEY)
    await client.set_vpn(False)
    stopped = await client.read()
    assert stopped.reachable
    assert not stopped.running
    assert (stopped.public_ip, stopped.forwarded_port) == (None, None)
    assert stopped.reason is not None
    assert "stopped" in stopped.reason
    await client.set_vpn(True)  # returns once the VPN runs, as Gluetun's PUT does
    again = await client.read()
    assert again.running
    assert again.public_ip is not None
    assert again.forwarded_port is not None


async def test_falls_back_to_the_routes_of_gluetun_v3_40(
    gluetun_standin: StandinFactory, http: httpx.AsyncClient
) -> None:
    t = gluetun_standin(standin_env(STANDIN_GLUETUN_VERSION="3.40", STANDIN_FORWARDED_PORT="44321"))
    status = await GluetunClient(http, t.url, API_KEY).read()
    assert status.running
    assert status.forwarded_port == 44321
    assert status.reason is None
    logs = t.logs()
    # It asked the new route first, was refused (v3.40 does not know it), then the old one.
    assert "401 GET /v1/portforward" in logs
    assert "200 GET /v1/openvpn/portforwarded" in logs


async def test_unreachable_control_server(
    gluetun_standin: StandinFactory, http: httpx.AsyncClient
) -> None:
    t = gluetun_standin()
    wrong_port = GluetunClient(http, f"http://{t.ip}:8001", API_KEY)
    status = await wrong_port.read()
    assert (status.reachable, status.running) == (False, False)
    assert status.reason is not None
    assert "unreachable" in status.reason
    with pytest.raises(GluetunError, match="unreachable"):
        await wrong_port.set_vpn(True)


async def test_a_silent_control_server_times_out(
    gluetun_standin: StandinFactory, http: httpx.AsyncClient
) -> None:
    t = gluetun_standin()
    docker("pause", t.container)
    try:
        status = await GluetunClient(http, t.url, API_KEY, timeout_s=1).read()
    finally:
        docker("unpause", t.container)
    assert (status.reachable, status.running) == (False, False)
    assert status.reason is not None
    assert "timed out after 1 s" in status.reason


async def test_legacy_vpn_monitor_reads_a_standin(
    gluetun_standin: StandinFactory, http: httpx.AsyncClient
) -> None:
    t = gluetun_standin(standin_env(STANDIN_FORWARDED_PORT="46000"))
    monitor = VpnMonitor(http, t.url, API_KEY)
    state = await monitor.check(engines_say_connected=True)
    assert (state.connected, state.forwarded_port) == (True, 46000)
    assert monitor.reason is None
    t.set_vpn(False)
    state = await monitor.check(engines_say_connected=None)
    assert (state.connected, state.forwarded_port) == (False, None)
    assert monitor.reason is not None
    assert "not running" in monitor.reason
