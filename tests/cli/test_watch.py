"""``acefleet watch`` against central's real WebSocket feed (/v1/live/ws)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, VIEWER_KEY, Agent, event, send_events
from tests.cli.conftest import Cli, Fleet, service_client
from tests.support import procs


def test_watch_prints_the_snapshot(cli: Cli, fleet: Fleet) -> None:
    r = cli(*fleet.as_viewer(), "watch", "--count", "1")
    assert (r.code, r.err) == (0, "")
    (line,) = r.out.splitlines()
    stamp, text = line.split(" ", 1)
    assert len(stamp) == 8  # HH:MM:SS
    assert text.startswith("snapshot v")
    assert text.endswith(": 1 hosts (1 live), 2 engines (2 placeable), 1 streams, 3 viewers")


def test_watch_json_is_the_feeds_frames(cli: Cli, fleet: Fleet) -> None:
    r = cli(*fleet.as_viewer(), "--json", "watch", "--count", "1")
    frame = json.loads(r.out)
    assert frame["type"] == "snapshot"
    assert [h["name"] for h in frame["fleet"]["hosts"]] == ["edge0"]
    assert [s["stream_id"] for s in frame["fleet"]["streams"]] == ["s-1"]


class Lines:
    """A child's output, line by line, read in a thread so a test can wait with a bound."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        assert stream is not None
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)

    def until(self, needle: str) -> list[str]:
        seen: list[str] = []
        while True:
            try:
                line = self.queue.get(timeout=15)
            except queue.Empty:
                raise AssertionError(f"no line with {needle!r}; saw {seen}") from None
            seen.append(line.rstrip("\n"))
            if needle in line:
                return seen


@dataclass
class Watching:
    proc: subprocess.Popen[str]
    out: Lines
    err: Lines


