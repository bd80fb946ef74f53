"""A circuit breaker for the proxy's control-plane calls (central, agent).

A claim must never wait on a peer that has just proven unreachable: after ``failures`` failed
calls in a row the breaker opens and callers skip the peer for ``open_s`` seconds; then one call
is let through (half-open) and its outcome closes or re-opens the breaker.
"""

from __future__ import annotations

import time


class Breaker:
    def __init__(self, failures: int, open_s: float) -> None:
        self.threshold = failures
        self.open_s = open_s
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.trial else "open"

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if not self.trial and time.monotonic() - self.opened_at >= self.open_s:
            self.trial = True  # exactly one caller probes the peer
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial = False

    def failure(self) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            self.trial = False
