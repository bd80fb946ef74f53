"""Fan-out against the real simulator: sharing, joins, slow viewers, grace, metrics."""

from __future__ import annotations

import asyncio

from acefleet import mpegts
from tests.proxy.client import (
    engine_infohash,
    metric,
    packets_aligned,
    request,
    sim_sessions,
    wait_for,
)
from tests.proxy.conftest import StartProxy, StartSim, endpoint
from tests.support.procs import Service

CONTENT = "0123456789abcdef0123456789abcdef01234567"


async def test_stream_is_ts_from_a_decodable_start(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim))
    s = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert s.status == 200
    assert s.headers["content-type"] == "video/mp2t"
    data = await s.read_until(188 * 200)
    s.close()
    assert packets_aligned(data)
    # the stream opens with PAT, then PMT, then a keyframe: a decoder can start at once
    assert mpegts.pid_of(data[0:188]) == 0
    assert mpegts.pid_of(data[188:376]) != 0
    assert mpegts.random_access(data[376:564])


async def test_many_viewers_share_one_engine_session(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim))
    streams = await asyncio.gather(
        *(request(proxy.url, f"/ace/getstream?id={CONTENT}") for _ in range(12))
    )
    assert [s.status for s in streams] == [200] * 12
    await asyncio.gather(*(s.read_until(64 * 1024) for s in streams))
    assert all(packets_aligned(bytes(s.body)) for s in streams)
    stats = sim_sessions(sim.url)
    assert stats["sessions_started_total"] == 1
    assert len(stats["sessions"]) == 1
    assert stats["sessions"][0]["readers"] == 1
    status = (await request(proxy.url, "/ace/status")).json()
    assert status["upstreams"] == 1
    assert status["channels"][0]["viewers"] == 12
    for s in streams:
        s.close()


async def test_id_and_infohash_share_the_session(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim))
    by_id = await request(proxy.url, f"/ace/getstream?content_id={CONTENT}")
    await by_id.read_until(4096)
    infohash = sim_sessions(sim.url)["sessions"][0]["infohash"]
    assert infohash != CONTENT  # the engine reports another key: the point of the alias
    by_hash = await request(proxy.url, f"/ace/getstream?infohash={infohash.upper()}")
    assert by_hash.status == 200
    await by_hash.read_until(4096)
    by_id.close()
    by_hash.close()
    # a later request by id (the infohash channel is still live) also joins it
    again = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await again.read_until(4096)
    again.close()
    assert sim_sessions(sim.url)["sessions_started_total"] == 1
    status = (await request(proxy.url, "/ace/status")).json()
    assert status["upstreams"] == 1
    assert f"infohash:{infohash}" in status["channels"][0]["keys"]


async def test_late_joiner_starts_at_keyframe_with_pat_pmt(
    sim: Service, start_proxy: StartProxy
) -> None:
    # a 1 MiB buffer: the stream's own start (PAT, PMT, keyframe) is evicted, so a joiner
    # only starts decodably if the proxy finds a keyframe (one per second, ~500 kB, here)
    proxy = start_proxy(
        endpoint(sim), args=("--buffer-bytes", "1048576", "--join-max-bytes", "786432")
    )
    first = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await first.read_until(1_600_000)
    late = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    data = await late.read_until(188 * 3)
    assert late.first_byte_at is not None
    assert packets_aligned(data)
    assert mpegts.pid_of(data[0:188]) == 0  # PAT
    pmt_pid = mpegts.pid_of(data[188:376])
    assert pmt_pid not in (0, mpegts.NULL_PID)
    keyframe = data[376:564]
    assert mpegts.random_access(keyframe)
    assert mpegts.payload_unit_start(keyframe)
    # and it is the most recent keyframe: the first viewer got the same bytes recently
    assert bytes(keyframe) in bytes(first.body[-4_000_000:])
    first.close()
    late.close()
    assert sim_sessions(sim.url)["sessions_started_total"] == 1


