"""The agent step: claims from the local acefleet-agent, the fallback when central cannot answer.

The agent only knows its own host's engines, so this step can break the one-session-per-channel
rule across edges; that is the price of serving new channels while central is away. Its claims
expire unless confirmed, so a live upstream confirms its claim (``confirm``, via the chain),
retried until the agent acknowledges it (200) or says the claim is gone (404) or the session
ends: a lost confirm must not let the claim expire under a live session. A release that fails
(agent restarting) is retried until it lands or the claim would have expired.

The agent also hears about every live session (central's claims, the static list, and its own
claims too: whatever happens to a claim, an engine serving a live session stays counted busy and
is never handed out again): ``report_session`` puts the session's engine and ``stat_url`` at
``PUT /v1/sessions/{id}`` so the agent polls its stats, and ``end_session`` deletes it when the
upstream ends (retried like a release). The reports are a lease: every
``agent_session_refresh_s`` the live ones are put again (``refresh_sessions``), so an agent
that restarted learns them back, and the agent drops a session not re-reported within its
``session_ttl_s`` (a proxy that died cannot keep an engine counted busy).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
from typing import Any

import httpx
from pydantic import ValidationError

from acefleet import logs
from acefleet.wire import SessionReport
from proxy.control.peer import ControlPeer
from proxy.placement import Placement, Unavailable
from proxy.placement.circuit import Breaker
from proxy.placement.claim_call import ClaimClient

log = logs.get(__name__)

_RELEASE_TRIES = 20
_RELEASE_RETRY_S = 3.0
# a refused or lost confirm is sent again after these pauses (the last one repeats)
_CONFIRM_RETRY_S = (0.5, 1.0, 2.0, 3.0)


class AgentPlacer(ClaimClient):
    def __init__(self, peer: ControlPeer, breaker: Breaker) -> None:
        super().__init__(peer, breaker)
        self.tasks: set[asyncio.Task[None]] = set()
        # id(placement) → (placement, session id) of the sessions reported to the agent; the
        # placement is held so its id is not reused while it is here (two placements on one
        # static engine compare equal, so they are told apart by identity).
        self.reported: dict[int, tuple[Placement, str, dict[str, Any]]] = {}
        self.confirming: set[str] = set()  # claim ids whose confirm is not acknowledged yet

    async def place(self, content_key: str, avoid: frozenset[str] = frozenset()) -> Placement:
        return await self._place(content_key, avoid, standby=False)

    async def place_standby(self, content_key: str, avoid: frozenset[str]) -> Placement:
        """A warm standby's engine: another of the agent's engines, none in ``avoid``."""
        return await self._place(content_key, avoid, standby=True)

    async def _place(self, content_key: str, avoid: frozenset[str], *, standby: bool) -> Placement:
        if not self.breaker.allow():
            raise Unavailable("agent_breaker_open", "the local agent failed recently; not asked")
        resp = await self._claim(content_key, avoid, standby=standby)
        if resp.status_code in (200, 201):
            self.breaker.success()
            grant = self._grant(resp)
            if grant.engine is None:
                raise Unavailable("agent_bad_answer", "agent granted a claim without an engine")
            return Placement(
                source="agent",
                engine=grant.engine.endpoint,
                claim_id=grant.claim_id,
                engine_id=grant.engine.id,
            )
        if resp.status_code >= 500 and resp.status_code != 503:
            self.breaker.failure()
        else:
            self.breaker.success()
        code, message, _ = self._error_of(resp)
        raise Unavailable(code, f"agent: {message}", retry_after_s=5.0)

    async def release(self, placement: Placement, reason: str) -> None:
        if placement.claim_id is None:
            return
        self.confirming.discard(placement.claim_id)  # a confirm still being retried stops
        if not await self._delete(placement.claim_id):
            self._spawn(self._release_later(placement.claim_id))

    async def _delete(self, claim_id: str) -> bool:
        try:
            resp = await self.peer.http.delete(
                self.peer.url(f"/v1/claims/{claim_id}"),
                headers=self.peer.headers,
                timeout=self.peer.timeout_s,
            )
        except httpx.HTTPError:
            return False
        return resp.status_code in (204, 404)

    async def _release_later(self, claim_id: str) -> None:
        # A confirmed agent claim never expires: a lost release would pin the engine for good.
        for _ in range(_RELEASE_TRIES):
            await asyncio.sleep(_RELEASE_RETRY_S)
            if await self._delete(claim_id):
                return
        log.warning("agent_release_gave_up", claim_id=claim_id)

    def confirm(self, placement: Placement, stat_url: str | None) -> None:
        """The upstream on an agent claim is live: the claim must no longer expire, and the
        session's ``stat_url`` lets the agent poll its stats."""
        if placement.source == "agent" and placement.claim_id:
            self.confirming.add(placement.claim_id)
            self._spawn(self._confirm(placement.claim_id, stat_url))

    async def _confirm(self, claim_id: str, stat_url: str | None) -> None:
        """Confirm until the agent acknowledges (200), or answers that the claim is gone (404:
        expired meanwhile; the session report keeps the engine counted busy), or the session
        ends (``release`` takes the id out of ``confirming``)."""
        for attempt in itertools.count():
            if attempt:
                await asyncio.sleep(_CONFIRM_RETRY_S[min(attempt, len(_CONFIRM_RETRY_S)) - 1])
            if claim_id not in self.confirming:
                return
            status: int | str
            try:
                resp = await self.peer.http.post(
                    self.peer.url(f"/v1/claims/{claim_id}/confirm"),
                    json={"stat_url": stat_url} if stat_url else {},
                    headers=self.peer.headers,
                    timeout=self.peer.timeout_s,
                )
                status = resp.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if status in (200, 404):
                self.confirming.discard(claim_id)
                if status == 404:
                    log.warning("agent_claim_gone_while_live", claim_id=claim_id)
                elif attempt:
                    log.info("agent_confirm_landed", claim_id=claim_id, attempts=attempt + 1)
                return
            if not attempt:
                log.warning("agent_confirm_failed", claim_id=claim_id, status=status)

    def report_session(self, placement: Placement, stat_url: str) -> None:
        """A session the agent did not place is live on ``placement``'s engine. Must not block."""
        if placement.engine is None or id(placement) in self.reported:
            return
        try:
            report = SessionReport(
                engine_id=placement.engine_id, endpoint=placement.engine, stat_url=stat_url
            )
        except ValidationError:
            log.info("agent_session_unreportable", engine=placement.engine)  # an odd stat_url
            return
        session_id = uuid.uuid4().hex
        body = report.model_dump(mode="json", exclude_none=True)
        self.reported[id(placement)] = (placement, session_id, body)
        self._spawn(self._put_session(session_id, body))

    def start_refresh(self, interval_s: float) -> None:
        self._spawn(self.refresh_sessions(interval_s))

    async def refresh_sessions(self, interval_s: float) -> None:
        """Re-report the live sessions every ``interval_s`` (the agent's lease on them)."""
        while True:
            await asyncio.sleep(interval_s)
            # A session that ends meanwhile may be put once more after its delete: the agent's
            # lease drops it again (session_ttl_s).
            live = list(self.reported.values())
            await asyncio.gather(
                *(self._put_session(sid, body, quiet=True) for _, sid, body in live)
            )

    async def _put_session(
        self, session_id: str, body: dict[str, Any], *, quiet: bool = False
    ) -> None:
        """Report one session; ``quiet`` for the re-reports (an agent that is down would log
        every session every round)."""
        try:
            resp = await self.peer.http.put(
                self.peer.url(f"/v1/sessions/{session_id}"),
                json=body,
                headers=self.peer.headers,
                timeout=self.peer.timeout_s,
            )
        except httpx.HTTPError as exc:
            if not quiet:
                log.info(
                    "agent_session_report_failed", session=session_id, error=type(exc).__name__
                )
            return
        if resp.status_code not in (200, 201) and not quiet:
            # 404: an engine this agent does not manage (a static entry elsewhere): no stats.
            log.info("agent_session_refused", session=session_id, status=resp.status_code)

    def end_session(self, placement: Placement) -> None:
        """The upstream on ``placement`` ended: the agent stops polling it. Must not block."""
        held = self.reported.pop(id(placement), None)
        if held is not None and held[0] is placement:
            self._spawn(self._end_session(held[1]))

    async def _end_session(self, session_id: str) -> None:
        for attempt in range(_RELEASE_TRIES):
            if attempt:
                await asyncio.sleep(_RELEASE_RETRY_S)
            try:
                resp = await self.peer.http.delete(
                    self.peer.url(f"/v1/sessions/{session_id}"),
                    headers=self.peer.headers,
                    timeout=self.peer.timeout_s,
                )
            except httpx.HTTPError:
                continue
            if resp.status_code in (204, 404):
                return
        log.warning("agent_session_end_gave_up", session=session_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
