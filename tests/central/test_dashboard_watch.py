"""The dashboard's watch preview: real headless Chromium plays a live stream over HLS from a real
acefleet-proxy (in front of a real simulator playing a real clip), with the hls.js that
scripts/vendor-web.sh vendored and central serves. Also: how central serves that file and hands
the page its player URL, and what the page says when it cannot preview.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from orchestrator.central.api import live
from orchestrator.central.settings import CentralSettings
from tests.central.conftest import ARGS, StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, Agent, event, send_events
from tests.support import procs

CONTENT = "0123456789abcdef0123456789abcdef01234567"
# Another channel (not CONTENT's infohash, which the proxy would merge with it).
INFOHASH = hashlib.sha1(b"another channel").hexdigest()
PLAYED_S = 10.0  # media seconds the preview must play, its currentTime advancing all along
HLS_IDLE_S = 5  # the proxy ends an HLS session this long after its last request
CONFIG = re.compile(r'<script id="config" type="application/json">(.*?)</script>', re.S)
VIDEO = "document.querySelector('#preview-video')"


@pytest.fixture
def hls_js() -> Path:
    """The vendored hls.js; a checkout that skipped vendoring fails with the command to run."""
    path = live.VENDOR_DIR / live.HLS_JS
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: run scripts/vendor-web.sh (scripts/bootstrap.sh does; it needs "
            "npm: apt-get install -y nodejs npm)",
            pytrace=False,
        )
    return path


@pytest.fixture
def player(clip_dir: Path, log_dir: Path) -> Iterator[procs.Service]:
    """An acefleet-proxy with a static engine list: one simulator playing clips."""
    sim = procs.start_clip_sim(clip_dir, log_dir)
    port = procs.free_port()
    try:
        proxy = procs.start(
            "acefleet-proxy",
            ["--host", "127.0.0.1", "--port", str(port), "--engines", f"127.0.0.1:{sim.port}@4"],
            port=port,
            ready_path="/readyz",
            log_dir=log_dir,
            env={"ACEFLEET_PROXY_HLS_SESSION_IDLE_S": str(HLS_IDLE_S)},
        )
    except BaseException:
        sim.stop()
        raise
    yield proxy
    proxy.stop()
    sim.stop()


def page_config(html: str) -> dict[str, object]:
    found = CONFIG.search(html)
    assert found, "the dashboard has no config script"
    config: dict[str, object] = json.loads(found.group(1))
    return config


def hls_sessions(proxy: procs.Service) -> float:
    text = httpx.get(proxy.url + "/metrics", timeout=5).text
    found = re.search(r"^acefleet_proxy_hls_sessions (\S+)$", text, re.M)
    assert found, "the proxy exports no acefleet_proxy_hls_sessions gauge"
    return float(found.group(1))


def register_streams(central_url: str) -> None:
    """Two live streams in central's view, as a proxy's events would report them."""
    with httpx.Client(base_url=central_url, headers={"X-API-Key": SERVICE_KEY}) as service:
        Agent("edge0", 2).beat(service)
        send_events(
            service,
            "edge0",
            event("stream_started", "s-id", content_key=f"id:{CONTENT}", viewers=2),
            event("stream_started", "s-ih", content_key=f"infohash:{INFOHASH}", viewers=1),
        )


@pytest.mark.browser
@pytest.mark.ffmpeg
@pytest.mark.slow
def test_watch_plays_a_live_stream_over_hls_through_the_proxy(
    chromium: Path, hls_js: Path, player: procs.Service, start_central: StartCentral
) -> None:
    from playwright.sync_api import ConsoleMessage, Request, sync_playwright

    svc = start_central(player_url=player.url + "/")
    register_streams(svc.url)
    requests: list[str] = []
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=ARGS, headless=True)
        try:
            page = browser.new_page()

            def sent(request: Request) -> None:
                requests.append(request.url)

            def logged(msg: ConsoleMessage) -> None:
                console.append(f"{msg.type}: {msg.text}")

            page.on("request", sent)
            page.on("console", logged)
            page.goto(f"{svc.url}/dashboard")
            # Every `error` event of the video element, from before the first click.
            page.evaluate(
                f"""() => {{
                window.videoErrors = [];
                const v = {VIDEO};
                v.addEventListener("error", () => window.videoErrors.push(
                    v.error ? v.error.code + " " + v.error.message : "error event"));
            }}"""
            )
            page.fill("#key", OPERATOR_KEY)
            page.click("#connect")
            page.wait_for_selector('#streams tr[data-stream="s-ih"] button.watch', timeout=15000)
            # An infohash stream plays by infohash= (the proxy's and HAProxy's selector).
            page.click('#streams tr[data-stream="s-ih"] button.watch')
            assert page.get_attribute("#preview", "data-url") == (
                f"{player.url}/ace/manifest.m3u8?infohash={INFOHASH}"
            )
            # Another watch click replaces that preview with the id stream's.
            page.click('#streams tr[data-stream="s-id"] button.watch')
            url = f"{player.url}/ace/manifest.m3u8?id={CONTENT}"
            assert page.get_attribute("#preview", "data-url") == url
            assert page.is_visible("#preview-video")

            def state() -> dict[str, object]:
                found: dict[str, object] = page.evaluate(
                    f"""() => ({{
                    t: {VIDEO}.currentTime,
                    errors: window.videoErrors,
                    fatal: document.querySelector('#preview').dataset.fatal || null,
                    shown: document.querySelector('#preview-error').textContent,
                }})"""
                )
                return found

            def problems(now: dict[str, object]) -> str:
                return (
                    f"{now}\nconsole: {console}\nproxy requests: "
                    f"{[r for r in requests if r.startswith(player.url)][-8:]}\n"
                    f"proxy log tail:\n{player.log()[-3000:]}"
                )

            # Started: the first segment reached the video element (the proxy waits for the
            # channel's first segment before it answers the manifest).
            deadline = time.monotonic() + 60
            while not (start := state())["t"]:
                assert not start["errors"], problems(start)
                assert start["fatal"] is None, problems(start)
                assert time.monotonic() < deadline, f"the preview never started: {problems(start)}"
                time.sleep(0.5)
            assert isinstance(start["t"], float | int)
            last = start["t"]
            deadline = time.monotonic() + 60
            while True:
                now = state()
                assert not now["errors"], problems(now)
                assert now["fatal"] is None, problems(now)
                t = now["t"]
                assert isinstance(t, float | int)
                assert t >= last, f"currentTime went back from {last}: {problems(now)}"
                last = t
                if t - start["t"] >= PLAYED_S:
                    break
                assert time.monotonic() < deadline, f"playback stopped: {problems(now)}"
                time.sleep(0.5)
            assert not [line for line in console if "preview error" in line], console
            # It all came from the proxy's HLS: the manifest, a session's media playlist and
            # its segments.
            assert url in requests
            hls = f"{player.url}/ace/hls/"
            assert any(r.startswith(hls) and ".m3u8?" in r for r in requests), requests
            assert any(r.startswith(hls) and ".ts?" in r for r in requests), requests
            assert hls_sessions(player) >= 1
            # Close destroys the player: it stops fetching, so the proxy's HLS session idles
            # out (it would stay while a forgotten player kept polling its playlist).
            page.click("#preview-close")
            assert page.is_hidden("#preview")
            deadline = time.monotonic() + HLS_IDLE_S + 30
            while hls_sessions(player) > 0:
                assert time.monotonic() < deadline, (
                    "the closed preview still fetches from the proxy: "
                    f"{[r for r in requests if r.startswith(player.url)][-8:]}"
                )
                time.sleep(0.5)
            assert page.evaluate("window.videoErrors") == []
        finally:
            browser.close()


@pytest.mark.browser
def test_no_player_url_no_watch_button_and_the_page_says_why(
    chromium: Path, start_central: StartCentral
) -> None:
    from playwright.sync_api import sync_playwright

    svc = start_central()  # player_url unset
    register_streams(svc.url)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{svc.url}/dashboard")
            page.fill("#key", OPERATOR_KEY)
            page.click("#connect")
            button = page.locator('#streams tr[data-stream="s-id"] button.watch')
            button.wait_for(timeout=15000)
            assert button.is_disabled()
            assert "ACEFLEET_CENTRAL_PLAYER_URL" in (button.get_attribute("title") or "")
            assert page.is_hidden("#preview")
        finally:
            browser.close()


def test_central_serves_the_vendored_hls_js_without_a_key(
    hls_js: Path, start_central: StartCentral
) -> None:
    svc = start_central(player_url="http://10.0.0.100")
    body = hls_js.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    with httpx.Client(base_url=svc.url, timeout=10) as anonymous:
        config = page_config(anonymous.get("/dashboard").text)
        assert config == {
            "player_url": "http://10.0.0.100",
            "hls_js": f"/static/vendor/{live.HLS_JS}?v={digest}",
        }
        r = anonymous.get(str(config["hls_js"]))
        assert r.status_code == 200
        assert r.content == body
        assert r.headers["content-type"].startswith("text/javascript")
        # The page's URL names the content: browsers keep it; a bare URL revalidates.
        assert "immutable" in r.headers["cache-control"]
        bare = anonymous.get(f"/static/vendor/{live.HLS_JS}")
        assert bare.headers["cache-control"] == "no-cache"
        again = anonymous.get(
            f"/static/vendor/{live.HLS_JS}", headers={"If-None-Match": r.headers["etag"]}
        )
        assert again.status_code == 304
        assert anonymous.get("/static/vendor/hls.js.LICENSE").status_code == 200
        unknown = anonymous.get("/static/vendor/other.js")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
        # Plumbing of the page, not part of the API.
        assert not [p for p in anonymous.get("/openapi.json").json()["paths"] if "vendor" in p]


def test_an_install_without_vendored_hls_js_answers_503_and_the_page_knows(
    start_central: StartCentral, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty vendor directory: what a checkout that skipped scripts/vendor-web.sh has.
    monkeypatch.setattr(live, "VENDOR_DIR", tmp_path / "vendor")
    svc = start_central(player_url="http://10.0.0.100")
    with httpx.Client(base_url=svc.url, timeout=10) as anonymous:
        r = anonymous.get(f"/static/vendor/{live.HLS_JS}")
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "not_vendored"
        assert "scripts/vendor-web.sh" in error["message"]
        assert page_config(anonymous.get("/dashboard").text)["hls_js"] is None


@pytest.mark.parametrize("url", ["10.0.0.100", "ftp://x", "http://x/?id=1", "http://"])
def test_player_url_must_be_an_http_base_url(url: str) -> None:
    with pytest.raises(ValidationError, match="player_url"):
        CentralSettings(player_url=url, operator_keys=[OPERATOR_KEY])
