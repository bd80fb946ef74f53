"""Central's WebSocket live feed over real loopback sockets: snapshot, deltas, resume, restart,
auth by header and by first message, the per-key limit, and a slow client cut alone."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.central.conftest import Running, StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, VIEWER_KEY, Agent, event, send_events

Message = dict[str, Any]


def ws_url(svc: Running) -> str:
    return f"ws://127.0.0.1:{svc.port}/v1/live/ws"


def recv(ws: ClientConnection, timeout: float = 10) -> Message:
    message: Message = json.loads(ws.recv(timeout))
    return message


def recv_data(ws: ClientConnection, timeout: float = 10) -> Message:
    """The next snapshot or delta, skipping app-level pings."""
    while True:
        message = recv(ws, timeout)
        if message["type"] != "ping":
            return message


def close_code(ws: ClientConnection, timeout: float = 10) -> int:
    """Read until the server closes; its close code (0 if it did not close in time)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(max(0.1, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006
    except TimeoutError:
        pass
    return 0


def first_or_close(ws: ClientConnection) -> str | int:
    """The type of the first message, or the close code if the server closed instead."""
    try:
        return str(recv(ws)["type"])
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006


@contextlib.contextmanager
def live(
    svc: Running, key: str | None = VIEWER_KEY, header: bool = True
) -> Iterator[ClientConnection]:
    """A feed connection: the key on the handshake (header) or as the first message."""
    headers = {"X-API-Key": key} if key and header else {}
    with connect(ws_url(svc), additional_headers=headers, open_timeout=10) as ws:
        if key and not header:
            ws.send(json.dumps({"type": "auth", "api_key": key}))
        yield ws


def apply(view: dict[str, Any], delta: Message) -> None:
    view["version"] = delta["version"]
    for kind, key in (("hosts", "name"), ("engines", "id"), ("streams", "stream_id")):
        for item in delta["upsert"][kind]:
            view[kind][item[key]] = item
        for gone in delta["remove"][kind]:
            del view[kind][gone]


def test_snapshot_then_deltas_and_resume(central: Running, service: httpx.Client) -> None:
    Agent("edge0", 2).beat(service)
    send_events(service, "edge0", event("stream_started", "s-1", content_key="id:a", viewers=1))
    with live(central) as ws:
        snap = recv_data(ws)
        assert snap["type"] == "snapshot"
        fleet = snap["fleet"]
        assert [h["name"] for h in fleet["hosts"]] == ["edge0"]
        assert {e["id"] for e in fleet["engines"]} == {"edge0-eng0", "edge0-eng1"}
        assert [s["stream_id"] for s in fleet["streams"]] == ["s-1"]
        view = {
            "hosts": {h["name"]: h for h in fleet["hosts"]},
            "engines": {e["id"]: e for e in fleet["engines"]},
            "streams": {s["stream_id"]: s for s in fleet["streams"]},
        }
        # A new host arrives as an upsert of it alone (plus whatever else changed).
        Agent("edge1", 1).beat(service)
        delta = recv_data(ws)
        assert delta["type"] == "delta"
        assert delta["version"] == snap["version"] + 1
        assert "edge1" in [h["name"] for h in delta["upsert"]["hosts"]]
        assert delta["remove"] == {"hosts": [], "engines": [], "streams": []}
        assert delta["summary"]["hosts"]["live"] == 2
        apply(view, delta)
        # A viewer change and a stream end: upsert, then remove.
        send_events(service, "edge0", event("viewers", "s-1", viewers=7))
        while view["streams"]["s-1"]["viewers"] != 7:
            apply(view, recv_data(ws))
        send_events(service, "edge0", event("stream_ended", "s-1", reason="idle"))
        last = recv_data(ws)
        while "s-1" not in last["remove"]["streams"]:
            last = recv_data(ws)
        apply(view, last)
        assert view["streams"] == {}
        assert set(view["hosts"]) == {"edge0", "edge1"}
        seen = last["version"]
    # Resume: the changes since `seen` arrive as one delta, not a snapshot.
    send_events(service, "edge0", event("stream_started", "s-2", content_key="id:b", viewers=3))
    with live(central, header=False) as ws:
        ws.send(json.dumps({"type": "resume", "version": seen}))
        first = recv_data(ws)
        assert first["type"] == "delta"
        assert first["version"] > seen
        assert [s["stream_id"] for s in first["upsert"]["streams"]] == ["s-2"]
    # A version the feed never handed out gets a snapshot.
    with live(central) as ws:
        ws.send(json.dumps({"type": "resume", "version": 12}))
        assert recv_data(ws)["type"] == "snapshot"


def test_resume_after_central_restart_gets_a_newer_snapshot(start_central: StartCentral) -> None:
    svc = start_central()
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        Agent("edge0", 1).beat(service)
    with live(svc) as ws:
        before = recv_data(ws)
        svc.stop()
        assert close_code(ws) in (1001, 1006, 1012)  # going away with the server
    again = start_central(port=svc.port)
    with httpx.Client(base_url=again.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        Agent("edge0", 1).beat(service)
    with live(again, header=False) as ws:
        ws.send(json.dumps({"type": "resume", "version": before["version"]}))
        after = recv_data(ws)
    # The old version means nothing to the new run: a snapshot, with a version above the old.
    assert after["type"] == "snapshot"
    assert after["version"] > before["version"]
    assert [h["name"] for h in after["fleet"]["hosts"]] == ["edge0"]


def test_a_quiet_feed_sends_pings(start_central: StartCentral) -> None:
    svc = start_central(live_ws_ping_interval_s="0.5")
    with live(svc) as ws:
        snap = recv(ws)
        assert snap["type"] == "snapshot"
        pings = [recv(ws), recv(ws)]
    assert [p["type"] for p in pings] == ["ping", "ping"]
    assert all(datetime.fromisoformat(p["at"]).tzinfo is not None for p in pings)


def test_auth_by_header_bearer_or_first_message(central: Running, service: httpx.Client) -> None:
    Agent("edge0", 1).beat(service)
    with live(central, OPERATOR_KEY) as ws:
        assert recv_data(ws)["type"] == "snapshot"
    with connect(
        ws_url(central), additional_headers={"Authorization": f"Bearer {SERVICE_KEY}"}
    ) as ws:
        assert recv_data(ws)["type"] == "snapshot"
    with live(central, VIEWER_KEY, header=False) as ws:
        assert recv_data(ws)["type"] == "snapshot"


def test_unknown_key_or_bad_first_message_is_4401(central: Running) -> None:
    with live(central, "not-a-key-not-a-key-0001") as ws:
        assert close_code(ws) == 4401
    with live(central, "not-a-key-not-a-key-0001", header=False) as ws:
        assert close_code(ws) == 4401
    with live(central, None) as ws:
        ws.send(json.dumps({"type": "resume", "version": 1}))  # not an auth message
        assert close_code(ws) == 4401
    # The key in the URL is not a way in (it would only leak into logs).
    with connect(f"{ws_url(central)}?api_key={VIEWER_KEY}") as ws:
        ws.send("{}")
        assert close_code(ws) == 4401


def test_no_auth_in_time_is_4408(start_central: StartCentral) -> None:
    svc = start_central(live_ws_auth_timeout_s="0.5")
    with live(svc, None) as ws:
        assert close_code(ws) == 4408


def test_connections_per_key_are_limited(start_central: StartCentral) -> None:
    svc = start_central(live_ws_max_per_key="2")
    with live(svc) as first, live(svc) as second:
        assert recv_data(first)["type"] == "snapshot"
        assert recv_data(second)["type"] == "snapshot"
        with live(svc) as third:
            assert close_code(third) == 4429
        with live(svc, OPERATOR_KEY) as other_key:  # the limit is per key
            assert recv_data(other_key)["type"] == "snapshot"
    with live(svc) as later:  # slots come back when connections end
        assert recv_data(later)["type"] == "snapshot"


class StalledClient:
    """A raw WebSocket client that completes the handshake and then stops reading, with a tiny
    receive buffer so the server's side fills up quickly."""

    def __init__(self, port: int, key: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /v1/live/ws HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
                f"X-API-Key: {key}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection without a close frame")
        return chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._read()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def close_code(self) -> tuple[int, int]:
        """Read on from where it stopped: (messages received, the close frame's code)."""
        messages = 0
        while True:
            b0, b1 = self._take(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._take(8))
            payload = self._take(length)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                return messages, struct.unpack("!H", payload[:2])[0]
            if opcode == 0x1:
                messages += 1

    def close(self) -> None:
        self.sock.close()


def test_a_slow_client_is_cut_without_affecting_others(start_central: StartCentral) -> None:
    svc = start_central(
        live_update_interval_s="0.05",
        live_ws_send_queue_max="2",
        live_ws_max_per_key="1",
        rate_limit_rps="1000",  # the probes below must only meet the connection limit
    )
    service = httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}, timeout=10)
    Agent("edge0", 1).beat(service)
    names = [f"s-{i:03d}-" + "x" * 40 for i in range(200)]
    starts = [event("stream_started", n, content_key=f"id:{n}", viewers=1) for n in names]
    send_events(service, "edge0", *starts)

    healthy: list[Message] = []
    healthy_error: list[BaseException] = []
    stop = threading.Event()

    def read_healthy(ws: ClientConnection) -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    healthy.append(recv(ws, 0.5))
        except BaseException as exc:  # the assertion below reports it
            healthy_error.append(exc)

    stalled = StalledClient(svc.port, OPERATOR_KEY)
    with live(svc, VIEWER_KEY) as ws:
        reader = threading.Thread(target=read_healthy, args=(ws,), daemon=True)
        reader.start()
        # Every round changes all 200 streams: a delta of tens of kilobytes. The stalled client
        # holds the operator key's only slot until central cuts it; probing that slot tells when.
        cut = False
        deadline = time.monotonic() + 60
        round_ = 0
        while not cut and time.monotonic() < deadline:
            round_ += 1
            changes = [event("viewers", n, viewers=round_ + 1) for n in names]
            send_events(service, "edge0", *changes)
            with live(svc, OPERATOR_KEY) as probe:
                first = first_or_close(probe)
            assert first in ("snapshot", 4429)
            cut = first == "snapshot"
        assert cut, "central never cut the client that stopped reading"
        # The healthy client goes on: a change made after the cut reaches it.
        Agent("edge-after-cut", 1).beat(service)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
            "edge-after-cut" in [h["name"] for h in m.get("upsert", {}).get("hosts", [])]
            for m in list(healthy)
        ):
            time.sleep(0.05)
        stop.set()
        reader.join(5)
    assert not healthy_error, healthy_error
    data = [m for m in healthy if m["type"] != "ping"]
    assert data[0]["type"] == "snapshot"
    # Nothing skipped for the healthy client: every version, in order.
    versions = [m["version"] for m in data]
    assert versions == list(range(versions[0], versions[0] + len(versions)))
    assert any("edge-after-cut" in [h["name"] for h in m["upsert"]["hosts"]] for m in data[1:])
    # The stalled client, reading again, finds what was buffered and then the 4000 close.
    messages, code = stalled.close_code()
    stalled.close()
    service.close()
    assert code == 4000
    assert messages >= 1


