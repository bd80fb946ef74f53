"""Garbage collection on central's own schedule, not Python's.

Every heartbeat replaces its edge's engine reports, so a 500-edge fleet makes and frees ~35,000
objects a second. Python 3.11 starts a young collection when allocations minus deallocations
pass 700, and it counts the old reports' deaths too: the young list grew to 20,000-36,000
objects between two passes (11-24 ms each), the middle generation's passes took up to 38 ms,
and the full ones, triggered by the same churn reaching the oldest generation, scanned the
whole live state (~100,000 objects, 50-80 ms, finding nothing) every ~6 s. All of it ran on the
event loop that answers claims (bench/results/central.md, issue 17).

Here Python's automatic collection is off while central runs, and one task collects instead:
the young generation every ``YOUNG_S`` (a few hundred objects, well under a millisecond), the
middle one every ``MIDDLE_EVERY`` passes, and everything every ``gc_full_interval_s``. The
work is the same; only the pauses are short, bar one full pass a minute. Garbage without
cycles is freed at once by reference counting as always.

The same timer measures how late the loop wakes it (``lag``): the time other work on the loop,
or the OS, kept it from running — exactly what a claim arriving then waits before central
reads it. A claim's latency seen by a proxy minus its time inside central is mostly this.

Collection on/off is process-wide: the first running central (tests run several in one
process) switches it off, the last one to stop restores it.
"""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import Histogram

from acefleet import logs

log = logs.get(__name__)
YOUNG_S = 0.02
# Objects that outlive a young pass (most of a heartbeat's reports live 2 s) move to the middle
# generation: collected every 100 ms, it stays small too.
MIDDLE_EVERY = 5
_running = 0
_was_enabled = True


def _hold() -> None:
    global _running, _was_enabled
    if _running == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _running += 1


def _let_go() -> None:
    global _running
    _running -= 1
    if _running == 0 and _was_enabled:
        gc.enable()


async def collect_forever(full_interval_s: float, pause: Histogram, lag: Histogram) -> None:
    """Collect on this schedule until cancelled (``full_interval_s`` 0: leave Python's own
    schedule alone and return at once). Each pass's pause is observed in ``pause`` by
    generation (0 young, 1 middle, 2 full), the loop's lateness at each wake-up in ``lag``."""
    if full_interval_s <= 0:
        return
    loop = asyncio.get_running_loop()
    pauses = [pause.labels(generation=str(g)) for g in range(3)]
    _hold()
    try:
        passes = 0
        full_at = loop.time() + full_interval_s
        while True:
            asleep = loop.time()
            await asyncio.sleep(YOUNG_S)
            lag.observe(max(0.0, loop.time() - asleep - YOUNG_S))
            passes += 1
            if loop.time() >= full_at:
                generation = 2
                full_at = loop.time() + full_interval_s
            else:
                generation = 1 if passes % MIDDLE_EVERY == 0 else 0
            started = time.perf_counter()
            found = gc.collect(generation)
            took = time.perf_counter() - started
            pauses[generation].observe(took)
            if generation == 2:
                log.debug("gc_full", seconds=round(took, 4), collected=found)
    finally:
        _let_go()
