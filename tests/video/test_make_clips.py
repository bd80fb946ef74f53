"""scripts/make-clips.sh: idempotent, channel count honoured, channels audibly distinct."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import REPO

SCRIPT = REPO / "scripts" / "make-clips.sh"

pytestmark = pytest.mark.ffmpeg


def make(out: Path, *args: str) -> str:
    done = subprocess.run(
        [str(SCRIPT), str(out), *args], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def tone_hz(clip: Path) -> float:
    """Dominant frequency of the clip's first 4 s of audio, from upward zero crossings."""
    argv = ["ffmpeg", "-v", "error", "-i", str(clip), "-t", "4", "-ac", "1", "-f", "s16le", "-"]
    pcm = subprocess.run(argv, capture_output=True, timeout=60, check=True).stdout
    samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    return crossings / (len(samples) / 48000)


def test_second_run_encodes_nothing(clip_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in clip_dir.glob("*.ts")}
    assert "(0 encoded now)" in make(clip_dir)
    assert {p.name: p.stat().st_mtime_ns for p in clip_dir.glob("*.ts")} == before
    assert sorted(before) == [f"ch{i:02d}.ts" for i in range(1, 7)]


def test_fewer_channels_remove_the_extra_clips(tmp_path: Path) -> None:
    assert "(2 encoded now)" in make(tmp_path, "2")
    assert "(0 encoded now)" in make(tmp_path, "1")
    assert [p.name for p in tmp_path.glob("*.ts")] == ["ch01.ts"]
    assert not list(tmp_path.glob(".*.tmp.*"))


def test_bad_channel_count_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(SCRIPT), str(tmp_path), "0"], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "CHANNELS must be 1-99" in done.stderr


def test_each_channel_has_its_own_tone(clip_dir: Path) -> None:
    tones = [round(tone_hz(clip_dir / f"ch{i:02d}.ts")) for i in (1, 2, 3)]
    assert tones == pytest.approx([440, 494, 554], rel=0.01)
