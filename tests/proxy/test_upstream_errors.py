"""Engine errors and hangs become precise HTTP errors; dying upstreams are replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.proxy.client import fault, metric, packets_aligned, request, sim_sessions, wait_for
from tests.proxy.conftest import StartProxy, StartSim, endpoint
from tests.support.procs import Service

CONTENT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
async def hanging_engine() -> AsyncIterator[str]:
    """A TCP server that accepts and never answers: an engine that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    for w in held:
        w.close()
    server.close()
    await server.wait_closed()


async def test_unknown_content_is_502_with_reason(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim))
    s = await request(proxy.url, "/ace/getstream?id=dead0000000000000000000000000000000000ff")
    assert s.status == 502
    assert s.headers["content-type"] == "application/json"
    error = s.json()["error"]
    assert error["code"] == "content_unavailable"
    assert "failed to load content" in error["message"]
    status = (await request(proxy.url, "/ace/status")).json()
    assert status["upstreams"] == 0  # nothing left behind


async def test_engine_call_hang_is_504(hanging_engine: str, start_proxy: StartProxy) -> None:
    proxy = start_proxy(
        hanging_engine,
        args=("--engine-call-timeout-s", "1", "--first-byte-timeout-s", "30", "--failovers", "0"),
    )
    s = await request(proxy.url, f"/ace/getstream?id={CONTENT}", within=10)
    assert s.status == 504
    assert s.json()["error"]["code"] == "engine_timeout"
    assert metric(proxy.url, "acefleet_proxy_engine_errors_total", 'call="start",reason="timeout"')


async def test_prebuffer_longer_than_first_byte_timeout_is_504(
    start_sim: StartSim, start_proxy: StartProxy
) -> None:
    sim = start_sim("--prebuffer", "20")
    proxy = start_proxy(
        endpoint(sim),
        args=("--engine-call-timeout-s", "1", "--first-byte-timeout-s", "2", "--failovers", "0"),
    )
    s = await request(proxy.url, f"/ace/getstream?id={CONTENT}", within=10)
    assert s.status == 504
    assert s.json()["error"]["code"] == "playback_timeout"


async def test_prebuffer_longer_than_engine_call_timeout_still_plays(
    start_sim: StartSim, start_proxy: StartProxy
) -> None:
    # the first-byte timeout is its own: a 2.5 s prebuffer outlasts the 1 s JSON call timeout
    sim = start_sim("--prebuffer", "2.5", "--idle-timeout", "30")
    proxy = start_proxy(
        endpoint(sim), args=("--engine-call-timeout-s", "1", "--first-byte-timeout-s", "10")
    )
    s = await request(proxy.url, f"/ace/getstream?id={CONTENT}", within=10)
    assert s.status == 200
    await s.read_until(10_000)
    s.close()


async def test_unreachable_engine_is_502(start_proxy: StartProxy) -> None:
    from tests.support.procs import free_port

    proxy = start_proxy(f"127.0.0.1:{free_port()}", args=("--failovers", "1"))
    s = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert s.status == 502
    assert s.json()["error"]["code"] == "engine_unreachable"


async def test_engines_at_cap_is_503_with_retry_after(
    sim: Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(sim) + "@1")
    first = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await first.read_until(4096)
    second = await request(proxy.url, f"/ace/getstream?id={OTHER}")
    assert second.status == 503
    assert second.json()["error"]["code"] == "no_capacity"
    assert int(second.headers["retry-after"]) >= 1
    first.close()


async def test_stalled_engine_is_replaced_without_touching_viewers(
    start_sim: StartSim, start_proxy: StartProxy
) -> None:
    a, b = start_sim(), start_sim()
    proxy = start_proxy(endpoint(a), endpoint(b), args=("--stall-timeout-s", "1"))
    viewer = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await viewer.read_until(100_000)
    used, spare = (a, b) if sim_sessions(a.url)["sessions"] else (b, a)
    fault(used.url, action="stall")
    before = len(viewer.body)
    await viewer.read_until(before + 600_000, within=15)  # bytes keep coming, same connection
    assert sim_sessions(spare.url)["sessions_started_total"] == 1
    assert packets_aligned(bytes(viewer.body))
    assert metric(proxy.url, "acefleet_proxy_failovers_total") == 1
    assert metric(proxy.url, "acefleet_proxy_upstream_failures_total", 'reason="stall"') == 1
    # the abandoned session was stopped on the stalled engine
    await wait_for(lambda: sim_sessions(used.url)["sessions"] == [], within=5)
    viewer.close()


async def test_cut_upstream_resumes_on_a_packet_boundary(
    start_sim: StartSim, start_proxy: StartProxy
) -> None:
    sim = start_sim()
    proxy = start_proxy(endpoint(sim))
    viewer = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await viewer.read_until(100_000)
    for _ in range(2):
        fault(sim.url, action="cut")
        await viewer.read_until(len(viewer.body) + 300_000, within=10)
    assert packets_aligned(bytes(viewer.body))
    assert sim_sessions(sim.url)["sessions_started_total"] == 3
    assert metric(proxy.url, "acefleet_proxy_failovers_total") == 2
    viewer.close()


async def test_engine_failing_probes_is_not_placed(
    start_sim: StartSim, start_proxy: StartProxy
) -> None:
    sim = start_sim()
    proxy = start_proxy(endpoint(sim), args=("--probe-interval-s", "0.2", "--probe-failures", "2"))
    fault(sim.url, action="fail_probes")
    await wait_for(
        lambda: (
            metric(
                proxy.url, "acefleet_proxy_engine_errors_total", 'call="probe",reason="http_status"'
            )
            >= 3
        ),
        within=10,
    )
    refused = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "no_healthy_engine"
    assert sim_sessions(sim.url)["sessions_started_total"] == 0  # never tried playback on it
    fault(sim.url, action="clear")
    await asyncio.sleep(0.8)  # a probe or two succeed again
    again = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert again.status == 200
    again.close()
