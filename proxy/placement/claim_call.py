"""What the central and agent claim clients share: the ``POST /v1/claims`` call and the reading
of its answer. Error codes and messages are prefixed with the peer's name (``central``,
``agent``), so a viewer's 503 and the logs say which step could not place."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from acefleet.wire import ClaimGrant, ClaimRequest
from proxy.control.peer import ControlPeer
from proxy.placement import Unavailable
from proxy.placement.circuit import Breaker


class ClaimClient:
    """Base of the central and agent claim clients: one peer, one breaker."""

    def __init__(self, peer: ControlPeer, breaker: Breaker) -> None:
        self.peer = peer
        self.breaker = breaker

    async def _claim(
        self, content_key: str, avoid: frozenset[str], *, standby: bool = False
    ) -> httpx.Response:
        """The claim call (``standby``: a warm standby's second engine); a peer that cannot be
        reached counts against the breaker."""
        req = ClaimRequest(
            content_key=content_key,
            proxy_id=self.peer.proxy_id,
            host=self.peer.host,
            avoid=sorted(avoid)[:100],
            standby=standby,
        )
        try:
            return await self.peer.http.post(
                self.peer.url("/v1/claims"),
                json=req.model_dump(exclude_defaults=True),
                headers=self.peer.headers,
                timeout=self.peer.timeout_s,
            )
        except httpx.HTTPError as exc:
            self.breaker.failure()
            name = self.peer.name
            raise Unavailable(
                f"{name}_unreachable", f"{name} claim call failed: {type(exc).__name__}"
            ) from None

    def _grant(self, resp: httpx.Response) -> ClaimGrant:
        try:
            return ClaimGrant.model_validate_json(resp.content)
        except ValidationError:
            raise Unavailable(
                f"{self.peer.name}_bad_answer", f"{self.peer.name} answered no claim grant"
            ) from None

    def _error_of(self, resp: httpx.Response) -> tuple[str, str, float | None]:
        """(code, message, retry_after_s) of an ``{"error": {...}}`` body, whatever came back."""
        try:
            detail = resp.json().get("error") or {}
        except (ValueError, AttributeError):
            detail = {}
        if not isinstance(detail, dict):
            detail = {}
        retry = detail.get("retry_after_s")
        return (
            str(detail.get("code") or f"{self.peer.name}_http_{resp.status_code}"),
            str(detail.get("message") or f"HTTP {resp.status_code}"),
            float(retry) if isinstance(retry, int | float) else None,
        )
