"""TLS on the proxy (docs/tls.md, internal section), against real servers on loopback with a CA
made in the test: the proxy serves the same routes over HTTPS on ``tls_port`` to clients that
trust the fleet CA and is refused by clients that do not; a relay between two edges goes over
HTTPS, with central reached over HTTPS too; a relay from an edge whose certificate does not
verify is refused before a byte of the stream is read; a hitless reload keeps serving HTTPS on
the same port and cuts only the TLS connections (their session state cannot be handed over)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.central.settings import CentralSettings
from proxy.cli import Running
from proxy.cli import start as start_proxy_in_process
from proxy.control.links import identity, player_base
from proxy.engine_api import UpstreamError
from proxy.settings import ProxySettings
from proxy.tls_server import is_tls
from proxy.upstream import open_playback
from tests.central.conftest import ThreadCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY
from tests.proxy.central_side import heartbeat_forever, sim_engine, until
from tests.proxy.conftest import StartProxy, StartSim, endpoint
from tests.proxy.test_handover import (
    TsViewer,
    check_viewers,
    keep_watching,
    reload,
    stop_pid,
    stop_watching,
    wait_until,
)
from tests.support import procs
from tests.support.tls_ca import HostFiles, TestCA


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "fleet-ca")


@pytest.fixture
def other_ca(tmp_path: Path) -> TestCA:
    """A CA nobody in the fleet uses: what a client with the wrong CA file trusts."""
    return TestCA(tmp_path / "other-ca", name="some other CA")


def trusting(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca.ca_file)


def tls_flags(files: HostFiles, port: int) -> tuple[str, ...]:
    return (
        "--tls-port",
        str(port),
        "--tls-cert-file",
        files.cert_file,
        "--tls-key-file",
        files.key_file,
    )


async def test_the_proxy_serves_its_routes_over_https_to_clients_of_the_fleet_ca(
    sim: procs.Service, start_proxy: StartProxy, ca: TestCA, other_ca: TestCA
) -> None:
    tls_port = procs.free_port()
    proxy = start_proxy(endpoint(sim), args=tls_flags(ca.issue("edge0"), tls_port))
    base = f"https://127.0.0.1:{tls_port}"
    async with httpx.AsyncClient(verify=trusting(ca), timeout=30) as client:
        assert (await client.get(f"{base}/readyz")).status_code == 200
        async with client.stream("GET", f"{base}/ace/getstream?id=tlsplay") as resp:
            assert resp.status_code == 200
            got = b""
            async for chunk in resp.aiter_bytes():
                got += chunk
                if len(got) >= 188 * 100:
                    break
            assert got[0] == 0x47
            assert got[188] == 0x47
    # the same name checked against another CA: the handshake fails, nothing is served
    async with httpx.AsyncClient(verify=trusting(other_ca), timeout=10) as stranger:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.get(f"{base}/readyz")
    # the plain port stays for HAProxy and players that cannot do TLS
    async with httpx.AsyncClient(timeout=10) as plain:
        assert (await plain.get(f"{proxy.url}/readyz")).status_code == 200


async def test_a_relay_from_an_edge_with_an_unknown_certificate_is_refused(
    sim: procs.Service, start_proxy: StartProxy, ca: TestCA, other_ca: TestCA
) -> None:
    tls_port = procs.free_port()
    start_proxy(endpoint(sim), args=tls_flags(ca.issue("edge0"), tls_port))
    url = f"https://127.0.0.1:{tls_port}/ace/getstream?id=relayed"
    with pytest.raises(UpstreamError) as refused:
        await open_playback(
            url,
            lambda data: None,
            connect_timeout=5,
            first_byte_timeout=10,
            ca_file=other_ca.ca_file,
        )
    assert refused.value.code == "playback_tls_failed"
    # the same relay with the fleet CA gets the stream
    got: list[bytes] = []
    playback = await open_playback(
        url, got.append, connect_timeout=5, first_byte_timeout=30, ca_file=ca.ca_file
    )
    playback.close()
    assert got
    assert got[0][0] == 0x47


@pytest.fixture
async def central_tls(ca: TestCA) -> AsyncIterator[ThreadCentral]:
    """Central's app over HTTPS in a thread (tests/central/test_tls.py runs the real command)."""
    files = ca.issue("control")
    central = ThreadCentral(
        CentralSettings(
            listen_port=procs.free_port(),
            service_keys=[SERVICE_KEY],
            operator_keys=[OPERATOR_KEY],
            database_url="sqlite+aiosqlite://",
            warmup_s=0,
            heartbeat_interval_s=0.5,
            warm_buffer_per_edge=0,
            tls_cert_file=files.cert_file,
            tls_key_file=files.key_file,
        )
    )
    yield central
    central.stop()


