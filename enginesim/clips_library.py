"""The channels a simulator plays: the ``*.ts`` clips of a directory, one per channel.

A channel is picked from the infohash deterministically (the same infohash gets the same clip on
every simulator with the same clip set), and each clip is parsed into a ``LoopPlan`` once per
process, however many sessions play it.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from enginesim.tsmux_fields import ClipError
from enginesim.tsmux_loop import LoopPlan

_plans: dict[Path, tuple[tuple[int, int], LoopPlan]] = {}  # path -> ((size, mtime), plan)
_lock = threading.Lock()  # plans are built on first use; a second caller waits, not re-parses


def list_clips(clip_dir: Path) -> list[Path]:
    """The clips in ``clip_dir`` in name order (the channel numbering)."""
    if not clip_dir.is_dir():
        raise ClipError(f"clip directory {clip_dir} does not exist")
    clips = sorted(p for p in clip_dir.glob("*.ts") if p.is_file())
    if not clips:
        raise ClipError(
            f"no *.ts clips in {clip_dir} (scripts/make-clips.sh {clip_dir} makes them)"
        )
    return clips


def channel_index(infohash: str, channels: int) -> int:
    """Stable infohash -> channel mapping (case-insensitive, like infohashes)."""
    digest = hashlib.sha256(infohash.strip().lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % channels


def clip_for(clip_dir: Path, infohash: str) -> Path:
    clips = list_clips(clip_dir)
    return clips[channel_index(infohash, len(clips))]


def load_plan(clip: Path) -> LoopPlan:
    """The parsed clip, cached per path; a clip rebuilt since (size or mtime) is parsed again.

    Parsing takes ~0.1 s per 10 s clip, once per channel per process.
    """
    st = clip.stat()
    path, version = clip.resolve(), (st.st_size, st.st_mtime_ns)
    with _lock:
        cached = _plans.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            plan = LoopPlan.from_bytes(clip.read_bytes())
        except ClipError as exc:
            raise ClipError(f"{clip}: {exc}") from exc
        _plans[path] = (version, plan)
        return plan