async def test_slow_viewer_does_not_stall_fast_ones(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(
        endpoint(sim),
        args=(
            "--buffer-bytes",
            "524288",
            "--join-max-bytes",
            "262144",
            "--viewer-sndbuf",
            "65536",
        ),
    )
    fast = [await request(proxy.url, f"/ace/getstream?id={CONTENT}") for _ in range(3)]
    # never reads, with a tiny receive window: its socket is full almost at once
    slow = await request(proxy.url, f"/ace/getstream?id={CONTENT}", rcvbuf=4096)
    await asyncio.gather(*(f.read_until(300_000) for f in fast))
    got = await asyncio.gather(*(f.read_for(3.0) for f in fast))
    # 4 Mbit/s is 500 kB/s: every fast viewer keeps (nearly) the full rate for 3 s
    assert min(got) > 1_200_000, got
    assert all(packets_aligned(bytes(f.body)) for f in fast)
    # the slow one fell behind the (small) buffer and was moved forward, counted
    slow_got = await slow.read_for(1.0)
    assert slow_got > 0
    assert packets_aligned(bytes(slow.body))
    assert metric(proxy.url, "acefleet_proxy_viewer_skips_total") >= 1
    for f in [*fast, slow]:
        f.close()


async def test_viewer_that_never_reads_is_dropped(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(
        endpoint(sim), args=("--viewer-stall-timeout-s", "1.5", "--viewer-sndbuf", "65536")
    )
    watcher = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await watcher.read_until(10_000)
    stuck = await request(proxy.url, f"/ace/getstream?id={CONTENT}", rcvbuf=4096)
    await wait_for(
        lambda: metric(proxy.url, "acefleet_proxy_viewer_drops_total", 'reason="stalled"') == 1,
        within=8,
    )
    assert await watcher.read_for(1.0) > 100_000  # the other viewer never noticed
    status = (await request(proxy.url, "/ace/status")).json()
    assert status["viewers"] == 1
    watcher.close()
    stuck.close()


async def test_grace_period_then_engine_stop(start_sim: StartSim, start_proxy: StartProxy) -> None:
    sim = start_sim("--idle-timeout", "60")  # only the proxy's stop call can end the session
    proxy = start_proxy(endpoint(sim), args=("--grace-s", "1.5"))
    s = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await s.read_until(10_000)
    s.close()
    # zapping back within the grace period reuses the running upstream
    await asyncio.sleep(0.5)
    back = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await back.read_until(len(back.body) + 10_000)
    back.close()
    assert sim_sessions(sim.url)["sessions_started_total"] == 1
    await asyncio.sleep(0.5)
    assert len(sim_sessions(sim.url)["sessions"]) == 1  # still lingering
    # after the grace the proxy sends command_url?method=stop
    await wait_for(lambda: sim_sessions(sim.url)["sessions_ended_total"] == 1, within=5)
    assert sim_sessions(sim.url)["sessions"] == []
    status = (await request(proxy.url, "/ace/status")).json()
    assert status["upstreams"] == 0


async def test_metrics_move(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim))
    assert metric(proxy.url, "acefleet_proxy_bytes_out_total") == 0
    s = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await s.read_until(200_000)
    assert metric(proxy.url, "acefleet_proxy_viewers") == 1
    assert metric(proxy.url, "acefleet_proxy_upstreams") == 1
    assert metric(proxy.url, "acefleet_proxy_bytes_out_total") >= 200_000
    assert metric(proxy.url, "acefleet_proxy_ttfb_seconds_count") == 1
    assert metric(proxy.url, "acefleet_proxy_engine_call_seconds_count", 'call="start"') == 1
    text = (await request(proxy.url, "/metrics")).body.decode()
    assert CONTENT not in text
    assert "127.0.0.1" not in text
    s.close()
    await wait_for(lambda: metric(proxy.url, "acefleet_proxy_viewers") == 0, within=5)


async def test_id_request_merges_into_a_live_infohash_channel(
    sim: Service, start_proxy: StartProxy
) -> None:
    infohash = engine_infohash(sim.url, CONTENT)
    proxy = start_proxy(endpoint(sim) + "@2")
    by_hash = await request(proxy.url, f"/ace/getstream?infohash={infohash}")
    await by_hash.read_until(50_000)
    # the proxy cannot know this id is that infohash until the engine says so: it starts a
    # session, learns the infohash, and merges the viewer into the live channel
    by_id = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert by_id.status == 200
    await by_id.read_until(50_000)
    await by_hash.read_until(len(by_hash.body) + 300_000)
    status = (await request(proxy.url, "/ace/status")).json()
    assert status["upstreams"] == 1
    assert status["channels"][0]["viewers"] == 2
    await wait_for(lambda: len(sim_sessions(sim.url)["sessions"]) == 1, within=5)
    by_hash.close()
    by_id.close()


async def test_drop_policy_disconnects_a_viewer_behind_the_buffer(
    sim: Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(
        endpoint(sim),
        args=(
            "--slow-viewer-policy", "drop", "--buffer-bytes", "262144",
            "--join-max-bytes", "131072", "--viewer-sndbuf", "65536",
        ),
    )  # fmt: skip
    watcher = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await watcher.read_until(10_000)
    behind = await request(proxy.url, f"/ace/getstream?id={CONTENT}", rcvbuf=4096)
    await wait_for(
        lambda: metric(proxy.url, "acefleet_proxy_viewer_drops_total", 'reason="behind"') == 1,
        within=10,
    )
    assert metric(proxy.url, "acefleet_proxy_viewer_skips_total") == 0
    assert await watcher.read_for(1.0) > 100_000
    watcher.close()
    behind.close()
