"""``acefleet-engine-sim``: an AceStream engine stand-in for tests, labs and benchmarks."""

from __future__ import annotations

import asyncio
import signal
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from acefleet import config, logs
from enginesim.api import EngineApi
from enginesim.clip_feed import make_feed
from enginesim.feed import Feed, SyntheticFeed
from enginesim.httpserver import serve
from enginesim.session import Registry
from enginesim.settings import SimSettings

log = logs.get("enginesim")

DESCRIPTION = (
    "Simulated AceStream engine: the engine's HTTP API (service API, getstream/manifest, "
    "stat/command URLs) with realistic or fast timing, endless synthetic MPEG-TS or real clips, "
    "observability at /_sim/sessions and fault injection at /_sim/faults (--chaos)."
)


def _has_clips(clip_dir: Path) -> bool:
    return clip_dir.is_dir() and any(clip_dir.glob("*.ts"))


def feed_factory(settings: SimSettings) -> Callable[[str], Feed]:
    """How each session gets its media, per ``--media`` and ``--clip-dir``."""
    clip_dir = settings.clip_dir
    if settings.media == "synthetic" or clip_dir is None or not _has_clips(clip_dir):
        if settings.media == "clips":
            raise SystemExit(f"--media clips needs --clip-dir with *.ts files ({clip_dir})")
        return lambda infohash: SyntheticFeed(settings.bitrate, seed=zlib.crc32(infohash.encode()))
    return lambda infohash: make_feed(clip_dir, infohash, settings.bitrate)


async def run(settings: SimSettings) -> None:
    timing = settings.resolved_timing()
    registry = Registry(timing, settings.bitrate, feed_factory(settings))
    api = EngineApi(settings, timing, registry)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if timing.startup_delay > 0:
        log.info("engine starting", seconds=timing.startup_delay)
        try:
            await asyncio.wait_for(stop.wait(), timing.startup_delay)
            return
        except TimeoutError:
            pass
    server, connections = await serve(api.handle, settings.host, settings.http_port)
    reaper = loop.create_task(registry.reaper())
    log.info(
        "engine ready",
        http_port=settings.http_port,
        timing=settings.timing,
        bind_all=settings.bind_all,
        chaos=settings.chaos,
    )
    await stop.wait()
    log.info("shutting down", sessions=len(registry.by_infohash))
    server.close()
    reaper.cancel()
    registry.end_all("shutdown")
    for conn in list(connections):
        conn.close()
    await asyncio.sleep(0)
    await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> None:
    settings = config.load(SimSettings, argv, prog="acefleet-engine-sim", description=DESCRIPTION)
    logs.configure(settings.log_level, settings.log_format, "acefleet-engine-sim")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(run(settings))
    else:
        uvloop.run(run(settings))
    sys.exit(0)


if __name__ == "__main__":
    main()
