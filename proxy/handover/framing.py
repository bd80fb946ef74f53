"""Messages over the handover socketpair: a JSON head, raw byte blobs, then file descriptors.

One message is: 4-byte big-endian length, the JSON head ``{"doc", "blobs": [lengths], "fds"}``,
the blobs back to back, then the descriptors in batches of at most :data:`FDS_PER_BATCH`, each
batch riding on a one-byte ``F`` (SCM_RIGHTS needs at least one data byte, and reading exactly
that byte picks up exactly that batch). Both sides use blocking sockets with a timeout: the old
side blocks its event loop on purpose (see the package docstring), the new side reads in a thread.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from typing import Any

FDS_PER_BATCH = 250
_MAX_HEAD = 64 * 1024 * 1024
_BATCH_MARK = b"F"


class HandoverClosed(Exception):
    """The other side closed the socketpair (it exited, or gave up)."""


def send_message(
    sock: socket.socket,
    doc: dict[str, Any],
    blobs: Sequence[bytes] = (),
    fds: Sequence[int] = (),
) -> None:
    head = json.dumps(
        {"doc": doc, "blobs": [len(b) for b in blobs], "fds": len(fds)}, separators=(",", ":")
    ).encode()
    sock.sendall(len(head).to_bytes(4, "big") + head)
    for blob in blobs:
        if blob:
            sock.sendall(blob)
    for i in range(0, len(fds), FDS_PER_BATCH):
        socket.send_fds(sock, [_BATCH_MARK], list(fds[i : i + FDS_PER_BATCH]))


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise HandoverClosed("the other process closed the handover socket")
        got += k
    return bytes(buf)


def receive_message(sock: socket.socket) -> tuple[dict[str, Any], list[bytes], list[int]]:
    """One message: (doc, blobs, descriptors now owned by this process)."""
    size = int.from_bytes(_read_exact(sock, 4), "big")
    if size > _MAX_HEAD:
        raise ValueError(f"handover head of {size} bytes is too large")
    head = json.loads(_read_exact(sock, size))
    blobs = [_read_exact(sock, int(n)) for n in head["blobs"]]
    fds: list[int] = []
    want = int(head["fds"])
    while len(fds) < want:
        mark, batch, flags, _ = socket.recv_fds(sock, 1, FDS_PER_BATCH)
        if not mark:
            raise HandoverClosed("the other process closed the handover socket")
        fds.extend(batch)
        if mark != _BATCH_MARK or flags & socket.MSG_CTRUNC:
            raise ValueError("descriptor batch lost or truncated (too many open files?)")
    doc = head["doc"]
    if not isinstance(doc, dict):
        raise ValueError("handover message is not an object")
    return doc, blobs, fds
