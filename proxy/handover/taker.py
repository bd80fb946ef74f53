"""The new side of a hitless reload: say hello, receive the state, commit, rebuild.

The commit ("taken") goes out before any I/O on a received socket, and the old process exits
when it reads it; until then a refusal (:class:`~proxy.handover.state.UnknownFormat`) or a crash
leaves the old process serving as if nothing happened. systemd learns the new main pid before
the old one exits (``MAINPID``), then ``READY=1`` once everything is rebuilt.

Rebuilt per channel: its keys, buffer (bytes with their absolute offsets, keyframes, PAT/PMT
copies), pending partial packets, the upstream playback socket (all body, see upstream.py) with
its placement, engine session and stream record (same ``stream_id``), and its viewers at their
cursors (``lead`` first). A channel that was still starting is placed again, its viewers wait.
HLS players keep their sessions and numbering; their segments are cut again from the carried
buffer, so a player sees one discontinuity (as after a merge, see hls/feed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from acefleet import logs
from proxy.channel import Channel
from proxy.handover.framing import receive_message, send_message
from proxy.handover.notify import sd_notify
from proxy.handover.state import (
    READABLE,
    UnknownFormat,
    decode,
    placement_of,
    record_of,
    session_of,
)
from proxy.hls.sessions import HlsSession
from proxy.server import ClientProtocol
from proxy.tls_server import listen_tls
from proxy.upstream import Playback
from proxy.viewer import Viewer

if TYPE_CHECKING:
    from proxy.cli import Running

log = logs.get(__name__)


class Refused(Exception):
    """This process will not take over (it told the old one, which keeps serving)."""


async def take_over(running: Running, fd: int) -> dict[str, int]:
    """Take over from the process at the other end of ``fd``; returns counts for the log.
    Raises :class:`Refused` (or anything else) when it did not commit."""
    sock = socket.socket(fileno=fd)
    sock.settimeout(running.app.settings.handover_timeout_s)
    # the first HTTP call of a process imports half of httpx's stack (~60 ms): let the engine
    # probes' first round make it now, not in the first loop iteration after the pause
    if running.static is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running.static.probe_once(), running.static.probe_timeout_s)
    # no collector pass during the pause: collect now, keep everything built so far out of
    # later passes, and hold the collector off until the rebuild is done
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        send_message(sock, {"kind": "hello", "pid": os.getpid(), "formats": list(READABLE)})
        # receive, decide and commit blocking this loop (it serves nothing yet; the old process
        # sends right after our hello): the old process is paused from the moment it sends, and
        # a hop through a thread and back costs that pause milliseconds on a loaded machine
        state, blobs, fds, received = _receive_and_commit(sock)
    except BaseException:
        gc.enable()
        raise
    finally:
        sock.close()
    # committed: the old process is exiting; from here on these sockets are ours alone
    try:
        counts = await Rebuild(running, blobs, fds).run(state)
    finally:
        gc.enable()
    counts["rebuild_ms"] = round((time.perf_counter() - received) * 1000)
    sd_notify("READY=1")
    return counts


def _receive_and_commit(
    sock: socket.socket,
) -> tuple[dict[str, Any], list[bytes], list[int], float]:
    doc, blobs, fds = receive_message(sock)
    received = time.perf_counter()
    try:
        state = decode(doc)
    except UnknownFormat as exc:
        send_message(sock, {"kind": "refused", "error": str(exc)})
        for unused in fds:
            os.close(unused)
        raise Refused(str(exc)) from None
    sd_notify(f"MAINPID={os.getpid()}")
    send_message(sock, {"kind": "taken", "pid": os.getpid()})
    return state, blobs, fds, received


class Rebuild:
    def __init__(self, running: Running, blobs: list[bytes], fds: list[int]) -> None:
        self.running = running
        self.app = running.app
        self.edge = running.app.edge
        self.blobs = blobs
        self.fds = fds
        self.used: set[int] = set()
        self.conns: dict[int, ClientProtocol] = {}
        self.loop = asyncio.get_running_loop()

    def sock(self, index: int) -> socket.socket:
        self.used.add(index)
        return socket.socket(fileno=self.fds[index])

    async def connection(self, index: int) -> ClientProtocol:
        _, conn = await self.loop.connect_accepted_socket(
            lambda: ClientProtocol(self.app), sock=self.sock(index)
        )
        return conn

    async def run(self, state: dict[str, Any]) -> dict[str, int]:
        counts = {"channels": 0, "viewers": 0, "connections": 0}
        for key, value in state["learned"]:
            self.edge.learned[key] = value
        # every client socket at once: one loop iteration for all, not one each
        clients = [v["fd"] for ch in state["channels"] for v in ch["viewers"]]
        idle = [c["fd"] for c in state.get("connections", ())]
        t0 = time.perf_counter()
        made = await asyncio.gather(*(self.connection(i) for i in clients + idle))
        self.conns = dict(zip(clients + idle, made, strict=True))
        t1 = time.perf_counter()
        playbacks: list[Awaitable[Any]] = []
        for ch in state["channels"]:
            counts["viewers"] += self.channel(ch, playbacks)
            counts["channels"] += 1
        counts["connections"] = len(idle)
        t2 = time.perf_counter()
        await asyncio.gather(*playbacks)
        t3 = time.perf_counter()
        counts["sockets_ms"] = round((t1 - t0) * 1000)
        counts["channels_ms"] = round((t2 - t1) * 1000)
        counts["upstreams_ms"] = round((t3 - t2) * 1000)
        servers = []
        for index in state["listen"]:
            servers.append(
                await self.loop.create_server(
                    lambda: ClientProtocol(self.app), sock=self.sock(index), backlog=1024
                )
            )
        settings = self.app.settings
        for index in state.get("listen_tls", ()):
            if settings.tls_port:  # with this process's certificate (a reload renews it)
                self.running.tls_server = await listen_tls(self.app, sock=self.sock(index))
        if settings.tls_port and self.running.tls_server is None:  # TLS newly switched on
            self.running.tls_server = await listen_tls(self.app)
        for i, fd in enumerate(self.fds):
            if i not in self.used:  # a viewer the format could not carry: it is cut
                os.close(fd)
        self.edge.metrics.upstreams.set(len(self.edge.live_channels()))
        self.running.go_live(servers[0] if servers else None)
        return counts

    def channel(self, ch: dict[str, Any], playbacks: list[Awaitable[Any]]) -> int:
        """Rebuild one channel; its upstream socket's connection goes into ``playbacks``."""
        edge = self.edge
        selector = (ch["selector"][0], ch["selector"][1])
        if ch["state"] != "live":
            for v in ch["viewers"]:
                conn = self.conns[v["fd"]]
                if conn.closing or conn.transport is None:
                    continue
                viewer = Viewer(conn.transport, v["address"])
                conn.viewer = viewer
                conn._disarm()
                edge.attach(viewer, ch["key"], selector, ch["params"], v["player"])
            return len(ch["viewers"])
        upstream = ch["upstream"]
        channel = Channel(
            edge.channel_context, ch["key"], selector, ch["params"], start=upstream is None
        )
        for key in ch["keys"]:
            edge.channels[key] = channel
        channel.keys = set(ch["keys"])
        channel.since = datetime.fromisoformat(ch["since"])
        channel.bytes_out = ch["bytes_out"]
        channel.skips = ch["skips"]
        self.restore_buffer(channel, ch["buffer"])
        channel.pending = bytearray(self.blobs[ch["pending"]])
        live_at = time.monotonic() - float(ch["live_age_s"])
        if upstream is not None:
            placement = placement_of(upstream["placement"])
            playback = Playback(lambda data: None, adopted=True)
            channel.adopt_upstream(
                placement,
                session_of(upstream["session"]),
                playback,
                record_of(upstream["record"], placement),
                live_at,
            )
            self.running.adopted(placement)
            sock = self.sock(upstream["fd"])
            playbacks.append(self.loop.connect_accepted_socket(lambda: playback, sock=sock))
        else:  # between two upstreams (a failover was under way): the channel places again
            channel.state, channel.live_at = "live", live_at
        for v in ch["viewers"]:
            conn = self.conns[v["fd"]]
            if conn.closing or conn.transport is None:
                continue
            viewer = Viewer(conn.transport, v["address"])
            viewer.cursor = v["cursor"]
            viewer.bytes_sent = v["bytes_sent"]
            viewer.run_start = v["run_start"]
            conn.viewer = viewer
            conn._disarm()
            channel.adopt_viewer(viewer, b"" if v["lead"] is None else self.blobs[v["lead"]])
            if v["player"] is not None:
                edge.players.add(v["player"], viewer)
        for h in ch.get("hls", ()):
            session = HlsSession(h["sid"], ch["key"], h["selector_query"], h["address"])
            session.last_seq, session.last_disc = h["last_seq"], h["last_disc"]
            edge.hls_sessions.add(session)
            channel.attach_hls(session)  # continues its numbers after a discontinuity
            if h["player"] is not None:
                edge.players.add(h["player"], session)
        if not channel.viewer_count:  # kept for its grace, as when its last viewer left
            channel.grace_handle = self.loop.call_later(
                edge.settings.grace_s, channel.close, "idle"
            )
        return len(ch["viewers"])

    def restore_buffer(self, channel: Channel, b: dict[str, Any]) -> None:
        buf = channel.buffer
        offset = b["start"]
        buf.tail = offset
        for index in b["chunks"]:
            chunk = self.blobs[index]
            buf.chunks.append(chunk)
            buf.starts.append(offset)
            offset += len(chunk)
        buf.head = offset
        buf.keyframes.extend(b["keyframes"])
        buf.tables = {int(k): self.blobs[i] for k, i in b["tables"].items()}
        buf.pat = None if b["pat"] is None else self.blobs[b["pat"]]
        buf.pmt = None if b["pmt"] is None else self.blobs[b["pmt"]]
        buf.pmt_pid = b["pmt_pid"]
        buf.video_pid = b["video_pid"]
