"""The old side of a hitless reload: the control socket, the new process, the state it gets.

:class:`Giver` listens on ``handover_socket`` (mode 0600). A ``takeover`` request spawns the new
process (the same command line, so an upgraded venv runs the new code) and waits, serving as
usual, for its hello. Then, in one synchronous stretch with the event loop stopped (nothing is
read, accepted or written: the pause viewers see), it captures the state, sends it, and waits
for the answer: "taken" → answer the reload client and exit at once; anything else (a refusal,
the child died, the deadline) → kill the child if needed and go on serving, untouched.

What each viewer resumes at (:func:`viewer_doc`): its cursor minus what its transport still held
in user space (``get_write_buffer_size()``: those bytes die with this process). When that
reaches back past the stream bytes of its current run, the missing tail of what was written
before the run (response headers, or the PAT/PMT of a join or skip) is resent as ``lead``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import sys
import time
from bisect import bisect_right
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acefleet import logs
from proxy.channel import Channel
from proxy.handover import FORMAT_OVERRIDE_ENV, HANDOVER_FD_ENV
from proxy.handover.framing import receive_message, send_message
from proxy.handover.state import FORMAT, encode_v1, placement_doc, record_doc, session_doc
from proxy.responses import STREAM_HEADERS
from proxy.server import App
from proxy.tls_server import is_tls
from proxy.viewer import Viewer

if TYPE_CHECKING:
    from proxy.cli import Running

log = logs.get(__name__)

_REQUEST = b"takeover"
_REAP_S = 5.0


class Capture:
    """What one state message carries, as it is being built."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []
        self.fds: list[int] = []
        self.viewers = 0
        self.cut = 0
        self.unsent = 0  # bytes the old transports still held: the new process resends them

    def blob(self, data: bytes) -> int:
        self.blobs.append(data)
        return len(self.blobs) - 1

    def fd(self, transport: Any) -> int | None:
        if is_tls(transport):  # its TLS state cannot follow the socket (proxy/tls_server.py)
            return None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return None
        self.fds.append(sock.fileno())
        return len(self.fds) - 1


def viewer_doc(cap: Capture, channel: Channel, viewer: Viewer, player: int | None) -> Any:
    """The state of one started viewer, or None when it cannot resume byte-exact (cut)."""
    transport = viewer.transport
    unsent = transport.get_write_buffer_size()
    first = viewer.run_start < 0
    run_start = viewer.cursor - viewer.bytes_sent if first else viewer.run_start
    run = viewer.cursor - run_start
    lead: int | None = None
    if unsent <= run:
        cursor = viewer.cursor - unsent
    else:  # the socket has not even taken all of what preceded the run
        before = (STREAM_HEADERS if first else b"") + channel.buffer.start_prefix(run_start)
        missing = unsent - run
        if missing > len(before):
            return None
        lead = cap.blob(before[len(before) - missing :])
        cursor = run_start
    fd = cap.fd(transport)
    if fd is None:
        return None
    cap.unsent += unsent
    return {
        "fd": fd,
        "address": viewer.address,
        "cursor": cursor,
        "bytes_sent": viewer.bytes_sent - min(unsent, run),
        "run_start": viewer.run_start,
        "player": player,
        "lead": lead,
    }


