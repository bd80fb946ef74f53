"""Which content a start request names, its infohash, and whether the simulator "knows" it.

The rule other engineers rely on: a selector value starting with ``dead`` is unknown content
(the engine answers "failed to load content" after a delay); everything else is known. The
infohash of an id is ``sha1(id)`` so every simulated engine agrees on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

SelectorKind = Literal["content_id", "infohash", "url", "magnet"]

# Precedence as ENGINE_API.md documents it: content_id (alias id), infohash, url, magnet.
_PARAMS: tuple[tuple[str, SelectorKind], ...] = (
    ("content_id", "content_id"),
    ("id", "content_id"),
    ("infohash", "infohash"),
    ("url", "url"),
    ("magnet", "magnet"),
)
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
_BTIH = re.compile(r"xt=urn:btih:([0-9a-zA-Z]+)")
UNKNOWN_PREFIX = "dead"


@dataclass(frozen=True)
class Content:
    kind: SelectorKind
    value: str
    infohash: str

    @property
    def known(self) -> bool:
        return not _lookup_key(self).lower().startswith(UNKNOWN_PREFIX)

    @property
    def by_infohash(self) -> bool:
        """Loading by infohash (or magnet) is the slow path on real engines (DHT lookup)."""
        return self.kind in ("infohash", "magnet")


def _lookup_key(content: Content) -> str:
    if content.kind == "magnet":
        match = _BTIH.search(content.value)
        return match.group(1) if match else content.value
    return content.value


def derive_infohash(content_id: str) -> str:
    return hashlib.sha1(content_id.encode()).hexdigest()


def select(query: dict[str, str]) -> Content | None:
    """The content a request names, by documented precedence; None when it names none."""
    for param, kind in _PARAMS:
        value = query.get(param, "").strip()
        if not value:
            continue
        if kind == "infohash" and _HEX40.match(value):
            infohash = value.lower()
        elif kind == "magnet" and (m := _BTIH.search(value)) and _HEX40.match(m.group(1)):
            infohash = m.group(1).lower()
        else:
            infohash = derive_infohash(value)
        return Content(kind, value, infohash)
    return None
