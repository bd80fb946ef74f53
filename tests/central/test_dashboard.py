"""The dashboard in real headless Chromium: it loads, shows the live fleet, a drain click works."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.central.conftest import ARGS, StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, Agent, engine, event, send_events


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.browser
def test_dashboard_live_view_drain_and_reconnect(
    chromium: Path, start_central: StartCentral
) -> None:
    from playwright.sync_api import WebSocket, sync_playwright

    svc = start_central()
    service = httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}, timeout=10)
    operator = httpx.Client(base_url=svc.url, headers={"X-API-Key": OPERATOR_KEY}, timeout=10)
    edge0 = Agent("edge0", 2)
    edge0.engines.append(engine("edge0", 2, draining=True))  # the agent drains this one itself
    edge0.beat(service)
    send_events(service, "edge0", event("stream_started", "s-1", content_key="id:tv", viewers=1))
    sockets: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=ARGS, headless=True)
        try:
            page = browser.new_page()

            def opened(socket: WebSocket) -> None:
                sockets.append(socket.url)

            page.on("websocket", opened)
            page.goto(f"{svc.url}/dashboard")
            page.fill("#key", OPERATOR_KEY)
            page.click("#connect")
            page.wait_for_selector('#hosts tr[data-host="edge0"]', timeout=15000)
            # The key went as the first WebSocket message: no URL carries it. The page asks
            # for patches: the live changes below reach it merged into the items it has.
            assert sockets
            assert sockets[0] == f"ws://127.0.0.1:{svc.port}/v1/live/ws?patches=1"
            assert OPERATOR_KEY not in page.url
            assert page.locator('#engines tr[data-engine="edge0-eng1"]').count() == 1
            stream = page.locator('#streams tr[data-stream="s-1"]')
            assert stream.locator(".viewers").inner_text() == "1"
            # No engine stats for this stream: its peers and speed say so instead of a 0.
            assert stream.locator(".peers").inner_text() == "\u2013"
            assert stream.locator(".speed-down").inner_text() == "\u2013"
            assert page.locator('[data-total="viewers"] b').inner_text() == "1"
            assert page.locator('[data-total="engines"] b').inner_text() == "3"
            # Live: a new host and a viewer count change show up without a reload.
            Agent("edge1", 1).beat(service)
            send_events(service, "edge0", event("viewers", "s-1", viewers=42))
            page.wait_for_selector('#hosts tr[data-host="edge1"]', timeout=15000)
            page.wait_for_function(
                "document.querySelector('#streams tr[data-stream=\"s-1\"] .viewers')"
                ".textContent === '42'",
                timeout=15000,
            )
            page.wait_for_function(
                "document.querySelector('[data-now=\"viewers\"]').textContent === '42'",
                timeout=15000,
            )
            assert int(page.locator("#chart-viewers").get_attribute("data-points") or 0) >= 1
            # A drain click reaches central, and the page shows the host draining.
            page.click('#hosts tr[data-host="edge0"] button')
            page.wait_for_selector('#hosts tr[data-host="edge0"] .draining', timeout=15000)
            wait_for(
                lambda: bool(operator.get("/v1/hosts/edge0").json()["operator_drain"]),
                "the host drain click did not reach central",
            )
            assert not operator.get("/v1/hosts/edge1").json()["operator_drain"]
            # An engine its agent drains offers the operator's drain, not an undrain it
            # could not do; the click sets the operator's drain.
            agent_drained = page.locator('#engines tr[data-engine="edge0-eng2"]')
            assert agent_drained.locator(".drain-state").inner_text() == "draining (agent)"
            assert agent_drained.locator("button").inner_text() == "Drain"
            agent_drained.locator("button").click()
            wait_for(
                lambda: bool(operator.get("/v1/engines/edge0-eng2").json()["operator_drain"]),
                "the engine drain click did not reach central",
            )
            page.wait_for_function(
                "document.querySelector('#engines tr[data-engine=\"edge0-eng2\"] button')"
                ".textContent === 'Undrain'",
                timeout=15000,
            )
            # Central restarts: the page reconnects by itself and shows the new run's view.
            svc.stop()
            page.wait_for_function(
                "document.querySelector('#status').textContent.includes('reconnecting')",
                timeout=15000,
            )
            again = start_central(port=svc.port)
            service.base_url = httpx.URL(again.url)
            Agent("edge2", 1).beat(service)
            page.wait_for_selector('#hosts tr[data-host="edge2"]', timeout=30000)
            assert page.evaluate("document.body.dataset.connects") == "2"
            assert all(url == sockets[0] for url in sockets)
        finally:
            browser.close()
            service.close()
            operator.close()
