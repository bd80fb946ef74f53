"""Relays: pulling a channel from another edge's proxy instead of opening a second engine session.

Central answers ``relay`` when the content is live on (or was just reserved on) another edge.
The relay is an ordinary viewer request to that edge's proxy, so the serving proxy needs no
special path: it attaches the request to its live channel, or opens the channel and claims from
central, which hands it the engine it reserved for this relay (same content, its own host).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from proxy.placement import Placement

# Sent on relay requests so the serving proxy's logs tie the pull to central's relay claim.
RELAY_CLAIM_HEADER = "X-Acefleet-Relay-Claim"


def relay_headers(placement: Placement) -> dict[str, str]:
    """Headers of the upstream request: a relay names central's relay claim."""
    if placement.source == "relay" and placement.claim_id:
        return {RELAY_CLAIM_HEADER: placement.claim_id}
    return {}


def selector_of(content_key: str) -> tuple[str, str]:
    """``id:abc`` → ("id", "abc"); ``infohash:…`` → ("infohash", "…")."""
    kind, sep, value = content_key.partition(":")
    if not sep or kind not in ("id", "infohash") or not value:
        raise ValueError(f"content key {content_key!r} is not <id|infohash>:<value>")
    return kind, value


def relay_url(proxy_url: str, content_key: str, token: str | None = None) -> str:
    """The MPEG-TS URL of ``content_key`` on the edge proxy at ``proxy_url``; ``token`` (an
    edge token, proxy/access.py) lets it through an edge in token mode."""
    kind, value = selector_of(content_key)
    query = {kind: value, **({"token": token} if token else {})}
    return f"{proxy_url.rstrip('/')}/ace/getstream?{urlencode(query)}"
