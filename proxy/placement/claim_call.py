"""What the central and agent claim clients share: the ``POST /v1/claims`` call and the reading
of its answer. Error codes and messages are prefixed with the peer's name (``central``,
``agent``), so a viewer's 503 and the logs say which step could not place."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from acefleet.wire import ClaimGrant, ClaimRequest
from proxy.placement import Unavailable
from proxy.placement.circuit import Breaker


class ClaimClient:
    def __init__(
        self,
        peer: str,
        http: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        *,
        proxy_id: str,
        host: str,
        timeout_s: float,
        breaker: Breaker,
    ) -> None:
        self.peer = peer
        self.http = http
        self.url = url.rstrip("/")
        self.headers = headers
        self.proxy_id = proxy_id
        self.host = host
        self.timeout_s = timeout_s
        self.breaker = breaker

    async def _claim(self, content_key: str, avoid: frozenset[str]) -> httpx.Response:
        """The claim call; a peer that cannot be reached counts against the breaker."""
        req = ClaimRequest(
            content_key=content_key,
            proxy_id=self.proxy_id,
            host=self.host,
            avoid=sorted(avoid)[:100],
        )
        try:
            return await self.http.post(
                f"{self.url}/v1/claims",
                json=req.model_dump(exclude_defaults=True),
                headers=self.headers,
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            self.breaker.failure()
            raise Unavailable(
                f"{self.peer}_unreachable", f"{self.peer} claim call failed: {type(exc).__name__}"
            ) from None

    def _grant(self, resp: httpx.Response) -> ClaimGrant:
        try:
            return ClaimGrant.model_validate_json(resp.content)
        except ValidationError:
            raise Unavailable(
                f"{self.peer}_bad_answer", f"{self.peer} answered no claim grant"
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
            str(detail.get("code") or f"{self.peer}_http_{resp.status_code}"),
            str(detail.get("message") or f"HTTP {resp.status_code}"),
            float(retry) if isinstance(retry, int | float) else None,
        )