def channel_doc(cap: Capture, app: App, channel: Channel, players: dict[int, int]) -> Any:
    base = {
        "key": channel.key,
        "keys": sorted(channel.keys),
        "selector": list(channel.selector),
        "params": channel.params,
        "since": channel.since.isoformat(),
    }
    buf = channel.buffer
    if channel.state != "live" or not buf.head:
        # still starting: its viewers wait in the new process, which places the channel again
        waiting = []
        for viewer in channel.viewers:
            fd = None if viewer.closed else cap.fd(viewer.transport)
            if fd is not None:
                waiting.append(
                    {"fd": fd, "address": viewer.address, "player": players.get(id(viewer))}
                )
        cap.viewers += len(waiting)
        return {**base, "state": "starting", "viewers": waiting}
    viewers = []
    for viewer in channel.viewers:
        if viewer.closed or not viewer.started:
            continue
        doc = viewer_doc(cap, channel, viewer, players.get(id(viewer)))
        if doc is None:
            cap.cut += 1
            log.warning("handover_viewer_cut", channel=channel.key, viewer=viewer.address)
            continue
        viewers.append(doc)
    cap.viewers += len(viewers)
    # HLS players: their sessions (numbering included) continue; the segments are cut again
    hls = [
        {
            "sid": session.sid,
            "selector_query": session.selector_query,
            "address": session.address,
            "last_seq": session.last_seq,
            "last_disc": session.last_disc,
            "player": players.get(id(session)),
        }
        for session in (channel.hls.sessions.values() if channel.hls is not None else ())
    ]
    # the buffer from the oldest byte a viewer still needs, and at least from where a new
    # viewer would join (every byte sent here lengthens the pause)
    lo = max(buf.join_point(app.settings.join_max_bytes), buf.tail)
    lo = min([lo, *(v["cursor"] for v in viewers if v["cursor"] >= buf.tail)])
    starts = list(buf.starts)
    i = max(bisect_right(starts, lo) - 1, 0)
    chunks = list(buf.chunks)[i:]
    start = starts[i] if chunks else buf.head
    keyframes = [k for k in buf.keyframes if k >= start]
    upstream = None
    pb = channel.playback
    if pb is not None and not pb.closed and channel.placement and channel.record:
        fd = cap.fd(pb.transport)
        if fd is not None:
            upstream = {
                "fd": fd,
                "placement": placement_doc(channel.placement),
                "session": session_doc(channel.session),
                "record": record_doc(channel.record),
            }
    return {
        **base,
        "state": "live",
        "live_age_s": max(time.monotonic() - channel.live_at, 0.0),
        "bytes_out": channel.bytes_out,
        "skips": channel.skips,
        "buffer": {
            "start": start,
            "chunks": [cap.blob(c) for c in chunks],
            "keyframes": keyframes,
            "tables": {str(k): cap.blob(buf.tables[k]) for k in keyframes if k in buf.tables},
            "pat": None if buf.pat is None else cap.blob(buf.pat),
            "pmt": None if buf.pmt is None else cap.blob(buf.pmt),
            "pmt_pid": buf.pmt_pid,
            "video_pid": buf.video_pid,
        },
        "pending": cap.blob(bytes(channel.pending)),
        "upstream": upstream,
        "viewers": viewers,
        "hls": hls,
    }


def capture(
    app: App,
    server: asyncio.AbstractServer | None,
    tls_server: asyncio.AbstractServer | None = None,
) -> tuple[dict[str, Any], Capture]:
    """Everything a successor needs, in the current format. Synchronous: nothing may change
    between this and the exit."""
    cap = Capture()
    edge = app.edge
    listen = []
    for sock in getattr(server, "sockets", None) or ():
        cap.fds.append(sock.fileno())
        listen.append(len(cap.fds) - 1)
    # the HTTPS listener (tls_port) goes over too; the successor serves it with its own context
    listen_tls = []
    for sock in getattr(tls_server, "sockets", None) or ():
        cap.fds.append(sock.fileno())
        listen_tls.append(len(cap.fds) - 1)
    # who started each stream with a token (player limits continue in the new process)
    players = {
        id(item): player
        for player, items in edge.players._by_player.items()  # read-only: no public view
        for item in items
    }
    channels = [channel_doc(cap, app, c, players) for c in edge.live_channels()]
    channels = [c for c in channels if c["state"] == "live" or c["viewers"]]
    connections = []
    for conn in app.connections:
        idle = (
            conn.viewer is None
            and not conn.closing
            and conn.deferred is None
            and not conn.queued
            and not conn.in_headers
            and conn.header_bytes == 0
            and conn.transport is not None
            and not conn.transport.get_write_buffer_size()
        )
        # a connection mid-request (or with an answer not yet sent) is closed by the exit
        if idle:
            fd = cap.fd(conn.transport)
            if fd is not None:
                connections.append({"fd": fd, "address": conn.peer})
    doc = {
        "format": FORMAT,
        "pid": os.getpid(),
        "listen": listen,
        "listen_tls": listen_tls,
        "learned": list(edge.learned.items()),
        "channels": channels,
        "connections": connections,
    }
    return doc, cap