async def test_an_edge_relays_from_another_over_https_with_central_over_https(
    start_sim: StartSim, ca: TestCA, central_tls: ThreadCentral
) -> None:
    sim = start_sim()
    engine = sim_engine("edge0", 0, sim)
    beating = asyncio.create_task(
        heartbeat_forever(central_tls.url, "edge0", [engine], max_engines=1, verify=trusting(ca))
    )
    proxies: list[Running] = []
    try:

        async def edge(name: str, **tls: Any) -> Running:
            settings = ProxySettings.model_validate(
                {
                    "host": "127.0.0.1",
                    "port": procs.free_port(),
                    "central_url": central_tls.url,
                    "central_api_key": SERVICE_KEY,
                    "tls_ca_file": ca.ca_file,
                    "edge_host": name,
                    "proxy_id": f"proxy-{name}",
                    "snapshot_interval_s": 0.3,
                    "event_flush_s": 0.05,
                    **tls,
                }
            )
            running = await start_proxy_in_process(settings)
            proxies.append(running)
            return running

        files = ca.issue("edge0")
        source = await edge(
            "edge0",
            tls_port=procs.free_port(),
            tls_cert_file=files.cert_file,
            tls_key_file=files.key_file,
        )
        relaying = await edge("edge1")
        ops = httpx.AsyncClient(
            base_url=central_tls.url, headers={"X-API-Key": OPERATOR_KEY}, verify=trusting(ca)
        )
        async with ops:
            # the source edge's snapshot reached central over HTTPS, naming its https relay URL
            await until("edge0's snapshot in central", lambda: _proxy_urls(ops), within=30)
            assert await _proxy_urls(ops) == [f"https://127.0.0.1:{source.app.settings.tls_port}"]
            url = f"http://127.0.0.1:{relaying.app.settings.port}/ace/getstream?id=relayme"
            async with (
                httpx.AsyncClient(timeout=30) as viewer,
                viewer.stream("GET", url) as resp,
            ):
                assert resp.status_code == 200
                got = 0
                async for chunk in resp.aiter_bytes():
                    got += len(chunk)
                    if got > 100_000:
                        break
                channel = relaying.app.edge.live_channels()[0]
                assert channel.placement is not None
                assert channel.placement.source == "relay"
                assert channel.placement.url is not None
                assert channel.placement.url.startswith("https://127.0.0.1:")
                # the source edge serves that relay on a TLS connection, from its engine
                assert any(is_tls(c.transport) for c in source.app.connections if c.viewer)
                served = source.app.edge.live_channels()[0]
                assert served.placement is not None
                assert served.placement.source == "central"
    finally:
        for running in proxies:
            await running.stop(1)
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def _proxy_urls(ops: httpx.AsyncClient) -> list[str]:
    """The relay URLs central holds for the edges (from their snapshots)."""
    r = await ops.get("/v1/hosts")
    assert r.status_code == 200, r.text
    return [h["proxy_url"] for h in r.json()["items"] if h["proxy_url"]]


async def test_a_reload_keeps_the_https_port_and_cuts_only_the_tls_connections(
    sim: procs.Service, start_proxy: StartProxy, ca: TestCA
) -> None:
    control = tempfile.mkdtemp(prefix="hovtls", dir="/tmp")  # a Unix socket path is short
    sock = f"{control}/control.sock"
    tls_port = procs.free_port()
    proxy = start_proxy(
        f"{endpoint(sim)}@8", args=tls_flags(ca.issue("edge0"), tls_port), handover_socket=sock
    )
    channel = "ab" * 20
    plain = TsViewer(channel)
    plain.task = asyncio.create_task(plain.run(proxy.port))
    secure = TlsViewer(channel, trusting(ca))
    secure.task = asyncio.create_task(secure.run(tls_port))
    await wait_until(lambda: len(plain.data) > 64 * 1024 and len(secure.data) > 64 * 1024)
    new_pid = 0
    try:
        at = time.monotonic()
        code, result = await asyncio.to_thread(reload, sock)
        new_pid = result.get("new_pid") or 0
        assert code == 0, result
        # the plain viewer is handed over; the TLS one cannot be (its session state stays in
        # the old process) and is cut: it reconnects, like a relaying edge's failover
        assert result["viewers"] == 1, result
        await keep_watching([plain], at)
        await wait_until(lambda: secure.closed)
        # the new process serves HTTPS on the same port (the listener was handed over)
        async with httpx.AsyncClient(verify=trusting(ca), timeout=10) as client:
            r = await client.get(f"https://127.0.0.1:{tls_port}/ace/status")
            assert r.status_code == 200
            assert r.json()["viewers"] == 1
        again = TlsViewer(channel, trusting(ca))
        again.task = asyncio.create_task(again.run(tls_port))
        await wait_until(lambda: len(again.data) > 64 * 1024)
        await stop_watching([plain, again])
        check_viewers([plain])
        assert again.body()[0] == 0x47
    finally:
        await stop_watching([plain, secure])
        if new_pid:
            stop_pid(new_pid)
        shutil.rmtree(control, ignore_errors=True)


class TlsViewer(TsViewer):
    """A raw viewer over TLS (what a relaying edge's connection is)."""

    def __init__(self, channel: str, context: ssl.SSLContext) -> None:
        super().__init__(channel)
        self.context = context

    async def run(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=self.context)
        writer.write(f"GET /ace/getstream?id={self.channel} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        try:
            while True:
                chunk = await reader.read(256 * 1024)
                if not chunk:
                    self.closed = True
                    break
                self.arrivals.append((time.monotonic(), len(chunk)))
                self.data += chunk
        except (ConnectionError, ssl.SSLError):
            self.closed = True
        finally:
            writer.close()


def test_edges_relay_over_https_while_players_are_sent_to_the_plain_port(ca: TestCA) -> None:
    files = ca.issue("edge0")
    settings = ProxySettings.model_validate(
        {
            "port": 6880,
            "edge_host": "edge0",
            "tls_port": 6443,
            "tls_cert_file": files.cert_file,
            "tls_key_file": files.key_file,
        }
    )
    assert identity(settings)[2] == "https://edge0:6443"  # what the snapshots tell central
    # the playlists a proxy serves itself (no player_url in the catalog) name the plain port
    assert player_base(settings) == "http://edge0:6880"
