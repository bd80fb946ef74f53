"""Central's claim book: which engine serves which content, reserved before central answers.

Everything here is synchronous and runs on the event loop without awaiting, so one claim
request is decided and reserved before the next one is looked at: two concurrent requests can
never be handed the same slot. Nothing on this path touches the database.

One content is served by at most one engine session in the whole fleet (an engine allows one
session per content, and a second upstream of the same channel would be waste): every other edge
asking for it is told to relay from the edge that has it. The one exception is a warm standby:
a ``standby`` engine claim holds a slot on another engine (counted in its load) but is not the
content's claim (``for_content`` never answers it) until ``promote`` makes it so.

A claim's ``owner`` is the name of the service key it was handed to (see
:mod:`orchestrator.central.claim_owner`); only that key, or an operator, may release it. The book
also remembers which key name speaks for which proxy id (``proxies``), as the proxy's streams
(events, snapshots) end claims too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

ClaimKind = Literal["engine", "relay"]


@dataclass(slots=True)
class Claim:
    id: str
    kind: ClaimKind
    content_key: str
    host: str  # engine claims: the engine's host; relay claims: the asking host
    asked_by: str  # the host whose proxy asked
    proxy_id: str
    created: float
    created_at: datetime
    expires: float | None  # None once confirmed by a stream_started event
    engine_id: str | None = None
    relay_from: str | None = None  # relay claims: the edge that serves the content
    stream_id: str | None = None
    keys: set[str] = field(default_factory=set)  # content key plus aliases (infohash)
    standby: bool = False  # a warm standby's engine, not (yet) the content's claim
    owner: str = ""  # the key name it was handed to; "" until a service takes it

    @property
    def confirmed(self) -> bool:
        return self.expires is None


class ClaimBook:
    """All live claims, indexed by id, by content key and by engine."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.claims: dict[str, Claim] = {}
        self.by_content: dict[str, str] = {}
        self.by_engine: dict[str, set[str]] = {}
        self.proxies: dict[str, str] = {}  # proxy id -> the key name that first spoke for it
        # proxy id -> its claims without an owner yet (rebuilt from its events or snapshot):
        # ``adopt`` runs for every event batch, and walking every claim there cost ~5 % of the
        # claim loop at 600 claims/s (bench/results/central.md).
        self._unowned: dict[str, set[str]] = {}
        # host -> how often the engine claims on its engines changed (reserved, confirmed,
        # released): placement keeps a host's engines with room until this moves (HostFits).
        self.changes: dict[str, int] = {}

    def held(self, engine_id: str) -> int:
        """Claims (pending or confirmed) on an engine."""
        held = self.by_engine.get(engine_id)
        return len(held) if held else 0

    def load(self, engine_id: str, reported: int) -> int:
        """Sessions an engine carries or is promised: the agent's count already includes the
        confirmed claims (or will, a heartbeat later); pending ones come on top of it."""
        held = self.by_engine.get(engine_id)
        if not held:
            return reported
        pending = 0
        for cid in held:
            if self.claims[cid].expires is not None:
                pending += 1
        return max(reported, len(held) - pending) + pending

    def for_content(self, key: str, now: float) -> Claim | None:
        cid = self.by_content.get(key)
        if cid is None:
            return None
        claim = self.claims[cid]
        if claim.expires is not None and claim.expires <= now:
            self.release(cid)
            return None
        return claim

    def reserve(
        self,
        *,
        kind: ClaimKind,
        content_key: str,
        host: str,
        asked_by: str,
        proxy_id: str,
        now: float,
        engine_id: str | None = None,
        relay_from: str | None = None,
        confirmed: bool = False,
        claim_id: str | None = None,
        standby: bool = False,
    ) -> Claim:
        claim = Claim(
            id=claim_id or uuid.uuid4().hex,
            kind=kind,
            content_key=content_key,
            host=host,
            asked_by=asked_by,
            proxy_id=proxy_id,
            created=now,
            created_at=datetime.now(UTC),
            expires=None if confirmed else now + self.ttl,
            engine_id=engine_id,
            relay_from=relay_from,
            standby=standby,
        )
        self.claims[claim.id] = claim
        if proxy_id:
            self._unowned.setdefault(proxy_id, set()).add(claim.id)
        if kind == "engine" and engine_id is not None:
            self.by_engine.setdefault(engine_id, set()).add(claim.id)
            self.alias(claim, content_key)
            self._changed(claim)
        return claim

    def alias(self, claim: Claim, key: str) -> None:
        """Index an engine claim under another key of the same content (its infohash)."""
        if claim.kind != "engine":
            return
        claim.keys.add(key)
        if not claim.standby:
            self.by_content.setdefault(key, claim.id)

    def promote(self, claim: Claim) -> None:
        """A standby became its content's primary session: it is the content's claim now (the
        old primary's claim, if still held, is released by its own stream_ended)."""
        claim.standby = False
        for key in claim.keys:
            self.by_content[key] = claim.id

    def engines_of(self, key: str) -> set[str]:
        """Engines holding an engine claim (primary or standby) of the content ``key``."""
        return {
            c.engine_id
            for c in self.claims.values()
            if c.kind == "engine" and c.engine_id is not None and key in c.keys
        }

    def speaks_for(self, proxy_id: str, name: str) -> bool:
        """Whether the key ``name`` may speak for ``proxy_id``: the first key name to use a
        proxy id keeps it while central runs (a restart learns it again from the proxy)."""
        return self.proxies.setdefault(proxy_id, name) == name

    def own(self, claim_id: str, owner: str) -> None:
        """The claim was handed to ``owner``; a claim already owned keeps its owner (another
        service naming the same host and content gets the grant, never the claim)."""
        claim = self.claims.get(claim_id)
        if claim is not None and not claim.owner:
            claim.owner = owner
            self._drop_unowned(claim)

    def adopt(self, proxy_id: str, owner: str) -> None:
        """Claims rebuilt from a proxy's snapshot or events (after a restart of central) belong
        to the key that sent them."""
        for cid in self._unowned.pop(proxy_id, ()):
            claim = self.claims.get(cid)
            if claim is not None and not claim.owner and claim.proxy_id == proxy_id:
                claim.owner = owner

    def redeem(self, claim: Claim, proxy_id: str) -> None:
        """A reservation made for another edge's relay is taken up by that edge's proxy."""
        claim.proxy_id = proxy_id
        if not claim.owner:
            self._unowned.setdefault(proxy_id, set()).add(claim.id)

    def _changed(self, claim: Claim) -> None:
        # An engine claim's host is its engine's host (rebuilt claims of an engine central
        # has not seen yet take the proxy's host, where a proxy's engines run).
        self.changes[claim.host] = self.changes.get(claim.host, 0) + 1

    def _drop_unowned(self, claim: Claim) -> None:
        unowned = self._unowned.get(claim.proxy_id)
        if unowned is not None:
            unowned.discard(claim.id)
            if not unowned:
                del self._unowned[claim.proxy_id]

    def confirm(self, claim: Claim, stream_id: str) -> None:
        if claim.expires is not None:
            self._changed(claim)  # a pending claim counts apart in the engine's load
        claim.expires = None
        claim.stream_id = stream_id

    def extend(self, claim: Claim, now: float) -> None:
        if claim.expires is not None:
            claim.expires = now + self.ttl

    def release(self, claim_id: str) -> Claim | None:
        claim = self.claims.pop(claim_id, None)
        if claim is None:
            return None
        self._drop_unowned(claim)  # gone: nothing left to adopt
        for key in claim.keys:
            if self.by_content.get(key) == claim_id:
                del self.by_content[key]
        if claim.engine_id is not None:
            held = self.by_engine.get(claim.engine_id)
            if held is not None:
                held.discard(claim_id)
                if not held:
                    del self.by_engine[claim.engine_id]
                self._changed(claim)
        return claim

    def expire(self, now: float) -> list[Claim]:
        due = [c.id for c in self.claims.values() if c.expires is not None and c.expires <= now]
        return [c for c in (self.release(cid) for cid in due) if c is not None]

    def pending_on_engine(self, engine_id: str) -> list[Claim]:
        return [
            self.claims[cid]
            for cid in self.by_engine.get(engine_id, ())
            if not self.claims[cid].confirmed
        ]
