"""API keys with names and roles, and a token bucket per key name (its state goes out as
rate-limit headers).

Roles: ``service`` (agents and proxies: heartbeats, claims, events, snapshots), ``operator``
(read everything, drain, scale) and ``viewer`` (read only). Every mutating call needs a key of
the right role; reads need any key.

Every key has a name, the *principal* it stands for: a configured entry ``<name>:<key>`` names
it, a bare key is named ``<role>-<first 8 hex of sha256(key)>``. One name may hold several keys
(rotation with overlap: add the new key under the same name, roll it out, drop the old one); the
name is what owns claims, what the audit log records and what the rate limit counts.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.central.settings import CentralSettings


class Role(StrEnum):
    service = "service"
    operator = "operator"
    viewer = "viewer"


READERS = frozenset(Role)
KEY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(slots=True, frozen=True)
class Principal:
    """Who a key stands for: a service instance (one proxy, one agent) or a person."""

    name: str
    role: Role


def parse_key(entry: str, role: Role) -> tuple[str, str]:
    """``(name, key)`` of a configured key entry: ``<name>:<key>``, or a bare key, which gets
    the name ``<role>-<first 8 hex of sha256(key)>``. A bare key that contains ``:`` after
    something shaped like a name would be read as named: such keys must be given a name."""
    name, sep, key = entry.partition(":")
    if sep and KEY_NAME.match(name):
        return name, key
    return f"{role.value}-{hashlib.sha256(entry.encode()).hexdigest()[:8]}", entry


def _digest(key: str) -> bytes:
    # Keys are looked up by digest: the lookup's timing says nothing about the key's bytes.
    return hashlib.sha256(key.encode()).digest()


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
    principal: Principal | None  # None: the key is unknown
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: float

    @property
    def role(self) -> Role | None:
        return self.principal.role if self.principal is not None else None


class KeyRing:
    def __init__(self, settings: CentralSettings) -> None:
        self._principals: dict[bytes, Principal] = {}
        for role, entries in (
            (Role.service, settings.service_keys),
            (Role.operator, settings.operator_keys),
            (Role.viewer, settings.viewer_keys),
        ):
            for name, key in (parse_key(entry, role) for entry in entries):
                self._principals[_digest(key)] = Principal(name, role)
        self._rates = {
            Role.service: settings.service_rate_limit_rps,
            Role.operator: settings.rate_limit_rps,
            Role.viewer: settings.rate_limit_rps,
        }
        self._buckets: dict[str, Bucket] = {}

    def identify(self, key: str) -> Principal | None:
        """The principal a key stands for; None for an unknown key."""
        return self._principals.get(_digest(key))

    def role_of(self, key: str) -> Role | None:
        principal = self.identify(key)
        return principal.role if principal is not None else None

    def names(self) -> Iterable[Principal]:
        """Every principal once (a name with several keys during a rotation counts once)."""
        return sorted(set(self._principals.values()), key=lambda p: (p.role, p.name))

    def check(self, key: str) -> Verdict:
        """Who the key is, and whether its name's bucket lets this request through."""
        principal = self.identify(key)
        if principal is None:
            return Verdict(None, False, 0, 0, 0, 0.0)
        now = time.monotonic()
        # One bucket per name: rotating keys (two live keys of one name) share one limit.
        bucket = self._buckets.get(principal.name)
        rate = self._rates[principal.role]
        burst = max(1.0, 2 * rate)
        if bucket is None:
            bucket = self._buckets[principal.name] = Bucket(rate, burst, burst, now)
        allowed = bucket.take(now)
        retry = 0.0 if allowed else (1 - bucket.tokens) / rate
        return Verdict(
            principal,
            allowed,
            int(burst),
            int(bucket.tokens),
            math.ceil(bucket.reset_in()),
            retry,
        )
