"""Relays: pulling a channel from another edge's proxy instead of opening a second engine session.

Central answers ``relay`` when the content is live on (or was just reserved on) another edge.
The relay is an ordinary viewer request to that edge's proxy, so the serving proxy needs no
special path: it attaches the request to its live channel, or opens the channel and claims from
central, which hands it the engine it reserved for this relay (same content, its own host).

The loop guard: a relay request names the proxies it comes through in ``X-Acefleet-Relay-Chain``
(comma separated base URLs, the ones central hands out in relay grants, the requester last; a
channel opened for a relay request carries that request's chain on, plus its own). URLs, not
edge names: two proxies on one host are two links of a chain. A proxy answers ``508
relay_loop`` instead of serving when it finds itself in the chain, or when serving would mean
relaying from a proxy in the chain (its live channel relays from one, or central names one for
a new channel).
After a state loss central may tell A to relay from B and B from A; the guard turns that
deadlock into a refusal, and the requester places again without that source
(``failed_relay_avoid_s``, proxy/placement/central.py), which ends in an engine of its own.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from acefleet.errors import ServiceError

if TYPE_CHECKING:
    from proxy.placement import Placement

# Sent on relay requests so the serving proxy's logs tie the pull to central's relay claim.
RELAY_CLAIM_HEADER = "X-Acefleet-Relay-Claim"
# The proxies a relay request comes through (the loop guard).
RELAY_CHAIN_HEADER = "X-Acefleet-Relay-Chain"
# A longer chain is a loop or abuse: no fleet relays through this many proxies.
MAX_CHAIN = 16
_PROXY_URL = re.compile(r"^https?://[^\s,]{1,250}$")


class RelayLoop(ServiceError):
    """Serving this relay request would close a relay loop (always 508)."""

    def __init__(self, message: str) -> None:
        super().__init__(508, "relay_loop", message, retry_after_s=None)


def proxy_base(url: str) -> str:
    """A proxy's base URL as chains compare it."""
    return url.rstrip("/")


def parse_chain(value: str) -> tuple[str, ...]:
    """The proxies of an ``X-Acefleet-Relay-Chain`` header value; :class:`RelayLoop` when it is
    too long, malformed entries are refused alike (a proxy never sends one)."""
    chain = tuple(proxy_base(part.strip()) for part in value.split(",") if part.strip())
    if len(chain) > MAX_CHAIN:
        raise RelayLoop(f"relay chain of {len(chain)} proxies (at most {MAX_CHAIN})")
    if not all(_PROXY_URL.match(url) for url in chain):
        raise RelayLoop("malformed relay chain")
    return chain


def relay_headers(placement: Placement, chain: tuple[str, ...] = ()) -> dict[str, str]:
    """Headers of the upstream request: a relay names central's relay claim and the proxies it
    comes through (``chain``, this one last)."""
    headers: dict[str, str] = {}
    if placement.source == "relay":
        if placement.claim_id:
            headers[RELAY_CLAIM_HEADER] = placement.claim_id
        if chain:
            headers[RELAY_CHAIN_HEADER] = ",".join(chain)
    return headers


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
