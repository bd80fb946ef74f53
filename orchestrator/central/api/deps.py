"""Per-request access to the app's live state, the caller's identity and the audit log (async:
a sync dependency costs a thread hop).

Every router also carries :func:`no_key_in_url`: an API key is never taken from a URL (URLs end
up in access logs, proxies' logs and browser history), and a request that puts one there is
refused with a clear error rather than answered as if no key was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.requests import HTTPConnection

from orchestrator.central.audit import AuditLog
from orchestrator.central.auth import KeyRing, Principal
from orchestrator.central.http import API_KEY_HEADER, ApiError, bearer_token
from orchestrator.central.state import Central

# Query parameter names clients (and old dashboards) use for a key.
KEY_PARAMS = frozenset({"api_key", "apikey", "api-key", "x-api-key", "key", "access_token"})


async def central(request: Request) -> Central:
    state: Central = request.app.state.central
    return state


def key_in_query(conn: HTTPConnection) -> str | None:
    """The name of a query parameter that carries an API key (by its name, or by its value
    being a live key), if any."""
    keyring: KeyRing = conn.app.state.keyring
    for name, value in conn.query_params.multi_items():
        if name.lower() in KEY_PARAMS or (value and keyring.identify(value) is not None):
            return name
    return None


def key_in_url_error(param: str) -> ApiError:
    # 401: the key is refused where it was put (as if none was sent), with the reason why.
    return ApiError(
        401,
        "key_in_url",
        f"API keys are never accepted in a URL (query parameter {param!r}): send the key in the "
        f"{API_KEY_HEADER} header (or Authorization: Bearer); a key that was sent in a URL may "
        "be in logs now, rotate it",
    )


async def no_key_in_url(request: Request) -> None:
    param = key_in_query(request)
    if param is not None:
        raise key_in_url_error(param)


def request_key(conn: HTTPConnection) -> str | None:
    return conn.headers.get(API_KEY_HEADER) or bearer_token(conn.headers.get("authorization", ""))


async def principal(request: Request) -> Principal:
    """Who the request's key stands for (after the route's role check admitted it)."""
    key = request_key(request)
    keyring: KeyRing = request.app.state.keyring
    who = keyring.identify(key) if key else None
    if who is None:
        raise ApiError(401, "unauthenticated", f"send an API key in the {API_KEY_HEADER} header")
    return who


Caller = Annotated[Principal, Depends(principal)]


def audit_log(app: FastAPI) -> AuditLog:
    """The app's audit log, made on first use (it writes through the history writer)."""
    log: AuditLog | None = getattr(app.state, "audit", None)
    if log is None:
        c: Central = app.state.central
        log = app.state.audit = AuditLog(c.history)
    return log


@dataclass(slots=True)
class Recorder:
    """Records the calling key's actions in the audit log."""

    log: AuditLog
    who: Principal
    client: str | None

    def __call__(self, action: str, target: str | int, **detail: Any) -> None:
        self.log.record(self.who, action, str(target), detail, self.client)


def client_address(request: Request) -> str:
    """The client's address: the peer, or behind a trusted balancer the last hop it added to
    X-Forwarded-For (earlier hops are the client's own claims and are not trusted)."""
    peer = request.client.host if request.client else "unknown"
    if peer in request.app.state.central.settings.trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if 0 < len(last) <= 64:
            return last
    return peer


async def recorder(request: Request, who: Caller) -> Recorder:
    return Recorder(audit_log(request.app), who, client_address(request))


Audit = Annotated[Recorder, Depends(recorder)]
