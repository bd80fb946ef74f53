"""Calls central forwards to an edge's agent on an operator's behalf (a tunnel rotation).

The rule: central speaks to an agent only for an operator's explicit action, at the
``agent_url`` of the host's latest heartbeat, with the agents' key (``agent_api_key``, sent as
``Authorization: Bearer``) and, for an https agent, verified against ``agent_ca_file``. What the
agent answers goes back to the operator as it came, except what would be misread as being about
the operator's own request: the agent refusing central's key (401/403) and an answer that is not
JSON become central's 502.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from acefleet import logs, tls
from orchestrator.central.settings import CentralSettings

log = logs.get(__name__)


@dataclass(slots=True, frozen=True)
class AgentAnswer:
    status: int
    body: Any  # the agent's JSON


class AgentCallFailed(Exception):
    """No usable answer from the agent: ``code`` and ``message`` for central's error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def rotate_tunnel(settings: CentralSettings, agent_url: str, name: str) -> AgentAnswer:
    """``POST /v1/tunnels/{name}/rotate`` on the agent at ``agent_url``."""
    return await _post(settings, agent_url, f"/v1/tunnels/{quote(name, safe='')}/rotate")


async def _post(settings: CentralSettings, agent_url: str, path: str) -> AgentAnswer:
    key = settings.agent_api_key.get_secret_value()
    if not key:
        raise AgentCallFailed(
            503,
            "agent_key_missing",
            "central has no agent_api_key (ACEFLEET_CENTRAL_AGENT_API_KEY), so it cannot call "
            "agents",
        )
    verify = tls.client_context(settings.agent_ca_file) if settings.agent_ca_file else True
    url = agent_url.rstrip("/") + path
    try:
        async with httpx.AsyncClient(timeout=settings.agent_timeout_s, verify=verify) as client:
            response = await client.post(url, headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        log.warning("agent_unreachable", url=url, error=repr(exc))
        reason = str(exc) or type(exc).__name__
        raise AgentCallFailed(
            502, "agent_unreachable", f"no answer from the agent at {agent_url}: {reason}"
        ) from None
    if response.status_code in (401, 403):
        raise AgentCallFailed(
            502,
            "agent_refused_key",
            f"the agent at {agent_url} refused central's agent_api_key "
            f"({response.status_code}): it must be the agents' api_key",
        )
    try:
        body = json.loads(response.content)
    except ValueError:
        excerpt = " ".join(response.text.split())[:200]
        raise AgentCallFailed(
            502,
            "agent_bad_answer",
            f"the agent at {agent_url} answered {response.status_code} without JSON: {excerpt}",
        ) from None
    return AgentAnswer(response.status_code, body)
