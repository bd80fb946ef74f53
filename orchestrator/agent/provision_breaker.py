"""The provisioning circuit breaker: repeated provisioning failures open it, a half-open trial
closes it (the rule for when the agent stops trying to create engines)."""

from __future__ import annotations

import time
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class Breaker:
    def __init__(self, threshold: int, backoff_s: float, backoff_max_s: float) -> None:
        self.threshold = threshold
        self.backoff_first = backoff_s
        self.backoff_max = backoff_max_s
        self.state: BreakerState = "closed"
        self.failures = 0  # in a row
        self.failures_total = 0
        self.reason: str | None = None
        self.code: str | None = None
        self._backoff = backoff_s
        self._open_until = 0.0
        self._trial_running = False

    def retry_in(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return max(0.0, self._open_until - now) if self.state == "open" else 0.0

    def current(self, now: float | None = None) -> BreakerState:
        now = time.monotonic() if now is None else now
        if self.state == "open" and now >= self._open_until:
            self.state = "half_open"
        return self.state

    def allow(self, now: float | None = None) -> bool:
        """May one provisioning attempt start now? In half-open, exactly one trial runs."""
        state = self.current(now)
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        self.state = "closed"
        self.failures = 0
        self.reason = self.code = None
        self._backoff = self.backoff_first
        self._trial_running = False

    def failure(self, code: str, reason: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.failures += 1
        self.failures_total += 1
        self.code, self.reason = code, reason
        if self.state == "half_open":
            # The trial failed: wait longer before the next one.
            self._backoff = min(self._backoff * 2, self.backoff_max)
            self._open(now)
        elif self.failures >= self.threshold:
            self._open(now)
        self._trial_running = False

    def _open(self, now: float) -> None:
        self.state = "open"
        self._open_until = now + self._backoff
