"""The media seam: SyntheticFeed honours the Chunk contract and the configured bitrate."""

from __future__ import annotations

import pytest

from acefleet import mpegts
from enginesim.feed import Chunk, Feed, SyntheticFeed
from tests.simulator.conftest import check_ts


def _chunks(feed: Feed, n: int) -> list[Chunk]:
    return [feed.read() for _ in range(n)]


@pytest.mark.parametrize("bitrate", [1_000_000, 4_000_000, 8_000_000])
def test_bitrate_is_exact_over_time(bitrate: int) -> None:
    chunks = _chunks(SyntheticFeed(bitrate), 300)
    media = sum(c.duration_s for c in chunks)
    total = sum(len(c.data) for c in chunks)
    assert media == pytest.approx(30.0)
    assert abs(total * 8 / media - bitrate) / bitrate < 0.001


def test_chunks_are_whole_packets_with_continuous_counters() -> None:
    chunks = _chunks(SyntheticFeed(4_000_000, seed=7), 50)
    assert all(len(c.data) % mpegts.PACKET_SIZE == 0 for c in chunks)
    rep = check_ts(b"".join(c.data for c in chunks))
    assert rep.cc_errors == 0
    assert rep.pcr_pids == {0x0100}
    # one PCR per chunk, spaced by the chunk's media time
    steps = {b - a for a, b in zip(rep.pcrs, rep.pcrs[1:], strict=False)}
    assert steps == {2_700_000}


def test_keyframe_chunks_start_at_random_access_points() -> None:
    chunks = _chunks(SyntheticFeed(4_000_000), 40)
    keys = [i for i, c in enumerate(chunks) if c.keyframe]
    assert keys == [0, 10, 20, 30]  # every 1 s
    for c in chunks:
        # PAT, PMT, then the PES start that carries PCR (+ random access on keyframes)
        assert mpegts.pid_of(c.data[0:]) == 0
        third = c.data[2 * 188 : 3 * 188]
        assert mpegts.payload_unit_start(third)
        assert mpegts.random_access(third) == c.keyframe


def test_channels_differ_by_seed() -> None:
    a = SyntheticFeed(4_000_000, seed=1).read()
    b = SyntheticFeed(4_000_000, seed=2).read()
    assert a.data != b.data


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="too low"):
        SyntheticFeed(10_000)
    with pytest.raises(ValueError, match="positive"):
        SyntheticFeed(0)
