"""``acefleet watch`` against central's real WebSocket feed (/v1/live/ws)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, VIEWER_KEY, Agent, event, send_events
from tests.cli.conftest import Cli, Fleet
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
    """A child's stdout, line by line, read in a thread so a test can wait with a bound."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
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


@pytest.fixture
def watching(fleet: Fleet, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    exe = Path(sys.executable).parent / "acefleet"
    env = {**os.environ, "ACEFLEET_URL": fleet.url, "ACEFLEET_API_KEY": VIEWER_KEY}
    env["HOME"] = str(tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [exe, "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    yield proc, Lines(proc)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_watch_follows_changes_until_ctrl_c(
    cli: Cli, fleet: Fleet, watching: tuple[subprocess.Popen[str], Lines]
) -> None:
    proc, lines = watching
    lines.until("snapshot v")
    Agent("edge1", 1).beat(fleet.service)  # a new host with a new engine
    seen = lines.until("+ host edge1")
    seen += lines.until("= 2 hosts (2 live)")
    assert any(
        line.endswith("+ engine edge1-eng0 health=healthy load=0 placeable=yes draining=no")
        for line in seen
    ), seen
    assert cli("--url", fleet.url, "--api-key", OPERATOR_KEY, "drain", "host", "edge0").code == 0
    assert lines.until("~ host edge0 ")[-1].endswith("draining no→yes")
    send_events(fleet.service, "edge0", event("stream_ended", "s-1", reason="idle"))
    lines.until("- stream s-1")
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(10) == 0
    assert proc.stderr is not None
    assert proc.stderr.read() == ""


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
        r = cli("--url", f"http://127.0.0.1:{port}", "--api-key", VIEWER_KEY, "watch")
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
