"""The agent's errors, in the one error shape of every service (:mod:`acefleet.errors`).

Holds the rule for how a refused provisioning reaches a client: ``409`` when the host is at
``max_engines`` (asking again will not help until engines go), ``503`` for every other refusal
(Docker, VPN, breaker, ports: conditions that pass), with the refusal's retry hint.
"""

from __future__ import annotations

from acefleet.errors import ServiceError


class AgentError(ServiceError):
    """A failure of the agent's API: status, stable ``code``, message, optional retry hint."""


class ProvisionRefused(AgentError):
    """Provisioning was refused, or failed before the container ran; ``code`` says why."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        status = 409 if code == "max_engines" else 503
        super().__init__(status, code, message, retry_after_s=retry_after_s)
