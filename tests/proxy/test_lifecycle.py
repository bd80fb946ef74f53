"""Process lifecycle: SIGTERM drains; configuration is validated with clear messages."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from acefleet import config
from proxy.settings import ProxySettings
from tests.proxy.client import request, sim_sessions, wait_for
from tests.proxy.conftest import StartProxy, StartSim, endpoint
from tests.support.procs import BIN

CONTENT = "0123456789abcdef0123456789abcdef01234567"


async def test_sigterm_drains_viewers_then_stops_upstreams(
    start_sim: StartSim, start_proxy: StartProxy
) -> None:
    sim = start_sim("--idle-timeout", "60")  # only the proxy's stop call ends the session
    proxy = start_proxy(endpoint(sim), args=("--drain-timeout-s", "2"))
    viewer = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await viewer.read_until(10_000)
    keep = await request(proxy.url, "/livez")
    proxy.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    keep.writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await keep.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)  # no longer accepting
    await viewer.read_until(len(viewer.body) + 100_000)  # still watching during the drain
    await viewer.read_to_eof(within=10)  # then cut, bounded
    await wait_for(lambda: not proxy.alive(), within=10)
    assert proxy.proc.returncode == 0
    assert sim_sessions(sim.url)["sessions_ended_total"] == 1
    assert sim_sessions(sim.url)["sessions"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engines", "nohost"], "is not host:port[@cap]"),
        (["--engines", "127.0.0.1:6878@0"], "cap must be a positive integer"),
        (["--first-byte-timeout-s", "5", "--engine-call-timeout-s", "10"], "prebuffer"),
        (["--slow-viewer-policy", "wait"], "slow-viewer-policy"),
    ],
)
def test_bad_configuration_is_refused_clearly(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        config.load(ProxySettings, args, prog="acefleet-proxy", description="")
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_env_names_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACEFLEET_PROXY_ENGINES", "10.0.0.1:6878@2,10.0.0.2:6878")
    monkeypatch.setenv("ACEFLEET_PROXY_GRACE_S", "3")
    settings = config.load(ProxySettings, [], prog="acefleet-proxy", description="")
    assert settings.engines == ["10.0.0.1:6878@2", "10.0.0.2:6878"]
    assert settings.grace_s == 3


def test_console_script_checks_config() -> None:
    proc = subprocess.run(
        [str(BIN / "acefleet-proxy"), "--check-config", "--engines", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "ACEFLEET_PROXY_ENGINES" in proc.stderr
