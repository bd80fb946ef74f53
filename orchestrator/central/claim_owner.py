"""Who may release a claim, and who may see claim ids.

A claim belongs to the service key name it was handed to (``Claim.owner``): a service instance
may release only its own claims (403 ``not_claim_owner`` otherwise), an operator may release any
(the audit log records it). Claim ids are capabilities (a DELETE with one ends a stream), so the
views show them to operators, to a service only for its own claims, and never to viewers.

A proxy's events and snapshots end streams and so release claims as well: a proxy id belongs to
the first key name that speaks for it (403 ``not_proxy_owner``), and an event on another proxy's
stream, or starting a stream on another key's claim, is refused (its result is an error; the
rest of the batch is applied, so a proxy's event queue never stalls on one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from acefleet.wire import ErrorDetail, EventBatch
from orchestrator.central.auth import Principal, Role
from orchestrator.central.claim_book import Claim, ClaimBook
from orchestrator.central.http import ApiError


class _Stream(Protocol):
    @property
    def proxy_id(self) -> str: ...


def may_release(claim: Claim, who: Principal) -> bool:
    return who.role is Role.operator or (who.role is Role.service and claim.owner == who.name)


def not_claim_owner(claim_id: str) -> ApiError:
    return ApiError(
        403,
        "not_claim_owner",
        f"claim {claim_id!r} belongs to another service instance (an operator may release it)",
    )


def may_see(book: ClaimBook, claim_id: str | None, who: Principal) -> bool:
    """Whether ``who`` may see this claim id in a view."""
    if claim_id is None or who.role is Role.operator:
        return True
    if who.role is Role.viewer:
        return False
    claim = book.claims.get(claim_id)
    return claim is not None and claim.owner == who.name


def not_proxy_owner(proxy_id: str) -> ApiError:
    return ApiError(
        403,
        "not_proxy_owner",
        f"proxy id {proxy_id!r} belongs to another service key (each proxy has its own key)",
    )


def foreign_events(
    book: ClaimBook, streams: Mapping[str, _Stream], batch: EventBatch, who: Principal
) -> dict[str, ErrorDetail]:
    """The events of a batch ``who`` may not send, by event id, with why: an event on another
    proxy's stream, or one starting a stream on another key's claim. (The batch's proxy id is
    checked before, with :meth:`ClaimBook.speaks_for`.)"""
    refused: dict[str, ErrorDetail] = {}
    for ev in batch.events:
        stream = streams.get(ev.stream_id)
        claim = book.claims.get(ev.claim_id) if ev.claim_id else None
        if stream is not None and stream.proxy_id != batch.proxy_id:
            refused[ev.event_id] = ErrorDetail(
                code="not_stream_owner", message=f"stream {ev.stream_id!r} is another proxy's"
            )
        elif claim is not None and claim.owner not in ("", who.name):
            refused[ev.event_id] = ErrorDetail(
                code="not_claim_owner", message=f"claim {claim.id!r} is another service's"
            )
    return refused
