"""Fixtures for the simulator's tests: start it as a real subprocess, read and check TS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from acefleet import mpegts
from tests.support import procs

StartSim = Callable[..., procs.Service]


@pytest.fixture
def start_sim(log_dir: Path) -> Iterator[StartSim]:
    """Start extra simulators with custom flags (fast profile unless told otherwise)."""
    started: list[procs.Service] = []

    def start(
        *args: str, fast: bool = True, env: dict[str, str] | None = None, timeout: float = 20
    ) -> procs.Service:
        port = procs.free_port()
        argv = ["--http-port", str(port), *(["--timing", "fast"] if fast else []), *args]
        svc = procs.start(
            "acefleet-engine-sim",
            argv,
            port=port,
            ready_path="/webui/api/service?method=get_version",
            log_dir=log_dir,
            env=env,
            timeout=timeout,
        )
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Service]:
    """One fast simulator shared by a module's tests (each uses its own content ids)."""
    port = procs.free_port()
    svc = procs.start(
        "acefleet-engine-sim",
        ["--http-port", str(port), "--timing", "fast"],
        port=port,
        ready_path="/webui/api/service?method=get_version",
        log_dir=tmp_path_factory.mktemp("engine-logs"),
    )
    yield svc
    svc.stop()


def start_json(
    base: str, query: str, client: httpx.Client | None = None, path: str = "/ace/getstream"
) -> dict[str, object]:
    """Start playback with format=json and return the ``response`` object."""
    c = client or httpx.Client(timeout=10)
    try:
        r = c.get(f"{base}{path}?format=json&{query}")
    finally:
        if client is None:
            c.close()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["error"] is None, body
    response = body["response"]
    assert isinstance(response, dict)
    return response


def read_stream(url: str, nbytes: int, timeout: float = 15) -> bytes:
    """Read ``nbytes`` of a playback URL (following the engine's redirects)."""
    buf = bytearray()
    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as c,
        c.stream("GET", url) as r,
    ):
        assert r.status_code == 200, r.read()
        for part in r.iter_raw():
            buf += part
            if len(buf) >= nbytes:
                break
    return bytes(buf)


@dataclass
class TsReport:
    packets: int = 0
    cc_errors: int = 0
    pids: set[int] = field(default_factory=set)
    pcrs: list[int] = field(default_factory=list)
    pcr_pids: set[int] = field(default_factory=set)
    keyframes: int = 0
    pusi_pids: set[int] = field(default_factory=set)


def check_ts(data: bytes | bytearray, *, whole: bool = True) -> TsReport:
    """Walk TS packets: sync bytes, continuity counters per PID, PCRs, random-access points."""
    if whole:
        assert len(data) % mpegts.PACKET_SIZE == 0, "not whole packets"
    rep = TsReport()
    last_cc: dict[int, int] = {}
    end = mpegts.packet_floor(len(data))
    for off in range(0, end, mpegts.PACKET_SIZE):
        pkt = memoryview(data)[off : off + mpegts.PACKET_SIZE]
        assert pkt[0] == mpegts.SYNC_BYTE, f"no sync byte at {off}"
        pid = mpegts.pid_of(pkt)
        rep.packets += 1
        rep.pids.add(pid)
        if pkt[3] & 0x10:  # has payload: CC must advance by one
            cc = mpegts.continuity_counter(pkt)
            if pid in last_cc and cc != (last_cc[pid] + 1) % 16:
                rep.cc_errors += 1
            last_cc[pid] = cc
        if mpegts.payload_unit_start(pkt):
            rep.pusi_pids.add(pid)
        pcr = mpegts.pcr_of(pkt)
        if pcr is not None:
            rep.pcrs.append(pcr)
            rep.pcr_pids.add(pid)
        if mpegts.random_access(pkt):
            rep.keyframes += 1
    return rep


def sessions(base: str) -> dict[str, object]:
    r = httpx.get(base + "/_sim/sessions", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, dict)
    return body


def live(base: str) -> list[dict[str, object]]:
    found = sessions(base)["sessions"]
    assert isinstance(found, list)
    return found


def wait_for(pred: Callable[[], bool], timeout: float = 10, step: float = 0.05) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Reader:
    """A background reader of a playback URL that records (monotonic time, total bytes)."""

    def __init__(self, url: str, limit: float = 20) -> None:
        import threading

        self.url = url
        self.limit = limit
        self.data = bytearray()
        self.marks: list[tuple[float, int]] = []
        self.status = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import time

        t0 = time.monotonic()
        try:
            with (
                httpx.Client(timeout=30, follow_redirects=True) as c,
                c.stream("GET", self.url) as r,
            ):
                self.status = r.status_code
                for part in r.iter_raw():
                    self.data += part
                    now = time.monotonic()
                    self.marks.append((now, len(self.data)))
                    if self._stop.is_set() or now - t0 > self.limit:
                        break
        except httpx.HTTPError:
            pass
        finally:
            self.done.set()

    def bytes_between(self, t_a: float, t_b: float) -> int:
        before = [n for t, n in self.marks if t <= t_a]
        upto = [n for t, n in self.marks if t <= t_b]
        return (upto[-1] if upto else 0) - (before[-1] if before else 0)

    @property
    def total(self) -> int:
        return len(self.data)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
