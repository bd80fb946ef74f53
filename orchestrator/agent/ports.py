"""Host ports for engines: HTTP and P2P from configured ranges, never colliding.

A port is free when no engine of ours (or of another agent on the same dockerd) holds it, no
provisioning in flight reserved it, and — when probing is on — binding it on the engine's address
succeeds (so a port held by any other process on the host is skipped).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable


class PortsExhausted(Exception):
    """No free port is left in a range."""


def can_bind(host: str, port: int, *, udp: bool = False) -> bool:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


class PortAllocator:
    def __init__(self, http: range, p2p: range, probe_host: str, *, probe: bool) -> None:
        self.http = http
        self.p2p = p2p
        self.probe_host = probe_host or "0.0.0.0"
        self.probe = probe
        self.reserved: set[int] = set()
        # Ports Docker refused at create time although our probe found them free (e.g. held in
        # a namespace we cannot probe); skipped until the agent restarts.
        self.refused: set[int] = set()

    def _free(self, port: int, taken: set[int], *, udp: bool) -> bool:
        if port in taken or port in self.reserved or port in self.refused:
            return False
        if not self.probe:
            return True
        if not can_bind(self.probe_host, port):
            return False
        return not udp or can_bind(self.probe_host, port, udp=True)

    def _pick(self, ports: Iterable[int], taken: set[int], *, udp: bool, what: str) -> int:
        for port in ports:
            if self._free(port, taken, udp=udp):
                self.reserved.add(port)
                return port
        raise PortsExhausted(f"no free {what} port left in the configured range")

    def allocate(self, taken: set[int], *, p2p_port: int | None = None) -> tuple[int, int]:
        """Reserve an (http, p2p) pair; ``p2p_port`` forces the P2P port (VPN forwarding)."""
        http = self._pick(self.http, taken, udp=False, what="HTTP")
        if p2p_port is not None:
            self.reserved.add(p2p_port)
            return http, p2p_port
        try:
            p2p = self._pick(self.p2p, taken | {http}, udp=True, what="P2P")
        except PortsExhausted:
            self.reserved.discard(http)
            raise
        return http, p2p

    def release(self, *ports: int) -> None:
        for port in ports:
            self.reserved.discard(port)
