"""Gap filling with real processes: a failover without a standby takes the new engine's
prebuffering (2 s here); meanwhile the viewer's connection gets MPEG-TS null packets, then the new
source's bytes, marked as a discontinuity."""

from __future__ import annotations

from tests.proxy.client import get_json, metric, request, wait_for
from tests.proxy.conftest import StartProxy, StartSim, endpoint
from tests.proxy.test_splice import ts_report

CONTENT = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b"


async def test_failover_without_standby_keeps_the_connection_busy(
    start_sim: StartSim, start_proxy: StartProxy
) -> None:
    sims = {endpoint(s): s for s in (start_sim("--prebuffer", "2"), start_sim("--prebuffer", "2"))}
    proxy = start_proxy(*sims, GAP_FILL_AFTER_S="0.3")
    viewer = await request(proxy.url, f"/ace/getstream?infohash={CONTENT}")
    assert viewer.status == 200
    await viewer.read_until(100_000)
    primary = get_json(f"{proxy.url}/ace/status")["channels"][0]["upstream"]
    before = len(viewer.body)
    # counted from here: on a loaded machine the first engine may refuse its playback, and the
    # proxy's move to the other one is then a failover already
    failovers = metric(proxy.url, "acefleet_proxy_failovers_total")
    gaps = metric(proxy.url, "acefleet_proxy_failover_gap_seconds_count")
    sims[primary].kill()
    await wait_for(
        lambda: metric(proxy.url, "acefleet_proxy_failovers_total") == failovers + 1, within=10
    )
    await wait_for(
        lambda: metric(proxy.url, "acefleet_proxy_failover_gap_seconds_count") == gaps + 1,
        within=15,
    )
    assert await viewer.read_for(1.0) > 50_000  # the same connection, the new source
    assert get_json(f"{proxy.url}/ace/status")["channels"][0]["upstream"] != primary
    filled = metric(proxy.url, "acefleet_proxy_gap_fill_packets_total")
    assert filled > 0

    report = ts_report(bytes(viewer.body[before - before % 188 :]))
    assert report.misaligned == 0
    assert report.nulls == filled  # every filler packet reached this viewer, whole
    assert report.cc_errors == 0
    assert report.marks, "the new source is marked as a discontinuity"
    viewer.close()
