"""The dashboard in real headless Chromium: it loads, shows the live fleet, a drain click works."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.central.conftest import Running
from tests.central.fleetsim import OPERATOR_KEY, Agent, event, send_events
from tests.support import tools

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():  # a failure with the install hint, not a skip
        pytest.fail(tools.missing(str(CHROMIUM), "chromium"), pytrace=False)
    return CHROMIUM


@pytest.mark.browser
def test_dashboard_live_view_and_drain(
    chromium: Path, central: Running, service: httpx.Client, operator: httpx.Client
) -> None:
    from playwright.sync_api import sync_playwright

    Agent("edge0", 2).beat(service)
    send_events(service, "edge0", event("stream_started", "s-1", content_key="id:tv", viewers=1))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{central.url}/dashboard")
            page.fill("#key", OPERATOR_KEY)
            page.click("#connect")
            page.wait_for_selector('#hosts tr[data-host="edge0"]', timeout=15000)
            assert page.locator('#engines tr[data-engine="edge0-eng1"]').count() == 1
            assert page.locator('#streams tr[data-stream="s-1"] .viewers').inner_text() == "1"
            # Live: a new host and a viewer count change show up without a reload.
            Agent("edge1", 1).beat(service)
            send_events(service, "edge0", event("viewers", "s-1", viewers=42))
            page.wait_for_selector('#hosts tr[data-host="edge1"]', timeout=15000)
            page.wait_for_function(
                "document.querySelector('#streams tr[data-stream=\"s-1\"] .viewers')"
                ".textContent === '42'",
                timeout=15000,
            )
            # A drain click reaches central, and the page shows the host draining.
            page.click('#hosts tr[data-host="edge0"] button')
            page.wait_for_selector('#hosts tr[data-host="edge0"] .draining', timeout=15000)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if operator.get("/v1/hosts/edge0").json()["operator_drain"]:
                    break
                time.sleep(0.1)
            assert operator.get("/v1/hosts/edge0").json()["operator_drain"]
            assert not operator.get("/v1/hosts/edge1").json()["operator_drain"]
        finally:
            browser.close()
