"""The WebSocket live feed: one publisher per central turns state changes into ``snapshot`` and
``delta`` messages and offers them to every connection's bounded send queue.

Frames are built once per change however many dashboards watch (at most every
``live_update_interval_s``), diffed against the previous frame, and serialised once; the build
and the diff run in slices with the loop served between them (slices.py), so claims wait for
one slice of a frame, not the whole of it. A connection
whose queue is full is not reading fast enough: it is marked dropped (its handler closes it with
4000) instead of buffering without bound.

A connection that asks for ``patches`` (``/v1/live/ws?patches=1``, the dashboard) gets a changed
item as its key and the fields that changed only (``patch``), new items whole (``upsert``): with
500 edges heartbeating, most of a delta is hosts whose heartbeat time moved and engines whose
load moved, and whole items made the 50 dashboards' feed ~20 MiB/s of the claim loop's sends.

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
from orchestrator.central import slices

Frame = dict[str, Any]
Items = dict[str, list[Any]]  # per kind of item
# Each kind of item in a frame and the field that identifies it.
log = logs.get(__name__)
KINDS = (("hosts", "name"), ("engines", "id"), ("streams", "stream_id"))
RESUME_FRAMES = 32  # frames remembered to answer a resume with a delta (unchanged items shared)
ITEMS_PER_SLICE = 3000  # items diffed between two pauses of the publisher (~1.5 ms)


@dataclass
class Changes:
    """What a frame changed, per kind of item."""

    upsert: Items = field(default_factory=dict)  # new or changed items, whole
    remove: Items = field(default_factory=dict)  # keys of the items that are gone
    added: Items = field(default_factory=dict)  # new items, whole
    patch: Items = field(default_factory=dict)  # changed items: key and changed fields only


def diff(old: Frame, new: Frame) -> tuple[Items, Items]:
    """Items of ``new`` that are new or changed, and keys of ``old`` items that are gone."""
    copy = {kind: list(new[kind]) for kind, _ in KINDS}  # share_and_diff's sharing stays here
    changes = slices.whole(share_and_diff(old, copy))
    return changes.upsert, changes.remove


def patch_of(key: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` as its key and what differs from ``old`` (a field gone: None; a nested value
    that changed: whole)."""
    patch = {key: new[key]}
    for name, value in new.items():
        if name not in old or old[name] != value:
            patch[name] = value
    for name in old.keys() - new.keys():
        patch[name] = None
    return patch


def share_and_diff(old: Frame, new: Frame) -> slices.Sliced[Changes]:
    """``diff``, and in the same pass ``new`` reuses ``old``'s item objects where they are
    equal: the remembered frames then cost little more than their changes, and later diffs
    skip them by identity (live_frame hands out the same objects for hosts that did not
    change, so most items are skipped without a comparison). Pauses every
    ``ITEMS_PER_SLICE`` items; neither frame may change meanwhile (both are the feed's own)."""
    changes = Changes()
    for kind, key in KINDS:
        before = {item[key]: item for item in old[kind]}
        yield
        items = new[kind]
        changed, added, patch = [], [], []
        for i, item in enumerate(items):
            if i % ITEMS_PER_SLICE == ITEMS_PER_SLICE - 1:
                yield
            previous = before.pop(item[key], None)
            if previous is item:
                continue
            if previous is None:
                added.append(item)
                changed.append(item)
            elif previous == item:
                items[i] = previous
            else:
                patch.append(patch_of(key, previous, item))
                changed.append(item)
        changes.upsert[kind] = changed
        changes.added[kind] = added
        changes.patch[kind] = patch
        changes.remove[kind] = list(before)  # what is left of the old items is gone
    return changes


def delta_text(version: int, new: Frame, upsert: Items, remove: Items) -> str:
    return json.dumps(
        {
            "type": "delta",
            "version": version,
            "summary": new["summary"],
            "upsert": upsert,
            "remove": remove,
        }
    )


