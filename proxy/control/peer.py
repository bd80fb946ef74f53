"""One client per control-plane peer: how this proxy reaches central or its local agent.

A :class:`ControlPeer` is built once per peer (``links.py``) and handed to everything that talks
to it: the claim clients (``proxy/placement/central.py``, ``proxy/placement/agent.py``), the
event queue and the snapshot. It holds the peer's name (which prefixes error codes and logs),
its base URL, the key header (central takes ``X-API-Key``, the agent a bearer token), this
proxy's identity as the peer knows it, the timeout of one call, and the shared HTTP client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import httpx

PeerName = Literal["central", "agent"]


def key_headers(name: PeerName, api_key: str) -> dict[str, str]:
    """The header that carries ``api_key`` to peer ``name`` (none without a key)."""
    if not api_key:
        return {}
    if name == "central":
        return {"X-API-Key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


@dataclass(frozen=True)
class ControlPeer:
    name: PeerName
    http: httpx.AsyncClient
    base_url: str
    api_key: str = field(repr=False)
    proxy_id: str  # this proxy, as the peer knows it
    host: str  # this proxy's edge host, as the peer knows it
    timeout_s: float
    headers: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "headers", key_headers(self.name, self.api_key))

    def url(self, path: str) -> str:
        """``path`` (``/v1/...``) on this peer."""
        return f"{self.base_url}{path}"
