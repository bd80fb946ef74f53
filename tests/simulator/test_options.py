"""Flags and profiles: --help, --timing, delay overrides, env, --bind-all, SIGTERM, --media."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from enginesim.settings import PROFILES, SimSettings
from tests.simulator.conftest import Reader, StartSim, start_json, wait_for
from tests.support import procs

EXE = str(Path(sys.executable).parent / "acefleet-engine-sim")


def test_help_lists_engine_and_acefleet_options() -> None:
    out = subprocess.run([EXE, "--help"], capture_output=True, text=True, timeout=30, check=True)
    for flag in (
        "--http-port",
        "--port",
        "--bind-all",
        "--timing",
        "--chaos",
        "--clip-dir",
        "--prebuffer",
        "--unknown-infohash-delay",
        "ACEFLEET_SIM_",
    ):
        assert flag in out.stdout, flag


def test_profiles_match_the_engine_api_table() -> None:
    real = PROFILES["realistic"]
    assert real.json_delay == 0.5
    assert real.unknown_id_delay == 4
    assert real.unknown_infohash_delay == 28
    assert 5 <= real.prebuffer <= 30
    assert real.burst_bytes == 20_000_000
    assert real.burst_seconds == 12
    assert 4 <= real.hls_segment_seconds <= 6
    fast = PROFILES["fast"]
    for name in ("json_delay", "unknown_id_delay", "unknown_infohash_delay", "prebuffer"):
        assert getattr(fast, name) <= 0.1, name
    resolved = SimSettings(timing="realistic", prebuffer=1.5).resolved_timing()
    assert resolved.prebuffer == 1.5
    assert resolved.json_delay == 0.5


def test_realistic_profile_delays_json_and_unknown_content(start_sim: StartSim) -> None:
    svc = start_sim("--timing", "realistic", "--startup-delay", "0", fast=False)
    t0 = time.monotonic()
    start_json(svc.url, "id=real")
    # the 0.5 s JSON delay, and not the 4 s one of unknown content (lower bounds hold under load)
    assert 0.45 <= time.monotonic() - t0 < 3.9
    t0 = time.monotonic()
    r = httpx.get(svc.url + "/ace/getstream?format=json&id=deadbeef", timeout=15)
    assert r.json() == {"response": None, "error": "failed to load content"}
    assert time.monotonic() - t0 >= 3.9


def test_fast_profile_is_the_one_in_effect(start_sim: StartSim) -> None:
    """The fast profile's delays are checked by value above; here, that ``--timing fast`` is the
    profile the running simulator uses (how quickly it answers is not a test's business)."""
    svc = start_sim()
    start_json(svc.url, "id=quick")
    assert '"timing": "fast"' in svc.log() or "timing=fast" in svc.log(), svc.log()


def test_env_prefix_sets_options(start_sim: StartSim) -> None:
    svc = start_sim(env={"ACEFLEET_SIM_JSON_DELAY": "0.8"})
    t0 = time.monotonic()
    start_json(svc.url, "id=env")
    assert time.monotonic() - t0 >= 0.75


def test_startup_delay_keeps_the_port_closed(log_dir: Path) -> None:
    port = procs.free_port()
    t0 = time.monotonic()
    svc = procs.start(
        "acefleet-engine-sim",
        ["--http-port", str(port), "--timing", "fast", "--startup-delay", "1.5"],
        port=port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=log_dir,
    )
    try:
        assert time.monotonic() - t0 >= 1.4
    finally:
        svc.stop()


def _from_127_0_0_2(url: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5) as c:
        return c.get(url)


def test_untrusted_callers_are_denied_without_bind_all(start_sim: StartSim) -> None:
    svc = start_sim("--trusted-networks", "127.0.0.1/32", "--port", "18621")
    r = _from_127_0_0_2(svc.url + "/webui/api/service?method=get_version")
    assert r.status_code == 403
    assert wait_for(lambda: "deny access" in svc.log(), 3)
    # a trusted caller on the same server is served
    assert httpx.get(svc.url + "/webui/api/service?method=get_version").status_code == 200


def test_bind_all_serves_everyone(start_sim: StartSim) -> None:
    svc = start_sim("--trusted-networks", "127.0.0.1/32", "--bind-all")
    assert _from_127_0_0_2(svc.url + "/webui/api/service?method=get_version").status_code == 200


def test_default_trusts_all_of_loopback(start_sim: StartSim) -> None:
    svc = start_sim()
    assert _from_127_0_0_2(svc.url + "/webui/api/service?method=get_version").status_code == 200


def test_sigterm_exits_cleanly_while_streaming(start_sim: StartSim) -> None:
    svc = start_sim()
    reader = Reader(str(start_json(svc.url, "id=term")["playback_url"]))
    assert wait_for(lambda: reader.total > 100_000)
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=10) == 0
    assert reader.done.wait(5)
    assert "Traceback" not in svc.log()


def test_media_clips_without_clip_dir_is_refused() -> None:
    out = subprocess.run(
        [EXE, "--http-port", str(procs.free_port()), "--media", "clips", "--timing", "fast"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode != 0
    assert "--clip-dir" in out.stderr


def test_auto_media_with_empty_clip_dir_is_synthetic(start_sim: StartSim, tmp_path: Path) -> None:
    svc = start_sim("--clip-dir", str(tmp_path))
    reader = Reader(str(start_json(svc.url, "id=auto")["playback_url"]))
    assert wait_for(lambda: reader.total > 100_000)
    reader.stop()
    assert reader.data[0] == 0x47


@pytest.mark.parametrize("bad", [["--timing", "slowish"], ["--bitrate", "12"], ["--nope"]])
def test_bad_options_exit_with_an_error(bad: list[str]) -> None:
    out = subprocess.run([EXE, *bad], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2
