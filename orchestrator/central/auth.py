"""API keys with roles, and a token bucket per key (its state goes out as rate-limit headers).

Roles: ``service`` (agents and proxies: heartbeats, claims, events, snapshots), ``operator``
(read everything, drain, scale) and ``viewer`` (read only). Every mutating call needs a key of
the right role; reads need any key.
"""

from __future__ import annotations

import hmac
import math
import time
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.central.settings import CentralSettings


class Role(StrEnum):
    service = "service"
    operator = "operator"
    viewer = "viewer"


READERS = frozenset(Role)


@dataclass(slots=True)
class Bucket:
    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def reset_in(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.burst - self.tokens) / self.rate)


@dataclass(slots=True, frozen=True)
class Verdict:
    role: Role | None  # None: the key is unknown
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: float


class KeyRing:
    def __init__(self, settings: CentralSettings) -> None:
        self._roles: dict[str, Role] = {}
        for role, keys in (
            (Role.service, settings.service_keys),
            (Role.operator, settings.operator_keys),
            (Role.viewer, settings.viewer_keys),
        ):
            for key in keys:
                self._roles[key] = role
        self._rates = {
            Role.service: settings.service_rate_limit_rps,
            Role.operator: settings.rate_limit_rps,
            Role.viewer: settings.rate_limit_rps,
        }
        self._buckets: dict[str, Bucket] = {}

    def role_of(self, key: str) -> Role | None:
        role = self._roles.get(key)
        if role is not None:
            return role
        # Unknown keys are rare; compare in constant time so a probe learns nothing from timing.
        for known, known_role in self._roles.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return known_role
        return None

    def check(self, key: str) -> Verdict:
        role = self.role_of(key)
        if role is None:
            return Verdict(None, False, 0, 0, 0, 0.0)
        now = time.monotonic()
        bucket = self._buckets.get(key)
        rate = self._rates[role]
        burst = max(1.0, 2 * rate)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(rate, burst, burst, now)
        allowed = bucket.take(now)
        retry = 0.0 if allowed else (1 - bucket.tokens) / rate
        return Verdict(
            role,
            allowed,
            int(burst),
            int(bucket.tokens),
            math.ceil(bucket.reset_in()),
            retry,
        )