def patch_text(version: int, new: Frame, changes: Changes) -> str:
    """The delta for connections that asked for patches."""
    return json.dumps(
        {
            "type": "delta",
            "version": version,
            "summary": new["summary"],
            "upsert": changes.added,
            "patch": changes.patch,
            "remove": changes.remove,
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
    since: int | None = None  # the feed version it resumes from (catch_up)
    patches: bool = False  # deltas as patches (patch_text)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, text: str) -> None:
        if self.dropped.is_set():
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped.set()


class Turns:
    """One turn per loop iteration: after a frame every connection's sender is ready at once,
    and without turns the loop would run all of them (50 sends of a delta, or 50 snapshots of
    ~2.5 MB when dashboards reconnect together) before polling for a claim again. A sender
    takes a turn and then sends; the next one is woken an iteration later, so claims that
    arrived meanwhile are read in between. A turn is not held across the send, so a client that
    does not read holds nobody up."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            await asyncio.sleep(0)


class LiveFeed:
    def __init__(
        self,
        build: Callable[[], slices.Sliced[Frame]],
        changes: Callable[[], int],
        interval_s: float,
        queue_max: int,
        max_per_key: int,
        ping_s: float,
    ) -> None:
        self._build = build  # the current frame, in slices (fleet_frame_sliced of central)
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
        self._joining: list[Subscriber] = []  # admitted after the publisher's next frame
        self.turns = Turns()  # the connections' senders take turns (Turns)
        self.per_key: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    # --- frames ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Build a frame if central changed since the last one and offer its delta to every
        subscriber, at once; True when something was published."""
        return slices.whole(self._refresh())

    def _refresh(self) -> slices.Sliced[bool]:
        """``refresh`` in slices. Only one runs at a time: the publisher's, or (while no
        publisher runs) ``join``'s, so ``self.frame`` stays put across the pauses."""
        if self.frame is not None and self._changes() == self._built_from:
            return False
        # Taken before building: a change during the build moves it again and is picked up by
        # the next refresh.
        self._built_from = self._changes()
        frame = yield from self._build()
        if self.frame is not None:
            changes = yield from share_and_diff(self.frame, frame)
            if frame == self.frame:  # items shared, so mostly identity checks
                return False  # a version bump that changed nothing a dashboard sees
            self.version += 1
            texts: dict[bool, str] = {}  # each flavour serialised once, if anyone takes it
            for sub in list(self.subscribers):
                if sub.patches not in texts:
                    texts[sub.patches] = (
                        patch_text(self.version, frame, changes)
                        if sub.patches
                        else delta_text(self.version, frame, changes.upsert, changes.remove)
                    )
                sub.offer(texts[sub.patches])
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

    def join(self, key: str, since: int | None, patches: bool = False) -> Subscriber:
        """Subscribe with the catch-up message (``catch_up``) queued first, and nothing awaited
        between taking it and joining, so no delta is lost or sent twice. ``patches``: deltas
        as patches (the catch-up stays whole: a snapshot, or a delta of whole items).

        With no publisher running the frame is built here and now. While it runs, the
        subscriber waits for its next frame (at most an interval and a build away): a build
        here would block the loop for a whole frame per joining dashboard (50 reconnecting at
        once: 50 builds of ~30 ms at 500 edges), and would race the publisher's build."""
        sub = Subscriber(key, asyncio.Queue(self.queue_max), since=since, patches=patches)
        if self._task is not None and self.frame is not None:
            self._joining.append(sub)
            return sub
        self.refresh()
        self._admit(sub)
        self._task = asyncio.create_task(self._publish(), name="central-live-feed")
        return sub

    def _admit(self, sub: Subscriber) -> None:
        sub.offer(self.catch_up(sub.since))
        self.subscribers.add(sub)

    def leave(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if sub in self._joining:
            self._joining.remove(sub)

    async def _publish(self) -> None:
        """Runs while anyone listens or waits to join; the next subscriber starts it again."""
        quiet = 0.0
        try:
            while self.subscribers or self._joining:
                await asyncio.sleep(self.interval_s)
                try:
                    published = await slices.paced(self._refresh())
                except Exception as exc:  # a bug in one frame must not end the feed for all
                    log.error("live_feed_frame_failed", error=repr(exc))
                    published = False
                finally:
                    # Right after the frame (no await between): their catch-up is from it.
                    joining, self._joining = self._joining, []
                    for sub in joining:
                        self._admit(sub)
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
