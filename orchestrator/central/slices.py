"""Work done in slices on central's one event loop, so that a long job (the dashboard frame at
500 edges: ~50 ms) never holds claims back for longer than one slice.

A sliced job is a generator that yields ``None`` wherever it may pause and returns its result.
``whole`` runs it to the end at once (for a caller that needs the result now: the first frame
of the feed, the SSE endpoint, tests); ``paced`` lets the loop run everything that is ready
(claims, heartbeats) at each pause. A job that pauses must not hold iterators over central's
live dicts across a pause: it takes what it walks as a list first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")
Sliced = Generator[None, None, T]


def whole(job: Sliced[T]) -> T:
    """Run the job without pausing."""
    while True:
        try:
            next(job)
        except StopIteration as done:
            result: T = done.value
            return result


async def paced(job: Sliced[T]) -> T:
    """Run the job, letting the loop serve what is ready at every pause."""
    while True:
        try:
            next(job)
        except StopIteration as done:
            result: T = done.value
            return result
        await asyncio.sleep(0)
