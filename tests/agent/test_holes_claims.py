"""An unconfirmed local claim read back from the state file after an agent restart gets its whole
TTL again (issue 16): while the agent was down no proxy could confirm it, so a claim whose TTL
ran out meanwhile must wait for the proxy's retried confirm, not free its engine at once. A real
state file on disk, written by one ClaimBook and read by the next, as across a restart."""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.agent.local_claims import ClaimBook


def test_a_claim_read_back_after_a_restart_gets_its_ttl_again(tmp_path: Path) -> None:
    state = tmp_path / "claims.json"
    before = ClaimBook(ttl_s=30, state_file=str(state))
    claim = before.add("id:live", "proxy-1", "engine-1")
    confirmed = before.add("id:other", "proxy-1", "engine-2")
    before.confirm(confirmed.claim_id, None)
    # the agent was down longer than the TTL: the claim's expiry is in the past on disk
    claim.expires_wall = time.time() - 5
    before.save()

    after = ClaimBook(ttl_s=30, state_file=str(state))
    after.load()
    assert after.expire() == []
    renewed = after.claims[claim.claim_id].expires_wall
    assert renewed is not None
    assert renewed > time.time() + 20
    assert after.claims[confirmed.claim_id].confirmed  # a confirmed claim never expires
    # and the confirm that arrives now is acknowledged
    assert after.confirm(claim.claim_id, None) is not None