@pytest.fixture
def spawn_watch(tmp_path: Path) -> Iterator[Callable[[str], Watching]]:
    """``acefleet watch`` as the installed console script, its URL and key in the environment."""
    started: list[subprocess.Popen[str]] = []

    def spawn(url: str) -> Watching:
        exe = Path(sys.executable).parent / "acefleet"
        env = {**os.environ, "ACEFLEET_URL": url, "ACEFLEET_API_KEY": VIEWER_KEY}
        env["HOME"] = str(tmp_path)
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(
            [exe, "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        started.append(proc)
        return Watching(proc, Lines(proc.stdout), Lines(proc.stderr))

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_watch_follows_changes_until_ctrl_c(
    cli: Cli, fleet: Fleet, spawn_watch: Callable[[str], Watching]
) -> None:
    w = spawn_watch(fleet.url)
    w.out.until("snapshot v")
    Agent("edge1", 1).beat(fleet.service)  # a new host with a new engine
    seen = w.out.until("+ host edge1")
    seen += w.out.until("= 2 hosts (2 live)")
    new_engine = "+ engine edge1-eng0 health=healthy load=0 placeable=yes draining=no"
    assert any(line.endswith(new_engine) for line in seen), seen
    assert cli("--url", fleet.url, "--api-key", OPERATOR_KEY, "drain", "host", "edge0").code == 0
    assert w.out.until("~ host edge0 ")[-1].endswith("draining no→yes")
    send_events(fleet.service, "edge0", event("stream_ended", "s-1", reason="idle"))
    w.out.until("- stream s-1")
    w.proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert w.proc.wait(10) == 0
    assert w.err.queue.empty()


def test_watch_reconnects_when_central_restarts(
    start_central: StartCentral, spawn_watch: Callable[[str], Watching]
) -> None:
    live = {"stale_after_s": "60", "lost_after_s": "120"}  # live while the watcher starts
    first = start_central(**live)
    with service_client(first) as service:
        Agent("edge0", 1).beat(service)
    w = spawn_watch(first.url)
    assert w.out.until("snapshot v")[-1].endswith(
        ": 1 hosts (1 live), 1 engines (1 placeable), 0 streams, 0 viewers"
    )
    first.stop()
    lost = w.err.until("; reconnecting")[-1]
    assert lost.startswith("acefleet: central closed the live feed (")
    again = start_central(port=first.port, **live)
    # The restarted central's versions are new: the resume gets a snapshot, of an empty fleet.
    assert w.out.until("snapshot v")[-1].endswith(
        ": 0 hosts (0 live), 0 engines (0 placeable), 0 streams, 0 viewers"
    )
    with service_client(again) as service:
        Agent("edge0", 1).beat(service)
    w.out.until("+ host edge0")
    w.proc.send_signal(signal.SIGINT)
    assert w.proc.wait(10) == 0


def test_watch_with_a_wrong_key(cli: Cli, fleet: Fleet) -> None:
    r = cli("--url", fleet.url, "--api-key", "not-a-key-central-knows", "watch")
    assert r.code == 4
    assert r.err == "acefleet: central closed the live feed (4401): unknown API key\n"
    assert "not-a-key-central-knows" not in r.out + r.err  # the key is never printed


def test_watch_without_a_key(cli: Cli, fleet: Fleet) -> None:
    r = cli("--url", fleet.url, "watch")
    assert r.code == 4
    assert r.err.startswith("acefleet: watch needs an API key")


def test_watch_over_the_connection_limit(cli: Cli, start_central: StartCentral) -> None:
    svc = start_central(live_ws_max_per_key="1")
    url = svc.url.replace("http://", "ws://") + "/v1/live/ws"
    with connect(url, additional_headers={"X-API-Key": VIEWER_KEY}) as first:
        assert json.loads(first.recv(timeout=10))["type"] == "snapshot"
        r = cli("--url", svc.url, "--api-key", VIEWER_KEY, "watch")
    assert r.code == 5
    assert r.err.startswith("acefleet: central closed the live feed (4429): too many live ")
    assert r.err.endswith("; retry later\n")


def test_watch_with_central_unreachable(cli: Cli) -> None:
    port = procs.free_port()
    r = cli("--url", f"http://127.0.0.1:{port}", "--api-key", VIEWER_KEY, "watch")
    assert r.code == 3
    assert r.err.startswith(f"acefleet: central unreachable at ws://127.0.0.1:{port}/v1/live/ws")


@pytest.mark.parametrize(
    ("code", "reason", "exit_code", "message"),
    [
        (4403, "role service may not", 4, "(4403): role service may not"),
        (4000, "", 1, "(4000): this client fell too far behind the feed"),
        (1001, "", 3, "(1001): central closed the feed"),
    ],
)
def test_close_codes_central_cannot_be_made_to_send_here(
    cli: Cli, code: int, reason: str, exit_code: int, message: str
) -> None:
    """Every reader role may watch a real central and a loopback client keeps up with it, so
    these closes come from a small server that speaks the feed's contract."""

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        assert ws.request.headers["X-API-Key"] == VIEWER_KEY
        ws.send(json.dumps({"type": "snapshot", "version": 7, "fleet": FLEET}))
        ws.send(json.dumps({"type": "ping", "at": "2026-01-01T00:00:00Z"}))
        ws.close(code, reason)

    port = procs.free_port()
    with serve(handler, "127.0.0.1", port) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        r = cli("--url", url, "--api-key", VIEWER_KEY, "watch", "--no-reconnect")
        server.shutdown()
    assert r.code == exit_code
    assert r.out.endswith(
        "snapshot v7: 0 hosts (0 live), 0 engines (0 placeable), 0 streams, 0 viewers\n"
    )
    assert r.err == f"acefleet: central closed the live feed {message}\n"


FLEET = {
    "summary": {"hosts": {}, "engines": 0, "engines_placeable": 0, "streams": 0, "viewers": 0},
    "hosts": [],
    "engines": [],
    "streams": [],
}


def test_a_lost_feed_is_resumed_from_the_last_version(cli: Cli) -> None:
    """The second connection sends ``resume`` with the version seen; the delta it gets applies to
    the view kept from the first (a small server: a real central answers a resume across its own
    restart with a snapshot, as the restart test shows)."""
    resumes: list[object] = []

    def handler(ws: ServerConnection) -> None:
        if not resumes:
            resumes.append(None)
            ws.send(json.dumps({"type": "snapshot", "version": 7, "fleet": FLEET}))
            ws.close(1012, "service restart")
            return
        resumes.append(json.loads(ws.recv(timeout=5)))
        host = {
            "name": "edge5",
            "status": "live",
            "draining": False,
            "engines": 1,
            "engines_healthy": 1,
            "streams": 0,
        }
        delta = {
            "type": "delta",
            "version": 8,
            "summary": FLEET["summary"],
            "upsert": {"hosts": [host], "engines": [], "streams": []},
            "remove": {"hosts": [], "engines": [], "streams": []},
        }
        ws.send(json.dumps(delta))
        ws.close(4403, "enough")  # ends the run: a refusal is not retried

    port = procs.free_port()
    with serve(handler, "127.0.0.1", port) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        r = cli("--url", f"http://127.0.0.1:{port}", "--api-key", VIEWER_KEY, "watch")
        server.shutdown()
    assert resumes == [None, {"type": "resume", "version": 7}]
    assert [line.split(" ", 1)[1] for line in r.out.splitlines()] == [
        "snapshot v7: 0 hosts (0 live), 0 engines (0 placeable), 0 streams, 0 viewers",
        "+ host edge5 status=live draining=no engines=1 engines_healthy=1 streams=0",
    ]
    assert r.err.splitlines() == [
        "acefleet: central closed the live feed (1012): service restart; reconnecting",
        "acefleet: central closed the live feed (4403): enough",
    ]
    assert r.code == 4
