"""Access to the app's live state from a request (async: a sync dependency costs a thread hop)."""

from __future__ import annotations

from fastapi import Request

from orchestrator.central.state import Central


async def central(request: Request) -> Central:
    state: Central = request.app.state.central
    return state
