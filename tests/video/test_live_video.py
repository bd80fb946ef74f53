"""Real video end to end: the simulator plays clips, viewers read it directly (TS and HLS) and
through acefleet-proxy (fresh and mid-stream joiners), and Debian's ffmpeg judges what arrived.

CI reads 14 s per viewer, all viewers at once: that crosses the clip's loop point (10.24 s) and
several GOPs. bench/video_check.py runs the same scenario for a full minute
(figures in bench/results/video.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import procs
from tests.video import player, scenario

SECONDS = 14.0
JOIN_AFTER = 5.5  # not a multiple of the 1.28 s GOP: the joiner arrives mid-GOP

pytestmark = [pytest.mark.ffmpeg, pytest.mark.slow]


@pytest.fixture(scope="module")
def verdicts(
    clip_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, player.Verdict]]:
    logs = tmp_path_factory.mktemp("video-logs")
    sim_port, proxy_port = procs.free_port(), procs.free_port()
    sim_args = ["--http-port", str(sim_port), "--host", "127.0.0.1", "--timing", "fast"]
    sim = procs.start(
        "acefleet-engine-sim",
        [*sim_args, "--media", "clips", "--clip-dir", str(clip_dir)],
        port=sim_port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=logs,
    )
    try:
        engines = f"127.0.0.1:{sim_port}@4"
        proxy = procs.start(
            "acefleet-proxy",
            ["--host", "127.0.0.1", "--port", str(proxy_port), "--engines", engines],
            port=proxy_port,
            ready_path="/readyz",
            log_dir=logs,
        )
        try:
            found = scenario.run(sim.url, proxy.url, SECONDS, JOIN_AFTER)
            for v in found.values():
                print(v.summary())
            yield found
        finally:
            proxy.stop()
    finally:
        sim.stop()


def assert_plays(v: player.Verdict, min_media: float) -> None:
    assert not v.error, v.summary()
    assert v.codecs == ["h264", "aac"], v.summary()
    assert not v.decode_errors, v.decode_errors[:10]
    assert not v.discontinuities, v.discontinuities[:10]
    assert v.media_s >= min_media, v.summary()
    assert v.first_frame_s >= 0, "no frame decoded"


@pytest.mark.parametrize("name", ["direct-ts", "direct-hls", "proxy-ts"])
def test_fresh_viewer_decodes_across_the_loop_point(
    verdicts: dict[str, player.Verdict], name: str
) -> None:
    v = verdicts[name]
    assert_plays(v, min_media=11.0)  # > 10.24 s: at least one loop seam was played
    assert v.starts_with_tables, v.summary()
    assert not v.media_cc_breaks, v.media_cc_breaks[:10]


@pytest.mark.parametrize("name", ["ffmpeg-ts", "ffmpeg-hls", "ffmpeg-proxy-ts"])
def test_ffmpeg_plays_live_without_errors(verdicts: dict[str, player.Verdict], name: str) -> None:
    """ffmpeg and ffprobe read the live URLs themselves (HLS through ffmpeg's playlist client)."""
    v = verdicts[name]
    assert not v.error, v.summary()
    assert v.codecs == ["h264", "aac"], v.summary()
    assert not v.decode_errors, v.decode_errors[:10]
    assert not v.discontinuities, v.discontinuities[:10]
    assert v.media_s >= SECONDS - 1.5, v.summary()  # the loop point (10.24 s) was crossed


def test_hls_segments_start_at_keyframes(verdicts: dict[str, player.Verdict]) -> None:
    # The simulator's segmenter cuts where Chunk.keyframe is set: PAT, PMT, keyframe, each time.
    v = verdicts["direct-hls"]
    assert v.media_s > 0
    assert not v.segments_not_at_keyframes, v.segments_not_at_keyframes


@pytest.mark.parametrize("name", ["direct-ts", "direct-hls"])
def test_direct_viewers_get_continuous_table_counters(
    verdicts: dict[str, player.Verdict], name: str
) -> None:
    # HLS segments are cut from one stream, so counters also run on across segment borders.
    assert not verdicts[name].cc_breaks, verdicts[name].cc_breaks[:10]


@pytest.mark.parametrize("name", ["proxy-ts", "proxy-late"])
def test_proxy_viewers_get_continuous_table_counters(
    verdicts: dict[str, player.Verdict], name: str
) -> None:
    assert not verdicts[name].cc_breaks, verdicts[name].cc_breaks[:10]


def test_late_joiner_through_proxy_starts_at_a_keyframe(
    verdicts: dict[str, player.Verdict],
) -> None:
    v = verdicts["proxy-late"]
    assert_plays(v, min_media=SECONDS - JOIN_AFTER - 2)
    assert v.starts_with_tables, (
        f"late joiner does not start with PAT, PMT, keyframe: {v.summary()}"
    )
