"""Send a progressive session's chunks so that media time sent tracks wall time.

The pacer keeps a budget of media seconds it may send: it grows with the wall clock (faster
during the initial burst, slower or not at all under a slow/stall fault) and shrinks by each
chunk's ``duration_s``. One batched write per reader per tick keeps the system-call count low.

With more than one reader, chunks go round-robin to the readers, so each gets a torn stream
(continuity-counter gaps, a fraction of the rate) -- the corruption real engines show when a
second player opens the same progressive session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from enginesim.session import Session

MAX_BACKLOG_S = 5.0  # media a blocked reader may owe before the excess is dropped (live)

SpeedFn = Callable[[str], float]


async def pace(session: Session, interval: float, speed_of: SpeedFn) -> None:
    timing = session.timing
    loop = asyncio.get_running_loop()
    burst_media = timing.burst_bytes * 8 / session.bitrate
    last = loop.time()
    # the clock runs at burst speed until burst_seconds after start, then at 1.0
    burst_end = last + timing.burst_seconds
    budget = 0.0
    if timing.burst_seconds <= 0:
        budget, burst_media = burst_media, 0.0
    burst_speed = burst_media / timing.burst_seconds if burst_media else 1.0
    turn = 0
    while session.readers and not session.ended.is_set():
        now = loop.time()
        fast = max(0.0, min(now, burst_end) - last) if burst_media else 0.0
        media_dt = fast * burst_speed + (now - last - fast)
        last = now
        budget = min(budget + media_dt * speed_of(session.infohash), MAX_BACKLOG_S)
        if budget > 0:
            readers = session.readers
            batches: list[list[bytes]] = [[] for _ in readers]
            while budget > 0:
                chunk = session.feed.read()
                batches[turn % len(readers)].append(chunk.data)
                turn += 1
                budget -= chunk.duration_s
                session.media_bytes += len(chunk.data)
            for reader, batch in zip(readers, batches, strict=True):
                if batch:
                    data = b"".join(batch)
                    reader.write(data)
                    session.bytes_sent += len(data)
            if len(readers) == 1:
                turn = 0
        for reader in list(session.readers):
            if not reader.writable:
                await reader.drain()
        await asyncio.sleep(interval)
