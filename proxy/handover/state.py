"""The handover format: what a proxy process hands its successor, versioned.

A state message's doc is ``{"format": N, ...}``; blobs carry raw bytes (buffer chunks, pending
partial packets, PAT/PMT copies, bytes to resend) by index, descriptors by index too.

- Format 1: listening sockets, channels (buffer, upstream, viewers with the cursor they resume
  at), aliases.
- Format 2 (current): adds ``connections`` (idle keep-alive clients), per viewer ``lead`` (the
  tail of headers or PAT/PMT still unsent: resent before the stream) and ``run_start`` (where
  its current contiguous run began, for a later reload), and per channel ``hls`` (the HLS
  players' sessions with their numbering).

:func:`decode` reads every format in :data:`READABLE` into the current shape and raises
:class:`UnknownFormat` for any other: the new process refuses, the old keeps serving.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from proxy.engine_api import EngineSession
from proxy.placement import Placement, StreamRecord

FORMAT = 2
READABLE = (1, 2)


class UnknownFormat(ValueError):
    """A state in a format this version cannot read."""


def encode_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """The current state as the previous version wrote it: no idle connections (closed by the
    old process's exit) and no viewer that still needs a lead (it is cut)."""
    channels = []
    for ch in doc["channels"]:
        viewers = [
            {k: v[k] for k in ("fd", "address", "cursor", "bytes_sent", "player")}
            for v in ch["viewers"]
            if v.get("lead") is None
        ]
        channels.append({**{k: v for k, v in ch.items() if k != "hls"}, "viewers": viewers})
    out = {k: v for k, v in doc.items() if k != "connections"}
    return {**out, "format": 1, "channels": channels}


def decode(doc: dict[str, Any]) -> dict[str, Any]:
    """A received state in the current shape; :class:`UnknownFormat` if it is not readable."""
    version = doc.get("format")
    if version not in READABLE:
        raise UnknownFormat(
            f"handover format {version!r} is unknown to this version "
            f"(it reads {', '.join(map(str, READABLE))})"
        )
    if version == 1:
        doc = {**doc, "connections": []}
        doc["channels"] = [
            {
                **ch,
                "viewers": [{**v, "lead": None, "run_start": -1} for v in ch["viewers"]],
                "hls": [],
            }
            for ch in doc["channels"]
        ]
    return doc


# --- the records a channel carries ------------------------------------------------------------
def placement_doc(p: Placement) -> dict[str, Any]:
    return {
        "source": p.source,
        "engine": p.engine,
        "url": p.url,
        "claim_id": p.claim_id,
        "engine_id": p.engine_id,
        "relay_from": p.relay_from,
    }


def placement_of(d: dict[str, Any]) -> Placement:
    return Placement(
        source=d["source"],
        engine=d["engine"],
        url=d["url"],
        claim_id=d["claim_id"],
        engine_id=d["engine_id"],
        relay_from=d.get("relay_from"),  # absent in a document from before the loop guard
    )


def session_doc(s: EngineSession | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "playback_url": s.playback_url,
        "command_url": s.command_url,
        "stat_url": s.stat_url,
        "infohash": s.infohash,
        "playback_session_id": s.playback_session_id,
    }


def session_of(d: dict[str, Any] | None) -> EngineSession | None:
    return None if d is None else EngineSession(**d)


def record_doc(r: StreamRecord) -> dict[str, Any]:
    return {
        "stream_id": r.stream_id,
        "content_key": r.content_key,
        "started_at": r.started_at.isoformat(),
        "infohash": r.infohash,
        "viewers": r.viewers,
        "extra": dict(r.extra),
        "standby": r.standby,
    }


def record_of(d: dict[str, Any], placement: Placement) -> StreamRecord:
    return StreamRecord(
        stream_id=d["stream_id"],
        content_key=d["content_key"],
        placement=placement,
        started_at=datetime.fromisoformat(d["started_at"]),
        infohash=d["infohash"],
        viewers=int(d["viewers"]),
        extra=dict(d.get("extra", {})),
        standby=bool(d.get("standby", False)),
    )
