"""An unpaced MPEG-TS source for the proxy benchmark: just enough of the engine API
(get_status, getstream format=json, playback, stop) to stand in for an engine, with playback
written as fast as the reader takes it. The simulator paces (max 100 Mbit/s) and generates TS
in Python per session, so it cannot be the ceiling of an "as fast as they read" fan-out run.

    .venv/bin/python bench/proxy_source.py --port 19400
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import uuid
from typing import Any

import uvloop

PACKET = 188
BLOB_PACKETS = 5577  # ~1 MiB of packets, looped


def packet(pid: int, *, pusi: bool = False, rai: bool = False, payload: bytes = b"") -> bytes:
    head = bytes([0x47, (0x40 if pusi else 0) | (pid >> 8), pid & 0xFF])
    control = bytes([0x30, 1, 0x40]) if rai else bytes([0x10])  # adaptation with RAI, or none
    return (head + control + payload).ljust(PACKET, b"\xff")


def blob() -> bytes:
    """PAT, PMT (H.264 on PID 0x101), a keyframe, then video packets; ~1 MiB."""
    pat = bytes([0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xE1, 0x00]) + b"\0\0\0\0"
    pmt = bytes([0x02, 0xB0, 18, 0, 1, 0xC1, 0, 0, 0xE1, 0x01, 0xF0, 0])
    pmt += bytes([0x1B, 0xE1, 0x01, 0xF0, 0]) + b"\0\0\0\0"
    out = [packet(0, pusi=True, payload=b"\0" + pat), packet(0x100, pusi=True, payload=b"\0" + pmt)]
    out.append(packet(0x101, pusi=True, rai=True))
    out.extend(packet(0x101, payload=bytes([i & 0xFF]) * 8) for i in range(BLOB_PACKETS - 3))
    return b"".join(out)


BLOB = blob()


class Conn(asyncio.Protocol):
    def __init__(self, port: int) -> None:
        self.port = port
        self.buf = b""
        self.transport: Any = None
        self.paused = False
        self.streaming = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=4 * 1024 * 1024)

    def data_received(self, data: bytes) -> None:
        if self.streaming:
            return
        self.buf += data
        if b"\r\n\r\n" not in self.buf or len(self.buf) > 65536:
            return
        target = self.buf.split(b" ", 2)[1].decode()
        self.buf = b""
        path, _, query = target.partition("?")
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if path.startswith("/play/"):
            self.streaming = True
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n"
            )
            self.pump()
            return
        base = f"http://127.0.0.1:{self.port}"
        body: dict[str, Any]
        if path == "/ace/getstream":
            key = params.get("id") or params.get("infohash") or ""
            session = uuid.uuid4().hex
            body = {
                "response": {
                    "playback_url": f"{base}/play/{session}",
                    "command_url": f"{base}/cmd/{session}",
                    "stat_url": f"{base}/stat/{session}",
                    "infohash": hashlib.sha1(key.encode()).hexdigest(),
                    "playback_session_id": session,
                    "is_live": 1,
                },
                "error": None,
            }
        elif path.startswith("/cmd/"):
            body = {"response": "ok", "error": None}
        else:  # get_status, get_version
            body = {"result": {"playlist_loaded": True, "version": "bench"}, "error": None}
        data = json.dumps(body).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(data), data)
        )
        self.transport.close()

    def pump(self) -> None:
        for _ in range(8):  # bounded per turn: let other connections run
            if self.paused or self.transport.is_closing():
                return
            self.transport.write(BLOB)
        asyncio.get_running_loop().call_soon(self.pump)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(port), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
