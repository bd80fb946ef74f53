"""VLC, a player nobody here wrote, pointed at the fleet's playlist URL: it reads central's M3U,
opens the first channel's stream URL (a real proxy, the simulator's real video behind it) and
records what it played, which ffprobe then decodes. The playlist is a player's secret one, whose
stream URLs carry tokens the proxy checks by itself.

VLC refuses to run as root, so it runs as ``nobody`` (setpriv) with a throwaway HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import OPERATOR_KEY
from tests.support import procs, tools

pytestmark = [pytest.mark.ffmpeg]

KEYS = "k1:vlc-test-signing-key-000001"
CHANNELS = [
    {"name": "VLC One", "content_kind": "id", "content_value": "e" * 40, "group": "Demo",
     "tvg_id": "one.demo", "number": 1},
    {"name": "VLC Two", "content_kind": "id", "content_value": "f" * 40, "group": "Other",
     "tvg_id": "two.demo", "number": 2},
]  # fmt: skip


@pytest.fixture
def video_proxy(clip_dir: Path, log_dir: Path) -> Iterator[procs.Service]:
    """A real proxy that requires stream tokens, in front of the simulator playing real clips."""
    sim = procs.start_clip_sim(clip_dir, log_dir)
    proxy_port = procs.free_port()
    proxy = procs.start(
        "acefleet-proxy",
        ["--host", "127.0.0.1", "--port", str(proxy_port), "--engines", f"127.0.0.1:{sim.port}"],
        port=proxy_port,
        ready_path="/readyz",
        log_dir=log_dir,
        env={"ACEFLEET_PROXY_TOKEN_KEYS": KEYS, "ACEFLEET_PROXY_TOKENS_REQUIRED": "true"},
    )
    yield proxy
    proxy.stop()
    sim.stop()


def vlc_record(url: str, out: Path, seconds: int = 8) -> subprocess.CompletedProcess[str]:
    """VLC records ``seconds`` of what it plays from ``url`` into ``out`` (a directory only VLC's
    user writes: pytest's own tmp tree is closed to ``nobody``)."""
    cvlc = tools.require("cvlc", "vlc-bin vlc-plugin-base")
    with tempfile.TemporaryDirectory(prefix="acefleet-vlc-") as work:
        os.chmod(work, 0o777)
        done = _vlc(cvlc, url, Path(work), seconds)
        recorded = Path(work) / "out.ts"
        if recorded.exists():
            shutil.copyfile(recorded, out)
    return done


def _vlc(cvlc: str, url: str, work: Path, seconds: int) -> subprocess.CompletedProcess[str]:
    out = work / "out.ts"
    argv = [
        cvlc, "-I", "dummy", "--no-stats", "--play-and-exit", f"--run-time={seconds}",
        "--sout", f"#std{{access=file,mux=ts,dst={out}}}", url,
    ]  # fmt: skip
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        env={"HOME": str(work), "PATH": os.environ["PATH"]},
    )


def decoded_seconds(path: Path) -> float:
    probe = subprocess.run(
        [tools.require("ffprobe", "ffmpeg"), "-v", "error", "-show_entries", "format=duration",
         "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return float(json.loads(probe.stdout)["format"]["duration"])


def central_with(start_central: StartCentral, tmp_path: Path, proxy: procs.Service) -> Running:
    seed = tmp_path / "channels.json"
    seed.write_text(json.dumps(CHANNELS))
    return start_central(catalog_seed_path=str(seed), player_url=proxy.url, token_keys=KEYS)


def test_vlc_plays_a_player_playlist_with_tokens(
    start_central: StartCentral, video_proxy: procs.Service, tmp_path: Path
) -> None:
    central = central_with(start_central, tmp_path, video_proxy)
    operator = httpx.Client(base_url=central.url, headers={"X-API-Key": OPERATOR_KEY}, timeout=10)
    created = operator.post("/v1/players", json={"name": "living room", "groups": ["Demo"]})
    assert created.status_code == 201, created.text
    playlist_url = created.json()["playlist_url"]
    assert playlist_url.startswith(video_proxy.url)  # player_url: where players reach the fleet
    own = playlist_url.replace(video_proxy.url, central.url, 1)
    text = httpx.get(own, timeout=10).text
    assert "token=" in text
    assert "VLC Two" not in text  # not in this player's groups
    out = tmp_path / "played.ts"
    done = vlc_record(own, out)
    assert out.exists(), done.stderr[-2000:]
    assert out.stat().st_size > 500_000, done.stderr[-2000:]
    assert decoded_seconds(out) >= 3
    # the same stream URL without its token is refused by the proxy itself
    stream = next(line for line in text.splitlines() if line.startswith("http"))
    bare = stream.split("&token=", 1)[0]
    refused = httpx.get(bare, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_required"
