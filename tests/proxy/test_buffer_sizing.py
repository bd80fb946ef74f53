"""A channel's buffer is sized by its bitrate (``buffer_seconds``), not a fixed ``buffer_bytes``
each: against the real simulator at two bitrates, the proxy's status and its
``acefleet_proxy_buffer_bytes`` gauge show a low-bitrate channel keeping about
``buffer_seconds`` of stream (at least 512 KiB), a high-bitrate one capped at ``buffer_bytes``,
and the gauge back to zero once the channels closed. A late joiner still starts at a keyframe
with PAT and PMT first."""

from __future__ import annotations

from typing import Any

from acefleet import mpegts
from tests.proxy.client import get_json, metric, request, wait_for
from tests.proxy.conftest import StartProxy, StartSim, endpoint

SLOW = "1111111111111111111111111111111111111111"
FAST = "2222222222222222222222222222222222222222"
MIB = 1024 * 1024


async def test_each_channel_keeps_seconds_of_its_own_bitrate(
    start_sim: StartSim, start_proxy: StartProxy
) -> None:
    slow_sim = start_sim("--bitrate", "1000000")  # 125 kB/s: 4 s is 500 kB, under the floor
    fast_sim = start_sim("--bitrate", "16000000")  # 2 MB/s: 4 s is 8 MB, over the ceiling
    proxy = start_proxy(
        endpoint(slow_sim),
        endpoint(fast_sim),
        args=("--buffer-seconds", "4", "--buffer-bytes", str(4 * MIB), "--grace-s", "0.5"),
    )
    slow = await request(proxy.url, f"/ace/getstream?infohash={SLOW}")
    fast = await request(proxy.url, f"/ace/getstream?infohash={FAST}")
    await slow.read_until(50_000)
    await fast.read_until(500_000)

    def by_bitrate() -> list[dict[str, Any]]:
        # the static list gives either channel either engine: tell them apart by bitrate
        found: list[dict[str, Any]] = get_json(f"{proxy.url}/ace/status")["channels"]
        return sorted(found, key=lambda c: int(c.get("bitrate_bps") or 0))

    def sized() -> bool:
        low, high = by_bitrate()
        return low.get("buffer_bytes") == 512 * 1024 and high.get("buffer_bytes") == 4 * MIB

    try:
        await wait_for(sized, within=15)
    except AssertionError:
        raise AssertionError(by_bitrate()) from None
    low, high = by_bitrate()
    assert 0.8e6 < low["bitrate_bps"] < 1.3e6
    assert high["bitrate_bps"] > 12e6
    assert metric(proxy.url, "acefleet_proxy_buffer_bytes") == 512 * 1024 + 4 * MIB
    # a joiner of the small-buffered channel starts at a keyframe: PAT first
    late = await request(proxy.url, f"/ace/getstream?{low['key'].replace(':', '=')}")
    body = await late.read_until(2 * mpegts.PACKET_SIZE)
    assert body[0] == mpegts.SYNC_BYTE
    assert ((body[1] & 0x1F) << 8 | body[2]) == 0  # PID 0: the PAT
    for v in (slow, fast, late):
        v.close()
    await wait_for(lambda: metric(proxy.url, "acefleet_proxy_buffer_bytes") == 0, within=10)
