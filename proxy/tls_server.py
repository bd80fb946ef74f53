"""The proxy's HTTPS listener: the same routes as the plain port, on ``tls_port``.

Other edges relay from it (the relay URL a proxy reports is https when it serves TLS), and
anything that should not cross the network in clear may use it. The plain port stays: HAProxy
and players that cannot do TLS keep using it.

A hitless reload hands this listening socket over like the plain one, but never a connection
accepted on it: the TLS session state lives in this process's memory and cannot follow the
socket, so such a connection is closed by the old process's exit and its client reconnects (for
a relaying edge: its ordinary failover). See proxy/handover.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from acefleet import logs, tls
from proxy.server import App, ClientProtocol

log = logs.get(__name__)


async def listen_tls(app: App, *, sock: socket.socket | None = None) -> asyncio.Server:
    """Serve ``app`` over HTTPS on ``tls_port`` (or on ``sock``, a listening socket taken over
    from a previous process)."""
    settings = app.settings
    context = tls.server_context(settings.tls_cert_file, settings.tls_key_file)
    loop = asyncio.get_running_loop()
    where: dict[str, Any] = (
        {"sock": sock}
        if sock is not None
        else {"host": settings.host, "port": settings.tls_port, "reuse_address": True}
    )
    server = await loop.create_server(
        lambda: ClientProtocol(app),
        ssl=context,
        # a client that never finishes its handshake is bounded like one that never sends
        # its headers (slowloris)
        ssl_handshake_timeout=settings.header_timeout_s,
        backlog=1024,
        **where,
    )
    for listening in server.sockets:
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if sock is None:
        log.info("listening_tls", host=settings.host, port=settings.tls_port)
    return server


def is_tls(transport: Any) -> bool:
    """``transport`` carries TLS (its socket alone cannot be handed to another process)."""
    return transport is not None and transport.get_extra_info("sslcontext") is not None
