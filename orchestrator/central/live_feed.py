"""The WebSocket live feed: one publisher per central turns state changes into ``snapshot`` and
``delta`` messages and offers them to every connection's bounded send queue.

Frames are built once per change however many dashboards watch (at most every
``live_update_interval_s``), diffed against the previous frame, and serialised once. A connection
whose queue is full is not reading fast enough: it is marked dropped (its handler closes it with
4000) instead of buffering without bound.

Feed versions start at central's start time in milliseconds and grow by one per published frame,
far slower than the clock: versions of a restarted central are above every version the previous
run handed out, so a ``resume`` from the previous run never matches a frame by accident and gets
a snapshot.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from acefleet import logs

Frame = dict[str, Any]
# Each kind of item in a frame and the field that identifies it.
log = logs.get(__name__)
KINDS = (("hosts", "name"), ("engines", "id"), ("streams", "stream_id"))
RESUME_FRAMES = 32  # frames remembered to answer a resume with a delta (unchanged items shared)


def diff(old: Frame, new: Frame) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Items of ``new`` that are new or changed, and keys of ``old`` items that are gone."""
    copy = {kind: list(new[kind]) for kind, _ in KINDS}  # share_and_diff's sharing stays here
    return share_and_diff(old, copy)


def share_and_diff(old: Frame, new: Frame) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """``diff``, and in the same pass ``new`` reuses ``old``'s item objects where they are
    equal: the remembered frames then cost little more than their changes, and later diffs
    skip them by identity (live_frame hands out the same objects for hosts that did not
    change, so most items are skipped without a comparison)."""
    upsert: dict[str, list[Any]] = {}
    remove: dict[str, list[Any]] = {}
    for kind, key in KINDS:
        before = {item[key]: item for item in old[kind]}
        items = new[kind]
        changed = []
        for i, item in enumerate(items):
            previous = before.pop(item[key], None)
            if previous is item:
                continue
            if previous is not None and previous == item:
                items[i] = previous
            else:
                changed.append(item)
        upsert[kind] = changed
        remove[kind] = list(before)  # what is left of the old items is gone
    return upsert, remove


def delta_text(
    version: int, new: Frame, upsert: dict[str, list[Any]], remove: dict[str, list[Any]]
) -> str:
    return json.dumps(
        {
            "type": "delta",
            "version": version,
            "summary": new["summary"],
            "upsert": upsert,
            "remove": remove,
        }
    )


def delta_message(version: int, old: Frame, new: Frame) -> str:
    return delta_text(version, new, *diff(old, new))


def ping_message() -> str:
    return json.dumps({"type": "ping", "at": datetime.now(UTC).isoformat()})


@dataclass(eq=False)
class Subscriber:
    """One connection's side of the feed: what it still has to send, and whether it fell
    behind."""

    key: str
    queue: asyncio.Queue[str]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, text: str) -> None:
        if self.dropped.is_set():
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped.set()


class LiveFeed:
    def __init__(
        self,
        build: Callable[[], Frame],
        changes: Callable[[], int],
        interval_s: float,
        queue_max: int,
        max_per_key: int,
        ping_s: float,
    ) -> None:
        self._build = build  # the current frame (fleet_frame of central)
        self._changes = changes  # central's version: moved means rebuild
        self.interval_s = interval_s
        self.queue_max = queue_max
        self.max_per_key = max_per_key
        self.ping_s = ping_s  # an app-level ping after this long without a message
        self.version = int(time.time() * 1000)
        self.frame: Frame | None = None
        self._built_from = -1
        self._history: deque[tuple[int, Frame]] = deque(maxlen=RESUME_FRAMES)
        self._snapshot: str | None = None
        self.subscribers: set[Subscriber] = set()
        self.per_key: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    # --- frames ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Build a frame if central changed since the last one and offer its delta to every
        subscriber; True when something was published."""
        if self.frame is not None and self._changes() == self._built_from:
            return False
        self._built_from = self._changes()
        frame = self._build()
        if self.frame is not None:
            upsert, remove = share_and_diff(self.frame, frame)
            if frame == self.frame:  # items shared, so mostly identity checks
                return False  # a version bump that changed nothing a dashboard sees
            self.version += 1
            text = delta_text(self.version, frame, upsert, remove)
            for sub in list(self.subscribers):
                sub.offer(text)
        else:
            self.version += 1
        self.frame = frame
        self._snapshot = None
        self._history.append((self.version, frame))
        return True

    def snapshot(self) -> str:
        if self._snapshot is None:
            assert self.frame is not None
            self._snapshot = json.dumps(
                {"type": "snapshot", "version": self.version, "fleet": self.frame}
            )
        return self._snapshot

    def catch_up(self, since: int | None) -> str:
        """The first message of a connection: the delta from ``since`` to now when that frame
        is still remembered, else a snapshot."""
        assert self.frame is not None
        for version, frame in self._history:
            if version == since:
                return delta_message(self.version, frame, self.frame)
        return self.snapshot()

    # --- connections -----------------------------------------------------------------------

    def reserve(self, key: str) -> bool:
        """Count a connection against its key's limit; False when the key is at it."""
        if self.per_key[key] >= self.max_per_key:
            return False
        self.per_key[key] += 1
        return True

    def release(self, key: str) -> None:
        self.per_key[key] -= 1
        if self.per_key[key] <= 0:
            del self.per_key[key]

    def join(self, key: str, since: int | None) -> Subscriber:
        """Subscribe with the catch-up message queued first; nothing awaits between building it
        and joining, so no delta is lost or sent twice."""
        self.refresh()
        sub = Subscriber(key, asyncio.Queue(self.queue_max))
        sub.offer(self.catch_up(since))
        self.subscribers.add(sub)
        if self._task is None:
            self._task = asyncio.create_task(self._publish(), name="central-live-feed")
        return sub

    def leave(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def _publish(self) -> None:
        """Runs while anyone listens; the next subscriber starts it again."""
        quiet = 0.0
        try:
            while self.subscribers:
                await asyncio.sleep(self.interval_s)
                try:
                    published = self.refresh()
                except Exception as exc:  # a bug in one frame must not end the feed for all
                    log.error("live_feed_frame_failed", error=repr(exc))
                    published = False
                if published:
                    quiet = 0.0
                    continue
                quiet += self.interval_s
                if quiet >= self.ping_s:
                    quiet = 0.0
                    text = ping_message()
                    for sub in list(self.subscribers):
                        sub.offer(text)
        finally:
            self._task = None
