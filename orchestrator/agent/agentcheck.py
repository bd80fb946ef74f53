"""HAProxy agent-check responder: one line per connection, then close.

``drain`` while the host is drained; otherwise ``ready NN%`` where NN is the host's free
capacity. ``ready`` is sent with the weight so a drain is undone as soon as the host undrains.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


def answer(draining: bool, weight_percent: int) -> bytes:
    if draining:
        return b"drain\n"
    return f"ready {max(1, min(100, weight_percent))}%\n".encode()


class AgentCheckServer:
    def __init__(self, host: str, port: int, line: Callable[[], bytes]) -> None:
        self.host = host
        self.port = port
        self.line = line
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def _handle(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(self.line())
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
