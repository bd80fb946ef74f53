"""Hitless reload (proxy/handover): a new proxy process takes every socket and channel over.

Real processes only: the simulator, ``acefleet-proxy`` started as a console script, the reload
asked with ``acefleet-proxy reload`` (the command systemd's ExecReload runs), raw client
sockets as viewers. Byte-exactness is checked on what every viewer received: one HTTP head,
then TS packets whose continuity counters never repeat or skip on any PID, and the bodies of a
channel's viewers agree wherever they overlap (so no viewer lost or got an extra byte that
the others did not).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.handover.state import UnknownFormat, decode
from tests.proxy.conftest import StartProxy
from tests.support import procs

PACKET = 188
HEAD_END = b"\r\n\r\n"


@dataclass
class TsViewer:
    """One raw-socket viewer: every byte it gets, and when each read arrived."""

    channel: str
    data: bytearray = field(default_factory=bytearray)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    closed: bool = False
    task: asyncio.Task[None] | None = None

    async def run(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /ace/getstream?id={self.channel} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        try:
            while True:
                chunk = await reader.read(256 * 1024)
                if not chunk:
                    self.closed = True  # the proxy closed it (a cancel from the test is not)
                    break
                self.arrivals.append((time.monotonic(), len(chunk)))
                self.data += chunk
        except ConnectionError:
            self.closed = True
        finally:
            writer.close()

    def body(self) -> bytes:
        head, sep, body = bytes(self.data).partition(HEAD_END)
        assert sep, "no response head"
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        return body

    def received_after(self, t: float) -> int:
        return sum(n for at, n in self.arrivals if at > t)

    def longest_gap(self, start: float, end: float) -> float:
        times = [at for at, _ in self.arrivals if start <= at <= end]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class StalledViewer(TsViewer):
    """A viewer that stops reading after its first bytes until ``go`` is set: the proxy holds
    its backlog in user space (up to the high-water mark), and a handover must resend that."""

    def __init__(self, channel: str) -> None:
        super().__init__(channel)
        self.go = asyncio.Event()

    async def run(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(
            sock, f"GET /ace/getstream?id={self.channel} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        )
        try:
            while True:
                if len(self.data) > 64 * 1024:
                    await self.go.wait()
                chunk = await loop.sock_recv(sock, 256 * 1024)
                if not chunk:
                    self.closed = True
                    break
                self.arrivals.append((time.monotonic(), len(chunk)))
                self.data += chunk
        except ConnectionError:
            self.closed = True
        finally:
            sock.close()


def check_continuity(body: bytes) -> None:
    """Every whole packet is aligned, and each PID's continuity counter goes up by exactly one
    per packet with payload (a lost or repeated packet breaks it)."""
    whole = len(body) - len(body) % PACKET
    last: dict[int, int] = {}
    for i in range(0, whole, PACKET):
        assert body[i] == 0x47, f"lost packet alignment at byte {i}"
        pid = ((body[i + 1] & 0x1F) << 8) | body[i + 2]
        if pid == 0x1FFF or not body[i + 3] & 0x10:  # null packets; no payload: no increment
            continue
        cc = body[i + 3] & 0x0F
        if pid in last:
            assert cc == (last[pid] + 1) % 16, f"PID {pid}: CC {last[pid]} then {cc} at byte {i}"
        last[pid] = cc


def check_agree(bodies: list[bytes]) -> None:
    """The bodies of one channel's viewers are slices of one stream: equal where they overlap."""
    longest = max(bodies, key=len)
    for body in bodies:
        probe = body[2 * PACKET : 2 * PACKET + 8 * PACKET]  # after the PAT/PMT prefix
        at = longest.find(probe)
        assert at >= 0, "a viewer's stream is not part of its channel's stream"
        offset = at - 2 * PACKET
        n = min(len(body), len(longest) - offset) - 2 * PACKET
        assert n > 0
        same = body[2 * PACKET : 2 * PACKET + n] == longest[at : at + n]
        assert same, "two viewers of one channel received different bytes"


def check_viewers(viewers: list[TsViewer]) -> None:
    by_channel: dict[str, list[bytes]] = {}
    for v in viewers:
        assert not v.closed, "a viewer was disconnected"
        body = v.body()
        assert b"HTTP/1.1" not in body[:4096], "headers sent twice"
        check_continuity(body)
        by_channel.setdefault(v.channel, []).append(body)
    for bodies in by_channel.values():
        check_agree(bodies)


