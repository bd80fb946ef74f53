"""A full minute of real video per viewer, judged by Debian's ffmpeg, plus time to first frame.

Starts a simulator playing clips (scripts/make-clips.sh) and an acefleet-proxy in front of it,
then runs tests/video/scenario.py for ``--seconds`` (all viewers at once: TS and HLS straight
from the simulator, a fresh proxy viewer and one joining mid-stream), and ``--ttff-runs`` short
fresh viewers of each kind, one after another, for the time-to-first-decodable-frame spread.

    .venv/bin/python bench/video_check.py                      # 60 s, fast timing profile
    .venv/bin/python bench/video_check.py --timing realistic --seconds 30 --ttff-runs 2

Figures go to bench/results/video.md by hand (with the command line used).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import procs  # noqa: E402
from tests.video import player, scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="capture per viewer")
    ap.add_argument("--join-after", type=float, default=20.5, help="late joiner starts here")
    ap.add_argument("--ttff-runs", type=int, default=5, help="fresh viewers per kind for TTFF")
    ap.add_argument("--timing", choices=["fast", "realistic"], default="fast")
    ap.add_argument("--clip-dir", type=Path, default=REPO / "build" / "clips")
    args = ap.parse_args()
    if not any(args.clip_dir.glob("*.ts")):
        print(f"no clips in {args.clip_dir}: run scripts/make-clips.sh {args.clip_dir}")
        return 2
    logs = Path(tempfile.mkdtemp(prefix="acefleet-video-check-"))
    sim_port, proxy_port = procs.free_port(), procs.free_port()
    sim_args = ["--http-port", str(sim_port), "--host", "127.0.0.1", "--timing", args.timing]
    sim = procs.start(
        "acefleet-engine-sim",
        [*sim_args, "--media", "clips", "--clip-dir", str(args.clip_dir)],
        port=sim_port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=logs,
        timeout=60,
    )
    ok = True
    try:
        engines = f"127.0.0.1:{sim_port}@64"
        proxy = procs.start(
            "acefleet-proxy",
            ["--host", "127.0.0.1", "--port", str(proxy_port), "--engines", engines],
            port=proxy_port,
            ready_path="/readyz",
            log_dir=logs,
            timeout=60,
        )
        try:
            print(f"== {args.seconds:.0f} s per viewer, all at once ({args.timing} timing)")
            for v in scenario.run(sim.url, proxy.url, args.seconds, args.join_after).values():
                print(v.summary())
                for line in (v.decode_errors + v.discontinuities + v.media_cc_breaks)[:5]:
                    print("   ", line)
                ok = ok and v.clean and not v.media_cc_breaks
            if args.ttff_runs:
                ttff(sim.url, proxy.url, args.ttff_runs, args.timing)
        finally:
            proxy.stop()
    finally:
        sim.stop()
    print("RESULT:", "clean" if ok else "PROBLEMS (see above)", f"(logs in {logs})")
    return 0 if ok else 1


def ttff(sim_url: str, proxy_url: str, runs: int, timing: str) -> None:
    """Fresh viewers of new channels, one at a time: seconds until the first decodable frame."""
    watch = 3.0 if timing == "fast" else 14.0  # realistic: 8 s of prebuffering come first
    kinds = {
        "direct TS": lambda i: player.capture_ts(
            f"{sim_url}/ace/getstream?id=ttff-ts-{i}", watch, "ttff"
        ),
        "direct HLS": lambda i: player.capture_hls(
            f"{sim_url}/ace/manifest.m3u8?id=ttff-hls-{i}", 2.0, "ttff"
        ),
        "proxy TS, new channel": lambda i: player.capture_ts(
            f"{proxy_url}/ace/getstream?id=ttff-proxy-{i}", watch, "ttff"
        ),
        "proxy TS, joining a live channel": lambda i: player.capture_ts(
            f"{proxy_url}/ace/getstream?id=video-proxy-shared", 2.0, "ttff"
        ),
    }
    print(f"== time to first decodable frame, {runs} fresh viewers per kind (seconds)")
    shared = f"{proxy_url}/ace/getstream?id=video-proxy-shared"
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name, capture in kinds.items():
            if name.startswith("proxy TS, joining"):
                # One viewer keeps the channel playing: the joiners join a live upstream.
                holder = pool.submit(player.capture_ts, shared, runs * 6.0 + 20, "hold")
                time.sleep(3.0 if timing == "fast" else 12.0)
            firsts = []
            for i in range(runs):
                v = player.judge(capture(i))
                firsts.append(v.first_frame_s)
                time.sleep(0.37 * (i + 1))  # join at different points of the GOP
            print(
                f"{name:34s} median {statistics.median(firsts):.3f}  min {min(firsts):.3f}  "
                f"max {max(firsts):.3f}   all: {' '.join(f'{x:.3f}' for x in firsts)}"
            )
        if "holder" in locals():
            holder.result()


if __name__ == "__main__":
    raise SystemExit(main())
