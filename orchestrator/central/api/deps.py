"""Access to the app's live state from a request."""

from __future__ import annotations

from fastapi import Request

from orchestrator.central.state import Central


def central(request: Request) -> Central:
    state: Central = request.app.state.central
    return state
