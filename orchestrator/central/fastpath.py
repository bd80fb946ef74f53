"""The claim hot path without FastAPI's per-request machinery.

``POST /v1/claims`` and ``DELETE /v1/claims/{id}`` are the calls that decide how fast a new
channel starts; through FastAPI (routing, dependency solving, response validation) each cost
about ten times what the claim itself costs. This ASGI middleware answers the well-formed,
authorised ones directly with the same bodies, headers and status codes. Anything else — no key,
another role, an unreadable or invalid body — is handed on, body included, to the FastAPI routes,
which stay the documented (OpenAPI) definition and produce the precise error.
"""

from __future__ import annotations

import math
import re

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acefleet.wire import ClaimRequest, ErrorBody, ErrorDetail
from orchestrator.central.auth import KeyRing, Role, Verdict
from orchestrator.central.http import ratelimit_headers
from orchestrator.central.state import Central

_RELEASE = re.compile(r"^/v1/claims/([^/]{1,100})$")
_MAX_BODY = 16 * 1024
_JSON = (b"content-type", b"application/json")


class ClaimFastPath:
    def __init__(self, app: ASGIApp, central: Central, keyring: KeyRing) -> None:
        self.app = app
        self.central = central
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/claims"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        release = _RELEASE.match(path) if method == "DELETE" else None
        if not (release or (method == "POST" and path == "/v1/claims")):
            await self.app(scope, receive, send)
            return
        key = _key(scope)
        if key is None or self.keyring.role_of(key) is not Role.service:
            await self.app(scope, receive, send)  # 401/403 with the full explanation
            return
        body, complete = await _read_body(receive)
        if not complete:
            await self.app(scope, _replay(body, receive), send)
            return
        if release is not None:
            verdict = self.keyring.check(key)
            if not verdict.allowed:
                await _rate_limited(send, verdict)
                return
            await self._release(send, release.group(1), verdict)
            return
        try:
            req = ClaimRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # 422 naming each bad field
            return
        verdict = self.keyring.check(key)
        if not verdict.allowed:
            await _rate_limited(send, verdict)
            return
        answer = self.central.claim(req)
        if isinstance(answer, ErrorDetail):
            retry = answer.retry_after_s or self.central.settings.claim_retry_after_s
            answer.retry_after_s = retry
            extra = [(b"retry-after", str(max(1, math.ceil(retry))).encode())]
            await _respond(send, 503, _error(answer), verdict, extra)
            return
        await _respond(send, 200, answer.model_dump_json().encode(), verdict)

    async def _release(self, send: Send, claim_id: str, verdict: Verdict) -> None:
        if self.central.release(claim_id) is None:
            detail = ErrorDetail(code="unknown_claim", message=f"no live claim {claim_id!r}")
            await _respond(send, 404, _error(detail), verdict)
            return
        await _respond(send, 204, b"", verdict)


def _key(scope: Scope) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1") or None
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, and whether it was read whole (False: too large or a disconnect)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_BODY:
            return b"".join(chunks), False
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that yields the already-read body first, then the original stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _error(detail: ErrorDetail) -> bytes:
    return ErrorBody(error=detail).model_dump_json(exclude_none=True).encode()


async def _rate_limited(send: Send, verdict: Verdict) -> None:
    retry = max(1, math.ceil(verdict.retry_after_s))
    detail = ErrorDetail(
        code="rate_limited", message="too many requests for this API key", retry_after_s=retry
    )
    await _respond(send, 429, _error(detail), verdict, [(b"retry-after", str(retry).encode())])


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    verdict: Verdict,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        *ratelimit_headers(verdict.limit, verdict.remaining, verdict.reset_s),
        *(extra or []),
    ]
    if status != 204:
        headers += [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body if status != 204 else b""})