def reload(socket_path: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run ``acefleet-proxy reload`` as systemd would; (exit status, its JSON line)."""
    done = subprocess.run(
        [str(procs.BIN / "acefleet-proxy"), "reload", *extra],
        env={**os.environ, "ACEFLEET_PROXY_HANDOVER_SOCKET": socket_path},
        capture_output=True,
        timeout=60,
    )
    lines = done.stdout.decode().strip().splitlines()
    assert lines, done.stderr.decode()
    return done.returncode, json.loads(lines[-1])


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive ``GET /livez`` on an open connection: the response head."""
    writer.write(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(HEAD_END), 10)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return head


def fetch(url: str) -> str:
    r = httpx.get(url, timeout=20)
    r.raise_for_status()
    return r.text


def hls_player(base: str, channel: str) -> str:
    """Start an HLS session the way a player does; the URL of its media playlist."""
    master = fetch(f"{base}/ace/manifest.m3u8?id={channel}")
    media = next(line for line in master.splitlines() if line and not line.startswith("#"))
    return f"{base}/ace/{media}"


def media_sequence(playlist: str) -> int:
    line = next(x for x in playlist.splitlines() if x.startswith("#EXT-X-MEDIA-SEQUENCE:"))
    return int(line.split(":")[1])


async def get_json(url: str) -> Any:
    return (await asyncio.to_thread(httpx.get, url, timeout=5)).json()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def stop_pid(pid: int) -> None:
    """Stop a process this test did not start directly (the reload's new proxy)."""
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 10
        while alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def control_dir() -> Iterator[str]:
    # a short path: a Unix socket's path is limited to 107 bytes
    path = tempfile.mkdtemp(prefix="hov", dir="/tmp")
    yield path
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)


@pytest.fixture
def successors() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        stop_pid(pid)


async def wait_until(predicate: Any, within: float = 20) -> None:
    end = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.05)


async def watch(port: int, channels: int, per_channel: int) -> list[TsViewer]:
    viewers = [TsViewer(f"{'ab' * 19}{c:02d}") for c in range(channels) for _ in range(per_channel)]
    for v in viewers:
        v.task = asyncio.create_task(v.run(port))
    end = time.monotonic() + 20
    while not all(len(v.data) > 64 * 1024 for v in viewers):
        assert time.monotonic() < end, "viewers did not start"
        await asyncio.sleep(0.05)
    return viewers


async def keep_watching(viewers: list[TsViewer], since: float, nbytes: int = 100_000) -> None:
    end = time.monotonic() + 10
    while not all(v.received_after(since) > nbytes for v in viewers):
        assert time.monotonic() < end, "viewers stopped receiving after the reload"
        await asyncio.sleep(0.05)


async def stop_watching(viewers: list[TsViewer]) -> None:
    for v in viewers:
        if v.task is not None:
            v.task.cancel()
    await asyncio.gather(*(v.task for v in viewers if v.task), return_exceptions=True)


async def test_reload_hands_50_viewers_on_5_channels_over_byte_exact(
    sim: procs.Service, start_proxy: StartProxy, control_dir: str, successors: list[int]
) -> None:
    sock = f"{control_dir}/control.sock"
    # small kernel send buffers: the proxy's transports hold bytes in user space at the
    # handover, which the new process must resend exactly (cursor - unsent bytes)
    proxy = start_proxy(
        f"127.0.0.1:{sim.port}@8",
        handover_socket=sock,
        viewer_sndbuf="8192",
        # the stalled viewer must not fall out of the buffer (a skip) however slow the reload
        buffer_bytes=str(64 * 1024 * 1024),
        hls_target_s="1",
        hls_max_segment_s="2",
    )
    viewers = await watch(proxy.port, channels=5, per_channel=10)
    # an HLS player keeps its session and numbering
    playlist_url = await asyncio.to_thread(hls_player, proxy.url, viewers[-1].channel)
    seq_before = media_sequence(await asyncio.to_thread(fetch, playlist_url))
    stalled = StalledViewer(viewers[0].channel)
    stalled.task = asyncio.create_task(stalled.run(proxy.port))
    await wait_until(lambda: len(stalled.data) > 64 * 1024)
    await asyncio.sleep(1.0)  # its backlog builds up in the proxy meanwhile
    # an idle keep-alive client is handed over too, and answered by the new process
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert (await ask(idle_r, idle_w)).startswith(b"HTTP/1.1 200")
    before = await get_json(proxy.url + "/ace/status")
    ids = {c["key"]: c["stream_id"] for c in before["channels"]}
    sessions = len((await get_json(sim.url + "/_sim/sessions"))["sessions"])

    at = time.monotonic()
    code, result = await asyncio.to_thread(reload, sock)
    if result.get("new_pid"):
        successors.append(result["new_pid"])
    assert code == 0, result
    assert result["ok"], result
    assert (result["viewers"], result["channels"]) == (51, 5), result
    assert result["old_pid"] == proxy.proc.pid != result["new_pid"]
    assert result["resent_bytes"] > 0, result  # the correction for unsent bytes was exercised
    assert proxy.proc.wait(timeout=10) == 0  # the old process exited, cleanly
    # at once: the discontinuity tag leaves the playlist's window a few segments later
    playlist = await asyncio.to_thread(fetch, playlist_url)

    stalled.go.set()
    viewers.append(stalled)
    await keep_watching(viewers, at)
    assert (await ask(idle_r, idle_w)).startswith(b"HTTP/1.1 200")
    idle_w.close()
    after = await get_json(proxy.url + "/ace/status")
    sessions_after = len((await get_json(sim.url + "/_sim/sessions"))["sessions"])
    await stop_watching(viewers)
    check_viewers(viewers)
    # the same upstream sessions continue: same stream ids, no new engine session
    assert {c["key"]: c["stream_id"] for c in after["channels"]} == ids
    assert sessions_after == sessions
    assert after["viewers"] == 51 + 1  # the HLS player counts (carried)
    assert media_sequence(playlist) > seq_before, playlist
    assert "#EXT-X-DISCONTINUITY\n" in playlist
    # the new process serves new viewers too (the listening socket was handed over)
    late = await watch(proxy.port, channels=1, per_channel=1)
    await stop_watching(late)
    check_viewers(late)

    # and it can itself be reloaded (the new process runs the control socket now)
    code, again = await asyncio.to_thread(reload, sock)
    if again.get("new_pid"):
        successors.append(again["new_pid"])
    assert code == 0, again
    assert again["old_pid"] == result["new_pid"], again


