"""The service hot paths without FastAPI's per-request machinery.

``POST /v1/claims`` and ``DELETE /v1/claims/{id}`` decide how fast a new channel starts;
``POST /v1/hosts/{host}/heartbeat`` and ``POST /v1/events`` are most of central's traffic (with
500 edges and 250 claims/s, ~250 heartbeats and ~250 event batches a second). Through FastAPI
(routing, dependency solving, response validation) each cost several times the work itself,
and that CPU was what made claims queue (bench/results/central.md, issue 17). This ASGI
middleware answers the well-formed, authorised ones directly with the same bodies, headers and
status codes, through the same functions as the routes (``api/services.py``). Anything else —
no key, another role, a query string, an unreadable or invalid body, a heartbeat or batch over
``_MAX_REPORT_BODY`` — is handed on, body included, to the FastAPI routes, which stay the
documented (OpenAPI) definition and produce the precise error. A claim body over 16 KiB is
answered 413 here (the route documents it): handing on a truncated body would be judged as the
wrong request. The claim owner rule of :mod:`.claim_owner` holds here as on the route.

It runs in front of FastAPI's whole stack (``app.CentralApp``), so a bug in what it calls is
answered here as FastAPI's crash handler would (500 ``internal_error``, details in the log).
"""

from __future__ import annotations

import re

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acefleet import logs
from acefleet.errors import ServiceError, error_json
from acefleet.wire import ClaimRequest, ErrorDetail, EventBatch, Heartbeat
from orchestrator.central.api.services import take_events, take_heartbeat
from orchestrator.central.auth import KeyRing, Principal, Role, Verdict
from orchestrator.central.claim_owner import may_release, not_claim_owner
from orchestrator.central.http import (
    ApiError,
    bearer_token,
    claim_refused,
    rate_limited,
    ratelimit_headers,
    unknown_claim,
)
from orchestrator.central.state import Central

log = logs.get(__name__)
_RELEASE = re.compile(r"^/v1/claims/([^/]{1,100})$")
_HEARTBEAT = re.compile(r"^/v1/hosts/([^/]{1,200})/heartbeat$")
_MAX_BODY = 16 * 1024
# Heartbeats of many engines and batches of up to 200 events: larger ones go to the route.
_MAX_REPORT_BODY = 1024 * 1024
_JSON = (b"content-type", b"application/json")


