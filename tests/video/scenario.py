"""The viewers of a video check, all at once: fresh TS and HLS viewers straight from the
simulator, a fresh viewer through acefleet-proxy and a second one joining that channel mid-stream
(each captured with arrival times, then judged), plus ffmpeg/ffprobe reading the simulator's TS
and HLS and the proxy's TS live as the players themselves.
Used by tests/video (seconds, in CI) and bench/video_check.py (a full minute)."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

from tests.video import player


def run(
    sim_url: str, proxy_url: str | None, seconds: float, join_after: float
) -> dict[str, player.Verdict]:
    """Capture every viewer for ``seconds`` (the late joiner from ``join_after`` on) concurrently,
    then judge each with ffmpeg/ffprobe (also concurrently). Channels differ per viewer, so the
    simulator's one-session-per-content rule does not make viewers steal each other's session."""
    jobs: dict[str, Future[player.Capture]] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        # ffmpeg/ffprobe as the players themselves (their own HTTP and HLS clients).
        players = {
            "ffmpeg-ts": f"{sim_url}/ace/getstream?id=video-ffmpeg-ts",
            "ffmpeg-hls": f"{sim_url}/ace/manifest.m3u8?id=video-ffmpeg-hls",
        }
        if proxy_url is not None:
            players["ffmpeg-proxy-ts"] = f"{proxy_url}/ace/getstream?id=video-ffmpeg-proxy"
        direct = {
            name: pool.submit(player.ffmpeg_view, url, seconds, name)
            for name, url in players.items()
        }
        jobs["direct-ts"] = pool.submit(
            player.capture_ts, f"{sim_url}/ace/getstream?id=video-direct-ts", seconds, "direct-ts"
        )
        jobs["direct-hls"] = pool.submit(
            player.capture_hls,
            f"{sim_url}/ace/manifest.m3u8?id=video-direct-hls",
            seconds,
            "direct-hls",
        )
        if proxy_url is not None:
            url = f"{proxy_url}/ace/getstream?id=video-proxy"
            jobs["proxy-ts"] = pool.submit(player.capture_ts, url, seconds, "proxy-ts")
            time.sleep(join_after)
            jobs["proxy-late"] = pool.submit(
                player.capture_ts, url, seconds - join_after, "proxy-late"
            )
        captures = {name: job.result() for name, job in jobs.items()}
        judged = {name: pool.submit(player.judge, cap) for name, cap in captures.items()}
        return {name: job.result() for name, job in {**judged, **direct}.items()}
