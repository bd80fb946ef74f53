"""Session rules: one session per content, replacement, one reader, automatic end."""

from __future__ import annotations

import threading
import time

import httpx

from tests.simulator.conftest import StartSim, check_ts, live, sessions, start_json, wait_for
from tests.support.procs import Service


def _reader(url: str, sink: bytearray, done: threading.Event, limit: float = 8) -> None:
    """Read a playback URL until the server ends it (or ``limit`` seconds pass)."""
    t0 = time.monotonic()
    try:
        with (
            httpx.Client(timeout=10, follow_redirects=True) as c,
            c.stream("GET", url) as r,
        ):
            for part in r.iter_raw():
                sink += part
                if time.monotonic() - t0 > limit:
                    break
    except httpx.HTTPError:
        pass
    finally:
        done.set()


def test_new_pid_replaces_session_and_ends_its_reads(sim: Service) -> None:
    a = start_json(sim.url, "id=swap&pid=a")
    got = bytearray()
    done = threading.Event()
    t = threading.Thread(target=_reader, args=(str(a["playback_url"]), got, done))
    t.start()
    assert wait_for(lambda: len(got) > 100_000)
    b = start_json(sim.url, "id=swap&pid=b")
    assert b["playback_session_id"] != a["playback_session_id"]
    assert b["infohash"] == a["infohash"]
    assert done.wait(5), "the replaced session's reader kept streaming"
    t.join(5)
    # the old session's URLs are dead, the new one is the only live session
    assert httpx.get(str(a["playback_url"]), timeout=5).status_code == 403
    snap = sessions(sim.url)
    assert snap["sessions_replaced_total"] == 1
    assert snap["sessions_started_total"] == 2
    [s] = live(sim.url)
    assert s["pid"] == "b"
    assert s["playback_session_id"] == b["playback_session_id"]


def test_same_pid_gets_the_same_session(sim: Service) -> None:
    a = start_json(sim.url, "id=keep&pid=p")
    b = start_json(sim.url, "id=keep&pid=p")
    assert a["playback_session_id"] == b["playback_session_id"]
    assert sessions(sim.url)["sessions_replaced_total"] == 0


def test_different_contents_have_separate_sessions(sim: Service) -> None:
    start_json(sim.url, "id=one&pid=p")
    start_json(sim.url, "id=two&pid=p")
    assert len(live(sim.url)) == 2


def test_second_reader_corrupts_both_streams(sim: Service) -> None:
    url = str(start_json(sim.url, "id=tworeaders")["playback_url"])
    first, second = bytearray(), bytearray()
    d1, d2 = threading.Event(), threading.Event()
    t1 = threading.Thread(target=_reader, args=(url, first, d1, 4))
    t1.start()
    assert wait_for(lambda: len(first) > 300_000)
    clean = len(first) - len(first) % 188
    assert check_ts(first[:clean], whole=False).cc_errors == 0  # alone, the stream is clean
    t2 = threading.Thread(target=_reader, args=(url, second, d2, 2.5))
    t2.start()
    assert wait_for(lambda: len(second) > 100_000)
    assert wait_for(lambda: any(s["readers"] == 2 for s in live(sim.url)), 3)
    t1.join(10)
    t2.join(10)
    after = first[clean:]
    assert check_ts(after[: len(after) - len(after) % 188], whole=False).cc_errors > 0
    assert check_ts(second[: len(second) - len(second) % 188], whole=False).cc_errors > 0


def test_session_ends_some_time_after_reader_leaves(start_sim: StartSim) -> None:
    svc = start_sim("--idle-timeout", "0.8")
    url = str(start_json(svc.url, "id=leave")["playback_url"])
    got = bytearray()
    done = threading.Event()
    t = threading.Thread(target=_reader, args=(url, got, done, 2.0))
    t.start()
    time.sleep(1.5)
    # reading for longer than the idle timeout keeps the session alive
    assert [s["state"] for s in live(svc.url)] == ["dl"]
    t.join(10)
    left = time.monotonic()
    assert wait_for(lambda: live(svc.url) == [], 5)
    assert time.monotonic() - left >= 0.5
    assert httpx.get(url, timeout=5).status_code == 403


def test_session_nobody_reads_ends_too(start_sim: StartSim) -> None:
    svc = start_sim("--idle-timeout", "0.5")
    start_json(svc.url, "id=unread")
    assert len(live(svc.url)) == 1
    assert wait_for(lambda: live(svc.url) == [], 5)
    assert sessions(svc.url)["sessions_ended_total"] == 1


def test_a_player_held_in_prebuffer_keeps_the_session(start_sim: StartSim) -> None:
    """A prebuffer longer than the idle timeout: the waiting player is a reader, so the session
    is not ended under it (it got 403 before, which a proxy counts as an engine fault)."""
    svc = start_sim("--idle-timeout", "0.4", "--prebuffer", "1.5")
    url = str(start_json(svc.url, "id=waited")["playback_url"])
    with httpx.Client(timeout=10, follow_redirects=True) as c, c.stream("GET", url) as r:
        assert r.status_code == 200
        got = next(r.iter_raw())
        assert got[:1] == b"\x47"
        assert sessions(svc.url)["sessions_ended_total"] == 0


def test_sim_sessions_describes_each_live_session(sim: Service) -> None:
    resp = start_json(sim.url, "id=observed&pid=obs")
    url = str(resp["playback_url"])
    got = bytearray()
    done = threading.Event()
    t = threading.Thread(target=_reader, args=(url, got, done, 1.0))
    t.start()
    assert wait_for(lambda: len(got) > 50_000)
    [s] = live(sim.url)
    assert s["infohash"] == resp["infohash"]
    assert s["content_id"] == "observed"
    assert s["pid"] == "obs"
    assert s["playback_session_id"] == resp["playback_session_id"]
    assert s["state"] == "dl"
    assert s["readers"] == 1
    assert isinstance(s["bytes_sent"], int)
    assert s["bytes_sent"] > 0
    assert abs(float(s["started_at"]) - time.time()) < 30  # type: ignore[arg-type]
    t.join(10)


def test_ends_are_counted_by_reason_and_every_stop_call_is_counted(start_sim: StartSim) -> None:
    """A caller that abandons a start shows in ``idle`` ends, one that stops it in ``stopped``;
    a stop for a session already gone still counts as a stop call (a proxy's late stop)."""
    svc = start_sim("--idle-timeout", "0.5")
    stopped = start_json(svc.url, "id=stopme&pid=s")
    start_json(svc.url, "id=abandoned&pid=a")
    command = str(stopped["command_url"])
    for _ in range(2):  # the second stop finds the session gone
        httpx.get(command, params={"method": "stop"}, timeout=5)
    assert wait_for(lambda: live(svc.url) == [], 5)
    snap = sessions(svc.url)
    assert snap["sessions_ended_by_reason"] == {"stopped": 1, "idle": 1}
    assert snap["stop_calls_total"] == 2
