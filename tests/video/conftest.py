"""Fixtures for the video tests: the clips built by scripts/make-clips.sh (as the image build
does), reused across runs because the script is idempotent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import tools
from tests.support.procs import REPO


@pytest.fixture(scope="session")
def clip_dir() -> Path:
    """build/clips, made (or confirmed current) by the same script the engine image uses."""
    tools.require("ffmpeg", "ffmpeg")
    tools.require("ffprobe", "ffmpeg")
    out = REPO / "build" / "clips"
    done = subprocess.run(
        [str(REPO / "scripts" / "make-clips.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"make-clips.sh failed:\n{done.stdout}\n{done.stderr}"
    return out