def _answers(path: str) -> bool:
    """Some process listens on the Unix socket ``path`` (not a stale file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _encode(doc: dict[str, Any]) -> dict[str, Any]:
    wanted = os.environ.get(FORMAT_OVERRIDE_ENV, "")
    if wanted == "1":
        return encode_v1(doc)
    if wanted:
        return {**doc, "format": int(wanted)}
    return doc


class Giver:
    """The running proxy's side of ``acefleet-proxy reload``."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.settings = running.app.settings
        self.server: asyncio.AbstractServer | None = None
        self.busy = False

    async def start(self, *, successor: bool = False) -> None:
        """Listen on ``handover_socket``. ``successor``: this process took over from the one
        listening there (which is exiting), so the path is ours; otherwise a path another live
        proxy answers on is left alone (a second instance must not steal its reloads)."""
        path = self.settings.handover_socket
        if not path:
            return
        if not Path(path).parent.is_dir():
            log.warning("handover_socket_disabled", path=path, reason="no such directory")
            return
        if not successor and _answers(path):
            log.warning("handover_socket_disabled", path=path, reason="another proxy uses it")
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous process's (it exited, or handed over to us)
        self.server = await asyncio.start_unix_server(self._client, path)
        os.chmod(path, 0o600)
        log.info("handover_socket", path=path)

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.strip() != _REQUEST:
                result = self._result(False, error=f"unknown request {line.strip()[:40]!r}")
            elif self.busy:
                result = self._result(False, error="a reload is already running")
            else:
                self.busy = True
                try:
                    result = await self.takeover(writer)
                finally:
                    self.busy = False
            writer.write(json.dumps(result).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    def _result(self, ok: bool, **extra: Any) -> dict[str, Any]:
        return {
            "ok": ok,
            "old_pid": os.getpid(),
            "new_pid": None,
            "pause_ms": None,
            "viewers": None,
            "channels": None,
            "error": None,
            **extra,
        }

    async def takeover(self, client: asyncio.StreamWriter) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.settings.handover_timeout_s
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {**os.environ, HANDOVER_FD_ENV: str(theirs.fileno())}
        log.info("handover_spawning", argv=sys.orig_argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *sys.orig_argv, pass_fds=(theirs.fileno(),), env=env
            )
        except OSError as exc:
            ours.close()
            theirs.close()
            return self._result(False, error=f"cannot start the new process: {exc}")
        theirs.close()
        try:
            ours.settimeout(max(deadline - time.monotonic(), 0.1))
            hello, _, fds = await loop.run_in_executor(None, receive_message, ours)
            for fd in fds:
                os.close(fd)
            if hello.get("kind") != "hello":
                raise ValueError(f"expected hello, got {hello.get('kind')!r}")
            await self._close_standbys()
            # what waits for its batch goes out now (one loop iteration writes it), so the
            # silence viewers see is the pause, not the pause plus a batch interval
            for channel in self.running.app.edge.live_channels():
                if channel.pending and channel.state == "live":
                    channel.flush()
            await asyncio.sleep(0)
            # the pause: from here to the exit (or the failure) the event loop does not run,
            # nor the cyclic collector
            ours.settimeout(max(deadline - time.monotonic(), 0.1))
            gc.disable()
            try:
                return self._hand_over(ours, int(hello["pid"]), client)
            finally:
                gc.enable()
        except Exception as exc:  # the child died, timed out, refused, or spoke nonsense
            error = str(exc) or type(exc).__name__
            log.error("handover_failed", error=error, child=proc.pid)
            if proc.returncode is None:
                proc.kill()  # it did no I/O on our sockets: it commits only with "taken"
            return self._result(False, new_pid=proc.pid, error=error)
        finally:
            ours.close()
            await self._reap(proc)

    def _hand_over(
        self, ours: socket.socket, new_pid: int, client: asyncio.StreamWriter
    ) -> dict[str, Any]:
        started = time.perf_counter()
        doc, cap = capture(self.running.app, self.running.server, self.running.tls_server)
        captured = time.perf_counter()
        send_message(ours, _encode(doc), cap.blobs, cap.fds)
        sent = time.perf_counter()
        answer, _, _ = receive_message(ours)
        if answer.get("kind") != "taken":
            raise RuntimeError(str(answer.get("error") or f"new process answered {answer}"))
        pause_ms = round((time.perf_counter() - started) * 1000, 1)
        result = self._result(
            True,
            new_pid=new_pid,
            pause_ms=pause_ms,
            viewers=cap.viewers,
            channels=len(doc["channels"]),
            cut=cap.cut,
            resent_bytes=cap.unsent,
            capture_ms=round((captured - started) * 1000, 1),
            send_ms=round((sent - captured) * 1000, 1),
            state_bytes=sum(map(len, cap.blobs)),
        )
        log.info("handover_done", **{k: v for k, v in result.items() if k != "error"})
        sock = client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                os.write(sock.fileno(), json.dumps(result).encode() + b"\n")
        sys.stdout.flush()
        sys.stderr.flush()
        # no loop iteration may run again: it would read the upstreams the new process now owns
        os._exit(0)

    async def _close_standbys(self) -> None:
        """Warm standby sessions are not handed over: end them here (engine stop and placement
        release included, which this process cannot do after "taken"); the new process
        prepares new ones on its first ticks. Before the pause, so it costs viewers nothing."""
        edge = self.running.app.edge
        closed = 0
        for channel in edge.live_channels():
            if channel.standby is not None:
                channel.retire_standby("handover")
                closed += 1
        if closed and edge.tasks:
            await asyncio.wait(set(edge.tasks), timeout=self.settings.stop_timeout_s)
            log.info("handover_standbys_closed", standbys=closed)

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), _REAP_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
