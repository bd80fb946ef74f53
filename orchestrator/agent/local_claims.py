"""The book of local claims: engine slots on this host that the proxy's fallback path reserved.

A claim is reserved before it is answered (atomic on the event loop), expires after its TTL
unless confirmed, and may carry the session's ``stat_url`` so the agent can collect stats.
With a state file, claims survive an agent restart, so busy engines are never mistaken for idle.
An unconfirmed claim read back at start gets its whole TTL again: while the agent was down no
proxy could confirm it (the proxy retries its confirm), and expiring it at once would hand out
an engine that may already serve the session.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from acefleet import logs

log = logs.get(__name__)


@dataclass
class Claim:
    claim_id: str
    content_key: str
    proxy_id: str
    engine_id: str
    created_wall: float
    expires_wall: float | None  # None once confirmed
    stat_url: str | None = None

    @property
    def confirmed(self) -> bool:
        return self.expires_wall is None


class ClaimBook:
    def __init__(self, ttl_s: float, state_file: str = "") -> None:
        self.ttl_s = ttl_s
        self.path = Path(state_file) if state_file else None
        self.claims: dict[str, Claim] = {}

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text())
            self.claims = {c["claim_id"]: Claim(**c) for c in raw.get("claims", [])}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("claims_state_unreadable", path=str(self.path), error=str(exc))
            return
        renewed = time.time() + self.ttl_s
        for claim in self.claims.values():
            if claim.expires_wall is not None:
                claim.expires_wall = max(claim.expires_wall, renewed)

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"claims": [asdict(c) for c in self.claims.values()]}))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("claims_state_unwritable", path=str(self.path), error=str(exc))

    def add(self, content_key: str, proxy_id: str, engine_id: str) -> Claim:
        now = time.time()
        claim = Claim(uuid.uuid4().hex, content_key, proxy_id, engine_id, now, now + self.ttl_s)
        self.claims[claim.claim_id] = claim
        self.save()
        return claim

    def confirm(self, claim_id: str, stat_url: str | None) -> Claim | None:
        claim = self.claims.get(claim_id)
        if claim is None:
            return None
        claim.expires_wall = None
        if stat_url:
            claim.stat_url = stat_url
        self.save()
        return claim

    def release(self, claim_id: str) -> Claim | None:
        claim = self.claims.pop(claim_id, None)
        if claim is not None:
            self.save()
        return claim

    def for_engine(self, engine_id: str) -> list[Claim]:
        return [c for c in self.claims.values() if c.engine_id == engine_id]

    def drop_engine(self, engine_id: str) -> list[Claim]:
        gone = self.for_engine(engine_id)
        for c in gone:
            del self.claims[c.claim_id]
        if gone:
            self.save()
        return gone

    def expire(self) -> list[Claim]:
        now = time.time()
        gone = [c for c in self.claims.values() if c.expires_wall and c.expires_wall <= now]
        for c in gone:
            del self.claims[c.claim_id]
        if gone:
            self.save()
        return gone