class ServiceFastPath:
    def __init__(self, app: ASGIApp, central: Central, keyring: KeyRing) -> None:
        self.app = app
        self.central = central
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "DELETE"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/v1/claims"):
            await self._claims(scope, receive, send)
            return
        if scope["method"] == "POST":
            heartbeat = _HEARTBEAT.match(path)
            if heartbeat is not None or path == "/v1/events":
                await self._report(scope, receive, send, heartbeat)
                return
        await self.app(scope, receive, send)

    def _service(self, scope: Scope) -> tuple[str, Principal] | None:
        """The key and caller of a request this path may answer: a service key, in a header,
        with no query string (anything else gets the route's full explanation)."""
        key = _key(scope)
        who = self.keyring.identify(key) if key is not None else None
        if key is None or who is None or who.role is not Role.service or scope["query_string"]:
            return None
        return key, who

    async def _report(
        self, scope: Scope, receive: Receive, send: Send, heartbeat: re.Match[str] | None
    ) -> None:
        """A heartbeat (``heartbeat`` is its path's match) or an event batch."""
        caller = self._service(scope)
        if caller is None:
            await self.app(scope, receive, send)
            return
        key, who = caller
        body, complete, more = await _read_body(receive, _MAX_REPORT_BODY)
        if not complete:
            if len(body) > _MAX_REPORT_BODY:
                await self.app(scope, _replay(body, receive, more=more), send)
            return  # else the client went away: nobody to answer
        try:
            report = (Heartbeat if heartbeat else EventBatch).model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # 422 naming each bad field
            return
        verdict = self.keyring.check(key)
        if not verdict.allowed:
            await _send_error(send, rate_limited(verdict), verdict)
            return
        try:
            if isinstance(report, Heartbeat):
                assert heartbeat is not None
                answer = take_heartbeat(self.central, heartbeat.group(1), report).model_dump_json()
            else:
                answer = take_events(self.central, report, who).model_dump_json()
        except ApiError as exc:
            await _send_error(send, exc, verdict)
            return
        except Exception as exc:
            await _crashed(send, scope, exc)
            return
        await _respond(send, 200, answer.encode(), verdict)

    async def _claims(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        release = _RELEASE.match(path) if method == "DELETE" else None
        if not (release or (method == "POST" and path == "/v1/claims")):
            await self.app(scope, receive, send)
            return
        caller = self._service(scope)
        if caller is None:
            # 401/403 with the full explanation; an operator's release; a key in the URL (400)
            await self.app(scope, receive, send)
            return
        key, who = caller
        body, complete, _more = await _read_body(receive, _MAX_BODY)
        if not complete:
            if len(body) > _MAX_BODY:
                verdict = self.keyring.check(key)
                await _send_error(send, body_too_large(), verdict)
            return  # else the client went away: nobody to answer
        if release is not None:
            verdict = self.keyring.check(key)
            if not verdict.allowed:
                await _send_error(send, rate_limited(verdict), verdict)
                return
            try:
                refused = self._release(release.group(1), who)
            except Exception as exc:
                await _crashed(send, scope, exc)
                return
            if refused is not None:
                await _send_error(send, refused, verdict)
            else:
                await _respond(send, 204, b"", verdict)
            return
        try:
            req = ClaimRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # 422 naming each bad field
            return
        verdict = self.keyring.check(key)
        if not verdict.allowed:
            await _send_error(send, rate_limited(verdict), verdict)
            return
        try:
            answer = self.central.claim(req)
            if not isinstance(answer, ErrorDetail):
                self.central.book.own(answer.claim_id, who.name)
        except Exception as exc:
            await _crashed(send, scope, exc)
            return
        if isinstance(answer, ErrorDetail):
            refusal = claim_refused(answer, self.central.settings.claim_retry_after_s)
            await _send_error(send, refusal, verdict)
            return
        await _respond(send, 200, answer.model_dump_json().encode(), verdict)

    def _release(self, claim_id: str, who: Principal) -> ApiError | None:
        """Release the claim, or why not."""
        held = self.central.book.claims.get(claim_id)
        if held is None:
            return unknown_claim(claim_id)
        if not may_release(held, who):
            return not_claim_owner(claim_id)
        self.central.release(claim_id)
        return None


async def _crashed(send: Send, scope: Scope, exc: Exception) -> None:
    """A bug, answered as FastAPI's crash handler answers one (acefleet/api_errors.py): that
    answer comes from outside the rate-limit layer, so it carries no rate-limit headers."""
    log.exception("unhandled error", path=scope["path"], exc_info=exc)
    body = error_json("internal_error", "internal error; the service log has the details")
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def body_too_large() -> ApiError:
    return ApiError(413, "body_too_large", f"a claim body is at most {_MAX_BODY} bytes")


def _key(scope: Scope) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1") or None
        if name == b"authorization" and (token := bearer_token(value.decode("latin-1"))):
            return token
    return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool, bool]:
    """The request body; whether it was read whole (False: over ``limit``, then what was read
    so far, or a disconnect); and whether more of it is still to come. The chunk that crosses
    the limit may be the last one: replaying it as "more to come" would leave the route
    waiting for a body that never comes (seen as a rare read timeout in the tests)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False, False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = bool(message.get("more_body", False))
        if size > limit:
            return b"".join(chunks), False, more
        if not more:
            return b"".join(chunks), True, False


def _replay(body: bytes, receive: Receive, more: bool = False) -> Receive:
    """A receive callable that yields the already-read body first (``more``: only its start,
    the rest still to come), then the original stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _send_error(send: Send, error: ServiceError, verdict: Verdict) -> None:
    """The error as the FastAPI handlers would render it: same body, same extra headers."""
    body = error_json(error.code, error.message, error.retry_after_s)
    extra = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in error.response_headers().items()
    ]
    await _respond(send, error.status, body, verdict, extra)


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
