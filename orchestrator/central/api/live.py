"""Live updates for dashboards (Server-Sent Events) and the dashboard page itself."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from orchestrator.central import views
from orchestrator.central.api.deps import central
from orchestrator.central.http import ERROR_RESPONSES, any_reader
from orchestrator.central.state import Central

router = APIRouter(responses=ERROR_RESPONSES)
State = Annotated[Central, Depends(central)]
KEEPALIVE_S = 15.0


def fleet_frame_json(c: Central) -> str:
    """The frame for the current state version, built once however many dashboards watch."""
    if c.frame_cache is None or c.frame_cache[0] != c.version:
        c.frame_cache = (c.version, json.dumps(fleet_frame(c)))
    return c.frame_cache[1]


def fleet_frame(c: Central) -> dict[str, Any]:
    """What a dashboard shows, compact: engines without their full report."""
    return {
        "summary": views.summary(c).model_dump(mode="json"),
        "hosts": [h.model_dump(mode="json") for h in views.hosts(c)],
        "engines": [
            {
                "id": e.id,
                "host": e.host,
                "health": e.report.health.value,
                "load": e.load,
                "stream_cap": e.report.stream_cap,
                "draining": e.report.draining or e.operator_drain,
                "placeable": e.placeable,
                "vpn_forwarded": e.report.vpn_forwarded,
            }
            for e in views.engines(c)
        ],
        "streams": [s.model_dump(mode="json") for s in views.streams(c)],
    }


@router.get(
    "/v1/live",
    tags=["operators"],
    dependencies=[Depends(any_reader)],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE: event fleet"}},
)
async def live(c: State) -> StreamingResponse:
    """Server-Sent Events: a ``fleet`` event with the whole view whenever it changed (at most
    every live_update_interval_s). Browsers may pass the key as ``?api_key=``."""

    async def frames() -> AsyncIterator[str]:
        sent = -1
        quiet = 0.0
        interval = c.settings.live_update_interval_s
        while True:
            if c.version != sent:
                sent = c.version
                quiet = 0.0
                yield f"event: fleet\ndata: {fleet_frame_json(c)}\n\n"
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keepalive\n\n"
            await asyncio.sleep(interval)
            quiet += interval

    return StreamingResponse(
        frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@functools.cache
def _dashboard_page() -> str:
    """The page ships with the package and never changes while central runs: read it once."""
    page = resources.files("orchestrator.central").joinpath("static/dashboard.html")
    return page.read_text(encoding="utf-8")


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(_dashboard_page())
