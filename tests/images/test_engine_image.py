"""acefleet/engine-sim as acefleet-agent runs it: a container in the real dockerd, its HTTP API
published on a loopback port, started with the image's own default command."""

from __future__ import annotations

import time

import httpx
import pytest

from acefleet import mpegts
from tests.images.conftest import Engine, StartEngine, docker

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_available")]

HEALTHCHECK = "/usr/local/lib/acefleet/healthcheck.py"
CONTENT_ID = "0123456789abcdef0123456789abcdef01234567"
# The fast profile ends a session with no reader after 2 s; on a loaded machine the redirect from
# getstream to the playback URL can take longer than that, so playback tests allow 30 s.
PATIENT = "ACEFLEET_SIM_IDLE_TIMEOUT=30"


def test_answers_get_version_and_get_status(start_engine: StartEngine) -> None:
    engine = start_engine()

    version = httpx.get(engine.url + "/webui/api/service?method=get_version", timeout=5).json()
    assert version["error"] is None
    assert version["result"]["version"]

    status = httpx.get(engine.url + "/server/api?api_version=3&method=get_status", timeout=5).json()
    assert status["error"] is None
    assert status["result"]["playlist_loaded"] is True


def read_ts(engine: Engine, want: int, timeout: float = 20) -> bytes:
    """Play CONTENT_ID through the published port (getstream redirects to the playback URL)."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as client,
        client.stream("GET", engine.url + f"/ace/getstream?id={CONTENT_ID}&pid=images") as r,
    ):
        assert r.status_code == 200, r.read()
        for chunk in r.iter_bytes():
            buf += chunk
            if len(buf) >= want or time.monotonic() > deadline:
                break
    return bytes(buf)


def test_plays_mpegts_through_the_published_port(start_engine: StartEngine) -> None:
    engine = start_engine(PATIENT)
    data = read_ts(engine, want=200 * mpegts.PACKET_SIZE)

    assert len(data) >= 200 * mpegts.PACKET_SIZE
    start = mpegts.find_sync(data)
    assert start == 0, f"stream does not start on a TS packet (sync found at {start})"
    usable = mpegts.packet_floor(len(data))
    assert all(data[i] == mpegts.SYNC_BYTE for i in range(0, usable, mpegts.PACKET_SIZE)), (
        "lost TS packet alignment"
    )


def test_plays_the_real_video_clips_baked_into_the_image(start_engine: StartEngine) -> None:
    engine = start_engine(PATIENT)
    env = engine.inspect()["Config"]
    assert isinstance(env, dict)
    assert "ACEFLEET_SIM_CLIP_DIR=/usr/share/acefleet/clips" in env["Env"]
    clips = docker("exec", engine.container, "ls", "/usr/share/acefleet/clips").split()
    assert any(name.endswith(".ts") for name in clips), clips

    # make-clips.sh names each clip's service "acefleet CH n" in its SDT; synthetic TS has none.
    data = read_ts(engine, want=2_000_000)
    assert b"acefleet CH" in data


def test_healthcheck_turns_healthy(start_engine: StartEngine) -> None:
    engine = start_engine()
    config = engine.inspect()["Config"]
    assert isinstance(config, dict)
    assert "get_version" in docker(
        "exec", engine.container, "cat", "/usr/local/lib/acefleet/healthcheck.py"
    )
    assert config["Healthcheck"]["Test"][0] == "CMD"

    # The first check runs one interval (5 s) after the start; allow a loaded machine plenty.
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        state = engine.inspect()["State"]
        assert isinstance(state, dict)
        status = state["Health"]["Status"]
        if status == "healthy":
            break
        assert status == "starting", state["Health"]
        time.sleep(1)
    assert status == "healthy", engine.inspect()["State"]


def test_healthcheck_reports_a_dead_engine(start_engine: StartEngine) -> None:
    engine = start_engine()
    # The check itself, against a port nothing listens on: must fail, not pass vacuously.
    out = docker(
        "exec", engine.container,
        "sh", "-c", "/usr/bin/python3 /usr/local/lib/acefleet/healthcheck.py 1; echo rc=$?",
    )  # fmt: skip
    assert "rc=1" in out


def test_healthcheck_follows_the_port_the_agent_chose(start_engine: StartEngine) -> None:
    # acefleet-agent runs engines as `acefleet-engine-sim --http-port N ...`, not on 6878.
    engine = start_engine(command=["acefleet-engine-sim", "--http-port", "7001", "--bind-all"])
    out = docker("exec", engine.container, "/usr/bin/python3", HEALTHCHECK)
    assert "live on port 7001" in out


def test_runs_as_a_non_root_user(start_engine: StartEngine) -> None:
    engine = start_engine()
    config = engine.inspect()["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "acefleet"
    uid = docker("exec", engine.container, "id", "-u").strip()
    assert uid != "0"
    # The engine process itself (PID 1), not only a shell exec'd into the container.
    status = docker("exec", engine.container, "cat", "/proc/1/status")
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert "0" not in uids, status
