"""Real video for the simulator: a channel plays one clip of ``--clip-dir`` as an endless live
stream (H.264 + AAC in MPEG-TS, timestamps and continuity counters continuous across loops).

Chunks are ~100 ms of media cut on packet boundaries; every GOP starts a new chunk with PAT,
PMT and the keyframe, and only those chunks have ``keyframe=True``, which is where the HLS
segmenter cuts. Durations come from the clip's PCR, so the pacer follows the clip's bitrate.
"""

from __future__ import annotations

from pathlib import Path

from enginesim.clips_library import clip_for, load_plan
from enginesim.feed import Chunk, Feed
from enginesim.tsmux_fields import ClipError
from enginesim.tsmux_loop import LoopPlan

__all__ = ["ClipError", "ClipFeed", "make_feed"]


class ClipFeed:
    """One reader's position in a looping clip: chunk ``index`` of loop ``loop``."""

    def __init__(self, plan: LoopPlan, name: str = "") -> None:
        self.plan = plan
        self.name = name
        self.loop = 0
        self.index = 0

    @property
    def bitrate(self) -> int:
        """The clip's own bit rate (bit/s of media time), what a live reader receives."""
        return round(self.plan.bitrate)

    def read(self) -> Chunk:
        chunk = self.plan.chunks[self.index]
        data = self.plan.render(self.index, self.loop)
        self.index += 1
        if self.index == len(self.plan.chunks):
            self.index = 0
            self.loop += 1
        return Chunk(data=data, duration_s=chunk.duration_s, keyframe=chunk.keyframe)


def make_feed(clip_dir: Path, infohash: str, bitrate_hint: int) -> Feed:
    """The feed for ``infohash``: its channel's clip, looped.

    ``bitrate_hint`` is ignored: the clip's own bitrate is what plays (see ``ClipFeed.bitrate``).
    Raises ``ClipError`` (a ``ValueError``) naming the directory or clip and what is wrong.
    """
    del bitrate_hint
    clip = clip_for(clip_dir, infohash)
    return ClipFeed(load_plan(clip), clip.stem)
