"""Messages over the handover socketpair: a JSON head, raw byte blobs, then file descriptors.

One message is: 4-byte big-endian length, the JSON head ``{"doc", "blobs": [lengths], "fds"}``,
then the descriptors in batches of at most :data:`FDS_PER_BATCH`, each batch riding on a
one-byte ``F`` (SCM_RIGHTS needs at least one data byte, and reading exactly that byte picks up
exactly that batch). The blobs (megabytes of stream buffer) do not go through the socket, whose
~200 KiB buffer would make the two processes take turns dozens of times while viewers wait: they
are written back to back into a memfd, passed as the first descriptor. Both sides use blocking
sockets with a timeout: the old side blocks its event loop on purpose (see the package
docstring), the new side reads in a thread.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from typing import Any

FDS_PER_BATCH = 250
_MAX_HEAD = 64 * 1024 * 1024
_BATCH_MARK = b"F"
_IOV_MAX = 1024


class HandoverClosed(Exception):
    """The other side closed the socketpair (it exited, or gave up)."""


def send_message(
    sock: socket.socket,
    doc: dict[str, Any],
    blobs: Sequence[bytes] = (),
    fds: Sequence[int] = (),
) -> None:
    memfd = -1
    if blobs:
        memfd = os.memfd_create("acefleet-handover", os.MFD_CLOEXEC)
        for i in range(0, len(blobs), _IOV_MAX):
            batch = [b for b in blobs[i : i + _IOV_MAX] if b]
            want = sum(map(len, batch))
            if batch and os.writev(memfd, batch) != want:
                raise OSError("short write to the handover memfd")
        fds = [memfd, *fds]
    head = json.dumps(
        {"doc": doc, "blobs": [len(b) for b in blobs], "fds": len(fds)}, separators=(",", ":")
    ).encode()
    try:
        sock.sendall(len(head).to_bytes(4, "big") + head)
        for i in range(0, len(fds), FDS_PER_BATCH):
            socket.send_fds(sock, [_BATCH_MARK], list(fds[i : i + FDS_PER_BATCH]))
    finally:
        if memfd >= 0:
            os.close(memfd)


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
    fds: list[int] = []
    want = int(head["fds"])
    while len(fds) < want:
        mark, batch, flags, _ = socket.recv_fds(sock, 1, FDS_PER_BATCH)
        if not mark:
            raise HandoverClosed("the other process closed the handover socket")
        fds.extend(batch)
        if mark != _BATCH_MARK or flags & socket.MSG_CTRUNC:
            raise ValueError("descriptor batch lost or truncated (too many open files?)")
    blobs: list[bytes] = []
    if head["blobs"]:
        memfd, fds = fds[0], fds[1:]
        try:
            offset = 0
            for n in head["blobs"]:
                blob = os.pread(memfd, int(n), offset) if n else b""
                if len(blob) != n:
                    raise ValueError("handover memfd is shorter than announced")
                blobs.append(blob)
                offset += n
        finally:
            os.close(memfd)
    doc = head["doc"]
    if not isinstance(doc, dict):
        raise ValueError("handover message is not an object")
    return doc, blobs, fds
