"""HTTP plumbing shared by central's routers and its claim fast path: central's errors (the one
shape of :mod:`acefleet.errors`), auth dependencies, ETags, and the rate-limit headers."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acefleet.errors import ServiceError
from acefleet.wire import ErrorBody, ErrorDetail
from orchestrator.central.auth import READERS, KeyRing, Role, Verdict

API_KEY_HEADER = "X-API-Key"
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="API key of a service, operator or viewer"
)


class ApiError(ServiceError):
    """An error of central's API; ``acefleet.api_errors`` renders it (the fast path sends it
    itself)."""


def rate_limited(verdict: Verdict) -> ApiError:
    """429 for a key whose token bucket is empty; the retry hint is whole seconds, at least 1."""
    retry = max(1, math.ceil(verdict.retry_after_s))
    return ApiError(429, "rate_limited", "too many requests for this API key", retry_after_s=retry)


def claim_refused(answer: ErrorDetail, default_retry_s: float) -> ApiError:
    """503 for a claim nothing fits. The body keeps the exact retry hint; ``Retry-After`` rounds
    it up (the shared default would round to nearest)."""
    retry = answer.retry_after_s or default_retry_s
    return ApiError(
        503,
        answer.code,
        answer.message,
        retry_after_s=retry,
        headers={"Retry-After": str(max(1, math.ceil(retry)))},
    )


def unknown_claim(claim_id: str) -> ApiError:
    return ApiError(404, "unknown_claim", f"no live claim {claim_id!r}")


# Every operation's errors. 400 is the framework's answer to a body it cannot even decode (not
# UTF-8): only operations that take a body can give it, but it is listed with the others so that
# the document names every status a client can get (a JSON that does not parse, or does not fit
# the schema, is a 422).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Unreadable request body (not UTF-8 JSON)"},
    401: {"model": ErrorBody, "description": "No or unknown API key"},
    403: {"model": ErrorBody, "description": "The key's role may not do this"},
    422: {"model": ErrorBody, "description": "Malformed request"},
    429: {"model": ErrorBody, "description": "Rate limit exceeded"},
    # a standby central (docs/standby-central.md) answers every API call so until it holds the
    # control VIP; clients retry after Retry-After, by then through the VIP to the active one
    503: {"model": ErrorBody, "description": "standby_central: this central is the standby"},
}


def require(*roles: Role) -> Callable[..., Coroutine[Any, Any, Role]]:
    """A dependency admitting keys of ``roles``; it also spends one token of the key's bucket."""
    allowed = frozenset(roles)

    async def dependency(request: Request, api_key: str | None = Depends(api_key_scheme)) -> Role:
        key = api_key or bearer_token(request.headers.get("authorization", ""))
        # Never from the query string: a key in a URL leaks to logs and browser history.
        if not key:
            raise ApiError(
                401, "unauthenticated", f"send an API key in the {API_KEY_HEADER} header"
            )
        keyring: KeyRing = request.app.state.keyring
        verdict = keyring.check(key)
        if verdict.role is None:
            raise ApiError(401, "unauthenticated", "unknown API key")
        request.state.ratelimit = (verdict.limit, verdict.remaining, verdict.reset_s)
        if not verdict.allowed:
            raise rate_limited(verdict)
        if verdict.role not in allowed:
            needs = " or ".join(sorted(role.value for role in allowed))
            raise ApiError(403, "forbidden", f"role {verdict.role} may not do this (needs {needs})")
        return verdict.role

    return dependency


def bearer_token(authorization: str) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header value, if that is what it is."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


service_only = require(Role.service)
operator_only = require(Role.operator)
any_reader = require(*READERS)


def etagged(request: Request, model: BaseModel) -> Response:
    """The model as JSON with a strong ETag; 304 when the client already has this version."""
    body = model.model_dump_json().encode()
    tag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    inm = request.headers.get("if-none-match", "")
    if tag in (t.strip().removeprefix("W/") for t in inm.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def ratelimit_headers(limit: int, remaining: int, reset_s: int) -> list[tuple[bytes, bytes]]:
    """A key's token-bucket state as raw ``X-RateLimit-*`` response headers."""
    return [
        (b"x-ratelimit-limit", str(limit).encode()),
        (b"x-ratelimit-remaining", str(remaining).encode()),
        (b"x-ratelimit-reset", str(reset_s).encode()),
    ]


class RateLimitHeaders:
    """Pure ASGI middleware: copies the bucket state the auth dependency left in the request
    state into ``X-RateLimit-*`` headers (also on responses a handler built itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = scope.get("state") or {}
                info = state.get("ratelimit")
                if info is not None:
                    headers = [*message.get("headers", []), *ratelimit_headers(*info)]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