async def test_failed_takeovers_leave_the_old_process_serving(
    sim: procs.Service,
    start_proxy: StartProxy,
    control_dir: str,
    successors: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A successor that refuses the state (a format it does not know), then one that crashes
    (a bad config deployed): each time the old process keeps serving, byte-exact."""
    monkeypatch.setenv("ACEFLEET_HANDOVER_FORMAT", "99")  # an encoder from a future version
    sock = f"{control_dir}/control.sock"
    config = Path(control_dir) / "proxy.toml"
    config.write_text(f'handover_socket = "{sock}"\n')
    proxy = start_proxy(f"127.0.0.1:{sim.port}@8", args=("--config", str(config)))
    # a second instance configured with the same socket leaves the first one's alone
    start_proxy(f"127.0.0.1:{sim.port}@8", handover_socket=sock)
    viewers = await watch(proxy.port, channels=2, per_channel=3)
    at = time.monotonic()

    code, result = await asyncio.to_thread(reload, sock)
    assert code == 1, result
    assert result["old_pid"] == proxy.proc.pid
    assert not result["ok"]
    assert "format 99 is unknown" in result["error"]
    if result.get("new_pid"):
        successors.append(result["new_pid"])
        assert not alive(result["new_pid"]), "the refusing process did not exit"
    assert proxy.alive()

    config.write_text("no_such_option = 1\n")  # the new process dies reading it
    code, result = await asyncio.to_thread(reload, sock)
    if result.get("new_pid"):
        successors.append(result["new_pid"])
    assert code == 1, result
    assert not result["ok"]
    assert result["error"]
    assert proxy.alive()

    await keep_watching(viewers, at)
    await stop_watching(viewers)
    check_viewers(viewers)
    ready = await asyncio.to_thread(httpx.get, proxy.url + "/readyz")
    assert ready.status_code == 200


async def test_version_n_plus_1_takes_over_from_version_n(
    sim: procs.Service,
    start_proxy: StartProxy,
    control_dir: str,
    successors: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACEFLEET_HANDOVER_FORMAT", "1")  # the old process writes format 1
    # systemd's notify socket, played by the test: READY at start, then MAINPID of the new one
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(f"{control_dir}/notify.sock")
    notify.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", f"{control_dir}/notify.sock")
    sock = f"{control_dir}/control.sock"
    proxy = start_proxy(f"127.0.0.1:{sim.port}@8", handover_socket=sock)
    assert notify.recv(1024) == b"READY=1"
    viewers = await watch(proxy.port, channels=2, per_channel=3)
    at = time.monotonic()
    code, result = await asyncio.to_thread(reload, sock)
    if result.get("new_pid"):
        successors.append(result["new_pid"])
    assert code == 0, result
    assert result["viewers"] == 6, result
    assert proxy.proc.wait(timeout=10) == 0
    new_pid = result["new_pid"]
    assert notify.recv(1024) == f"MAINPID={new_pid}".encode()  # before the old one exited
    assert notify.recv(1024) == b"READY=1"
    notify.close()
    await keep_watching(viewers, at)
    await stop_watching(viewers)
    check_viewers(viewers)


def test_reload_without_a_running_proxy_fails(control_dir: str) -> None:
    code, result = reload(f"{control_dir}/control.sock")
    assert code == 1
    assert not result["ok"]
    assert "control.sock" in result["error"]


def test_decoder_reads_format_1_and_refuses_unknown_ones() -> None:
    v1 = {
        "format": 1,
        "pid": 1,
        "listen": [0],
        "learned": [],
        "channels": [{"key": "k", "state": "live", "viewers": [{"fd": 1, "cursor": 5}]}],
    }
    doc = decode(v1)
    assert doc["connections"] == []
    assert doc["channels"][0]["viewers"][0] == {"fd": 1, "cursor": 5, "lead": None, "run_start": -1}
    with pytest.raises(UnknownFormat, match="format 3"):
        decode({**v1, "format": 3})
