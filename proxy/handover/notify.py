"""sd_notify without a library: one datagram to ``$NOTIFY_SOCKET`` (a no-op without it)."""

from __future__ import annotations

import os
import socket

from acefleet import logs

log = logs.get(__name__)


def sd_notify(*lines: str) -> None:
    """Send ``READY=1``, ``MAINPID=<pid>``, ... to systemd when it asked for them."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:  # systemd gone or the socket unreachable: serving matters more
        log.warning("sd_notify_failed", error=repr(exc))
