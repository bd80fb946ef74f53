"""Fault injection (``--chaos``): stall, slow, cut, fail_probes, no_peers, crash, clear.

Faults apply to one infohash or, without one, to every session; ``seconds`` bounds how long
stall, slow and fail_probes last (until ``clear`` otherwise). fail_probes makes the probes
answer HTTP 500 rather than hang: a hang is indistinguishable from a stall to a caller with a
timeout, and a 500 tests the other branch of a health checker. no_peers makes the stat_url report
0 peers while the stream keeps flowing (a swarm that emptied while the engine still plays what it
has buffered): the signal central's degraded rule watches for, apart from a stalled download.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Action = Literal["stall", "slow", "cut", "fail_probes", "no_peers", "crash", "clear"]


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action
    infohash: str | None = Field(None, pattern=r"^[0-9a-fA-F]{40}$")
    factor: float | None = Field(None, gt=1, le=1000)
    seconds: float | None = Field(None, gt=0, le=86_400)


def parse(body: bytes) -> FaultRequest | str:
    """The fault asked for, or a precise error message."""
    try:
        req = FaultRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
    if req.action == "slow" and req.factor is None:
        return "factor: required for slow (rate is divided by it)"
    return req


@dataclass
class Fault:
    action: Action
    infohash: str | None
    factor: float
    until: float | None  # monotonic; None = until cleared

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def matches(self, infohash: str) -> bool:
        return self.infohash is None or self.infohash == infohash


class FaultBook:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, req: FaultRequest) -> Fault:
        until = time.monotonic() + req.seconds if req.seconds else None
        infohash = req.infohash.lower() if req.infohash else None
        fault = Fault(req.action, infohash, req.factor or 1.0, until)
        if req.action in ("stall", "slow", "fail_probes", "no_peers"):
            self._faults.append(fault)
        return fault

    def clear(self, infohash: str | None) -> None:
        self._faults = [
            f for f in self._faults if infohash is not None and f.infohash != infohash.lower()
        ]

    def _live(self) -> list[Fault]:
        now = time.monotonic()
        self._faults = [f for f in self._faults if f.active(now)]
        return self._faults

    def speed(self, infohash: str) -> float:
        """Multiplier on a session's media clock: 0 while stalled, 1/factor while slowed."""
        if not self._faults:
            return 1.0
        speed = 1.0
        for f in self._live():
            if f.matches(infohash):
                if f.action == "stall":
                    return 0.0
                if f.action == "slow":
                    speed = min(speed, 1.0 / f.factor)
        return speed

    def peerless(self, infohash: str) -> bool:
        """The session's stat_url reports 0 peers (the no_peers fault)."""
        return bool(self._faults) and any(
            f.action == "no_peers" and f.matches(infohash) for f in self._live()
        )

    def probes_fail(self) -> bool:
        return bool(self._faults) and any(f.action == "fail_probes" for f in self._live())

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "action": f.action,
                "infohash": f.infohash,
                "factor": f.factor,
                "seconds_left": None if f.until is None else round(f.until - now, 3),
            }
            for f in self._live()
        ]
