"""A minimal raw-socket HTTP client for stream tests: real sockets, precise control over reads."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from acefleet.mpegts import PACKET_SIZE, SYNC_BYTE


@dataclass
class Stream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    opened_at: float = 0.0
    first_byte_at: float | None = None

    def json(self) -> Any:
        return json.loads(bytes(self.body))

    async def read_until(self, size: int, within: float = 10.0) -> bytes:
        """Read until the body holds ``size`` bytes; raise on timeout or EOF."""
        async with asyncio.timeout(within):
            while len(self.body) < size:
                data = await self.reader.read(256 * 1024)
                if not data:
                    raise EOFError(f"stream ended after {len(self.body)} bytes")
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                self.body += data
        return bytes(self.body)

    async def read_for(self, seconds: float) -> int:
        """Read whatever comes for ``seconds``; returns the bytes read meanwhile."""
        before = len(self.body)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(self.reader.read(256 * 1024), left)
            except TimeoutError:
                break
            if not data:
                break
            self.body += data
        return len(self.body) - before

    async def read_to_eof(self, within: float = 10.0) -> bytes:
        async with asyncio.timeout(within):
            while data := await self.reader.read(65536):
                self.body += data
        return bytes(self.body)

    def close(self) -> None:
        self.writer.close()


async def request(
    base: str,
    target: str,
    *,
    method: str = "GET",
    rcvbuf: int | None = None,
    raw: bytes | None = None,
    within: float = 10.0,
) -> Stream:
    """Send one request and read the response head (and, for non-streams, the body)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    # a small reader limit too, or asyncio would keep reading into its own buffer
    limit = rcvbuf if rcvbuf is not None else 1 << 20
    reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    opened = time.monotonic()
    writer.write(raw or f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    stream = Stream(reader, writer, status, headers, opened_at=opened)
    if "content-length" in headers and method != "HEAD":
        async with asyncio.timeout(within):
            stream.body += await reader.readexactly(int(headers["content-length"]))
    return stream


def packets_aligned(data: bytes) -> bool:
    whole = len(data) - len(data) % PACKET_SIZE
    return all(data[i] == SYNC_BYTE for i in range(0, whole, PACKET_SIZE))


def get_json(url: str) -> Any:
    return httpx.get(url, timeout=5, trust_env=False).json()


def sim_sessions(sim_url: str) -> dict[str, Any]:
    data: dict[str, Any] = get_json(f"{sim_url}/_sim/sessions")
    return data


def metric(proxy_url: str, name: str, labels: str = "") -> float:
    """The value of one sample from /metrics (0 when absent)."""
    text = httpx.get(f"{proxy_url}/metrics", timeout=5, trust_env=False).text
    wanted = name + (f"{{{labels}}}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


async def wait_for(predicate: Any, within: float = 10.0, interval: float = 0.1) -> None:
    end = time.monotonic() + within
    while True:
        if await asyncio.to_thread(predicate):
            return
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


def fault(sim_url: str, **body: Any) -> None:
    """Inject a simulator fault (the simulator must run with --chaos)."""
    r = httpx.post(f"{sim_url}/_sim/faults", json=body, timeout=5, trust_env=False)
    r.raise_for_status()


def engine_infohash(sim_url: str, content_id: str) -> str:
    """Ask the simulator directly which infohash ``content_id`` has; stop that session again."""
    query = {"id": content_id, "format": "json", "pid": "infohash-probe"}
    r = httpx.get(f"{sim_url}/ace/getstream", params=query, timeout=5, trust_env=False)
    response = r.json()["response"]
    httpx.get(response["command_url"], params={"method": "stop"}, timeout=5, trust_env=False)
    return str(response["infohash"])
