"""Who may release a claim, and who may see claim ids.

A claim belongs to the service key name it was handed to (``Claim.owner``): a service instance
may release only its own claims (403 ``not_claim_owner`` otherwise), an operator may release any
(the audit log records it). Claim ids are capabilities (a DELETE with one ends a stream), so the
views show them to operators, to a service only for its own claims, and never to viewers.
"""

from __future__ import annotations

from orchestrator.central.auth import Principal, Role
from orchestrator.central.claim_book import Claim, ClaimBook
from orchestrator.central.http import ApiError


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