def test_compression_only_when_configured(start_central: StartCentral) -> None:
    """Browsers offer permessage-deflate on every WebSocket; the real console script declines it
    unless live_ws_deflate is on (each compression runs per dashboard on the claim loop)."""
    for deflate in (None, "true"):
        svc = start_central(subprocess=True, **({"live_ws_deflate": deflate} if deflate else {}))
        with live(svc) as ws:  # the client offers permessage-deflate, as browsers do
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert recv_data(ws)["type"] == "snapshot"
        if deflate:
            assert extensions is not None
            assert extensions.startswith("permessage-deflate")
        else:
            assert extensions is None
        svc.stop()


def test_patches_carry_only_what_changed_and_build_the_same_view(
    central: Running, service: httpx.Client
) -> None:
    """A connection that asks for patches (the dashboard) gets a changed item as its key and
    changed fields, new items whole; its view ends where a whole-item connection's does."""
    Agent("edge0", 2).beat(service)
    send_events(service, "edge0", event("stream_started", "s-1", content_key="id:a", viewers=1))
    headers = {"X-API-Key": VIEWER_KEY}
    with (
        connect(ws_url(central), additional_headers=headers, open_timeout=10) as whole,
        connect(ws_url(central) + "?patches=1", additional_headers=headers, open_timeout=10) as ws,
    ):
        views = [snapshot_view(recv_data(whole)), snapshot_view(recv_data(ws))]
        send_events(service, "edge0", event("viewers", "s-1", viewers=7))
        Agent("edge1", 1).beat(service)  # a new host and engine: whole items
        seen: list[Message] = []
        while views[0]["streams"]["s-1"]["viewers"] != 7 or "edge1" not in views[0]["hosts"]:
            apply(views[0], recv_data(whole))
        version = None
        while version != views[0]["version"]:
            delta = recv_data(ws)
            seen.append(delta)
            apply_patch(views[1], delta)
            version = delta["version"]
        views[1]["version"] = version
        assert views[1] == views[0]
        patched = [p for d in seen for p in d["patch"]["streams"]]
        # the viewer change, and its peak: no field that did not change
        assert {"stream_id": "s-1", "viewers": 7, "peak_viewers": 7} in patched
        added = [h["name"] for d in seen for h in d["upsert"]["hosts"]]
        assert added == ["edge1"]
        assert all(d["upsert"]["streams"] == [] for d in seen)


def snapshot_view(snap: Message) -> dict[str, Any]:
    assert snap["type"] == "snapshot"
    fleet = snap["fleet"]
    return {
        "version": snap["version"],
        "hosts": {h["name"]: h for h in fleet["hosts"]},
        "engines": {e["id"]: e for e in fleet["engines"]},
        "streams": {s["stream_id"]: s for s in fleet["streams"]},
    }


def apply_patch(view: dict[str, Any], delta: Message) -> None:
    """As the dashboard applies a delta: whole items set, patches merged, keys removed."""
    for kind, key in (("hosts", "name"), ("engines", "id"), ("streams", "stream_id")):
        for item in delta["upsert"][kind]:
            view[kind][item[key]] = item
        for part in delta["patch"][kind]:
            view[kind][part[key]] = {**view[kind].get(part[key], {}), **part}
        for gone in delta["remove"][kind]:
            del view[kind][gone]
