"""Every read and write command against a real central, as tables and as --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from acefleet.wire import EngineStats
from orchestrator.central.auth import Role, parse_key
from tests.central.conftest import StartCentral
from tests.central.fleetsim import (
    OPERATOR_KEY,
    SERVICE_KEY,
    VIEWER_KEY,
    claim_body,
    event,
    send_events,
)
from tests.cli.conftest import Cli, Fleet, make_fleet, service_client
from tests.support import procs


def _row(out: str, first: str) -> list[str]:
    """The table row whose first column is ``first``, split into its columns."""
    for line in out.splitlines():
        cols = line.split()
        if cols and cols[0] == first:
            return cols
    raise AssertionError(f"no row {first!r} in:\n{out}")


def test_status_counts_the_fleet(cli: Cli, fleet: Fleet) -> None:
    r = cli(*fleet.as_viewer(), "status")
    assert (r.code, r.err) == (0, "")
    lines = dict(line.split(None, 1) for line in r.out.splitlines())
    assert lines["central"] == fleet.url
    assert lines["hosts"] == "1 live, 0 stale, 0 lost"
    assert lines["engines"] == "2 (2 placeable, 1 free slots)"
    assert lines["claims"] == "0 pending, 1 confirmed"
    assert lines["streams"] == "1 with 3 viewers"


def test_hosts_engines_streams_claims_tables(cli: Cli, fleet: Fleet) -> None:
    hosts = cli(*fleet.as_viewer(), "hosts")
    assert hosts.out.splitlines()[0].split()[:3] == ["HOST", "STATUS", "BEAT"]
    edge = _row(hosts.out, "edge0")
    assert edge[1] == "live"
    assert edge[3:6] == ["2/2/10", "1/2", "no"]

    engines = cli(*fleet.as_viewer(), "engines")
    busy = _row(engines.out, fleet.busy)
    assert busy[1:7] == ["edge0", "healthy", "1/1", "1", "no", "no"]
    assert _row(engines.out, fleet.free)[3:6] == ["0/1", "0", "yes"]
    assert cli(*fleet.as_viewer(), "engines", "--host", "nowhere").out.endswith("(no engines)\n")

    streams = _row(cli(*fleet.as_viewer(), "streams").out, "s-1")
    # the host is the proxy snapshot's; with events alone central does not know it yet
    assert streams[1:6] == ["-", "id:chan", fleet.busy, "central", "3"]

    claim = _row(cli(*fleet.as_operator(), "claims").out, fleet.claim_id)
    assert claim[1:7] == ["engine", "id:chan", "edge0", fleet.busy, "confirmed", "s-1"]
    # A claim id lets its holder end the stream: a viewer sees none of them.
    seen = cli(*fleet.as_viewer(), "claims").out
    assert fleet.claim_id not in seen
    assert seen.endswith("(no claims this key may see: operators see all)\n")


def test_a_warm_standby_is_shown_as_such(cli: Cli, fleet: Fleet) -> None:
    """A standby session is listed marked, and not counted as a second session of its channel."""
    body = {**claim_body("id:chan", "edge0"), "standby": True}
    grant = fleet.service.post("/v1/claims", json=body).json()
    assert grant["engine"]["id"] == fleet.free
    spare = event(
        "stream_started",
        "s-2",
        content_key="id:chan",
        claim_id=grant["claim_id"],
        engine_id=fleet.free,
        standby=True,
    )
    send_events(fleet.service, "edge0", spare)
    status = cli(*fleet.as_viewer(), "status")
    lines = dict(line.split(None, 1) for line in status.out.splitlines())
    assert lines["streams"] == "1 with 3 viewers, 1 warm standby"
    row = _row(cli(*fleet.as_viewer(), "streams").out, "s-2")
    assert row[1:7] == ["-", "id:chan", fleet.free, "central", "(standby)", "0"]


def test_one_host_and_one_engine(cli: Cli, fleet: Fleet) -> None:
    host = cli(*fleet.as_viewer(), "hosts", "edge0")
    assert host.code == 0
    assert "engines       2 healthy of 2, max 10" in host.out
    engine = cli(*fleet.as_viewer(), "engines", fleet.busy)
    assert "load       1 of 1 (1 claims)" in engine.out
    assert "host       edge0 (live)" in engine.out


def _report_stats(fleet: Fleet, engine_id: str, **figures: int) -> None:
    """The agent's next heartbeat carries these stats for the engine."""
    sample = EngineStats(status="dl", at=datetime.now(UTC), **figures)
    fleet.agent.engines = [
        e.model_copy(update={"stats": sample}) if e.id == engine_id else e
        for e in fleet.agent.engines
    ]
    fleet.agent.beat(fleet.service)


def test_engine_stats_in_the_tables(cli: Cli, fleet: Fleet) -> None:
    _report_stats(
        fleet, fleet.busy, peers=12, speed_down_kbps=900, speed_up_kbps=40, downloaded_bytes=10**6
    )
    assert _row(cli(*fleet.as_viewer(), "engines").out, fleet.busy)[7:11] == [
        "12",
        "900",
        "40",
        "ok",
    ]
    assert _row(cli(*fleet.as_viewer(), "streams").out, "s-1")[6:9] == ["12", "900", "ok"]
    one = cli(*fleet.as_viewer(), "engines", fleet.busy).out
    assert "speed      down 900 kbps, up 40 kbps" in one


def test_a_degraded_stream_says_why(cli: Cli, start_central: StartCentral) -> None:
    svc = start_central(degraded_after_s="0.05")
    with service_client(svc) as service:
        fleet = make_fleet(svc.url, service)
        _report_stats(fleet, fleet.busy, peers=0, speed_down_kbps=0, downloaded_bytes=0)
        deadline = time.monotonic() + 10
        while "degraded" not in (out := cli(*fleet.as_viewer(), "streams").out):
            assert time.monotonic() < deadline, out  # 0.05 s of 0 peers on central's clock
            time.sleep(0.05)
        assert _row(out, "s-1")[6:10] == ["0", "0", "degraded", "(no_peers)"]
        assert _row(cli(*fleet.as_viewer(), "engines").out, fleet.busy)[10:12] == [
            "degraded",
            "(no_peers)",
        ]


def test_json_is_centrals_json(cli: Cli, fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, headers={"X-API-Key": VIEWER_KEY}) as viewer:
        for argv, path in (
            (["hosts"], "/v1/hosts"),
            (["engines"], "/v1/engines"),
            (["streams"], "/v1/streams"),
            (["claims"], "/v1/claims"),
            (["hosts", "edge0"], "/v1/hosts/edge0"),
        ):
            # --json before the command and after it
            before = cli(*fleet.as_viewer(), "--json", *argv)
            after = cli(*argv, *fleet.as_viewer(), "--json")
            expected = viewer.get(path).json()
            assert json.loads(before.out) == expected, argv
            assert json.loads(after.out) == expected, argv


def test_drain_and_undrain_a_host(cli: Cli, fleet: Fleet) -> None:
    r = cli(*fleet.as_operator(), "drain", "host", "edge0")
    assert (r.code, r.out) == (0, "host edge0: draining: no new work goes there\n")
    assert _row(cli(*fleet.as_viewer(), "hosts").out, "edge0")[5] == "operator"
    reply = fleet.agent.beat(fleet.service)
    assert [d.kind for d in reply.directives] == ["drain"]  # central passed it on to the agent
    r = cli(*fleet.as_operator(), "undrain", "host", "edge0")
    assert (r.code, r.out) == (0, "host edge0: not draining\n")
    assert _row(cli(*fleet.as_viewer(), "hosts").out, "edge0")[5] == "no"


def test_drain_and_undrain_an_engine(cli: Cli, fleet: Fleet) -> None:
    r = cli(*fleet.as_operator(), "--json", "drain", "engine", fleet.free)
    assert json.loads(r.out) == {"target": fleet.free, "draining": True}
    free = _row(cli(*fleet.as_viewer(), "engines").out, fleet.free)
    assert (free[5], free[6]) == ("no", "operator")  # placeable no, drained by the operator
    assert cli(*fleet.as_operator(), "undrain", "engine", fleet.free).code == 0
    free = _row(cli(*fleet.as_viewer(), "engines").out, fleet.free)
    assert (free[5], free[6]) == ("yes", "no")


def test_buffer_set_and_show(cli: Cli, fleet: Fleet) -> None:
    r = cli(*fleet.as_operator(), "buffer", "set", "--per-edge", "3", "--fleet-max", "40")
    assert r.code == 0
    assert r.out.startswith("warm buffer 3 free engines per edge; fleet max 40, 2 engines now\n")
    with httpx.Client(base_url=fleet.url, headers={"X-API-Key": VIEWER_KEY}) as viewer:
        prov = viewer.get("/v1/provisioning").json()
    assert (prov["warm_buffer_per_edge"], prov["fleet_max_engines"]) == (3, 40)
    shown = cli(*fleet.as_viewer(), "buffer")
    assert _row(shown.out, "edge0")[1:3] == ["live", "3"]  # the target follows the buffer
    r = cli(*fleet.as_operator(), "buffer", "set", "--per-edge", "1", "--host", "edge0")
    assert r.out.startswith("warm buffer 3 free engines per edge;")  # the fleet-wide value
    assert _row(r.out, "edge0")[1:3] == ["live", "1"]  # this edge's own
    r = cli(*fleet.as_operator(), "buffer", "set")
    assert r.code == 2
    assert r.err == "acefleet: buffer set: give --per-edge N and/or --fleet-max N\n"


def test_audit_shows_who_drained_and_released(cli: Cli, fleet: Fleet) -> None:
    assert cli(*fleet.as_operator(), "drain", "engine", fleet.free).code == 0
    r = cli(*fleet.as_operator(), "release", fleet.claim_id)
    assert (r.code, r.out) == (0, f"claim {fleet.claim_id}: released\n")
    assert fleet.claim_id not in cli(*fleet.as_operator(), "claims").out
    deadline = time.monotonic() + 10
    while True:  # the audit log is written behind the request
        r = cli(*fleet.as_operator(), "audit")
        if "claim.release" in r.out or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.out.splitlines()[0].split() == ["AT", "ACTOR", "ACTION", "TARGET", "DETAIL", "CLIENT"]
    actor = parse_key(OPERATOR_KEY, Role.operator)[0]
    released = next(line.split() for line in r.out.splitlines() if "claim.release" in line)
    assert released[2:5] == [actor, "claim.release", fleet.claim_id]  # AT is date and time
    assert released[5] == "owner=" + parse_key(SERVICE_KEY, Role.service)[0]
    drained = cli(*fleet.as_operator(), "--json", "audit", "--action", "engine.")
    assert [(e["action"], e["target"]) for e in json.loads(drained.out)["items"]] == [
        ("engine.drain", fleet.free)
    ]
    assert cli(*fleet.as_operator(), "audit", "--actor", "nobody").out.endswith(
        "(no audit entries)\n"
    )
    assert cli(*fleet.as_viewer(), "audit").code == 4  # operators only
    assert cli(*fleet.as_operator(), "whoami").out == f"{actor} (operator)\n"


def test_history_lists_sessions(cli: Cli, fleet: Fleet) -> None:
    deadline = time.monotonic() + 10
    while True:  # history is written behind the live state
        r = cli(*fleet.as_viewer(), "history", "--content-key", "id:chan")
        if "s-1" in r.out or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    row = _row(r.out, "s-1")
    assert row[1:4] == ["-", "id:chan", fleet.busy]
    assert row[6] == "live"  # STARTED is a date and a time
    none = cli(*fleet.as_viewer(), "history", "--content-key", "id:other")
    assert none.out.endswith("(no sessions recorded)\n")


def test_url_and_key_precedence(
    cli: Cli, fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{procs.free_port()}"
    config = tmp_path / "home" / ".config" / "acefleet" / "cli.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{fleet.url}"\napi_key = "{VIEWER_KEY}"\n')
    assert cli("status").code == 0  # the default file alone
    monkeypatch.setenv("ACEFLEET_URL", closed)
    assert cli("status").code == 3  # the environment beats the file
    assert cli("--url", fleet.url, "status").code == 0  # a flag beats the environment
    monkeypatch.setenv("ACEFLEET_URL", fleet.url)
    monkeypatch.setenv("ACEFLEET_API_KEY", "wrong-key-from-the-environment")
    assert cli("status").code == 4
    r = cli("--api-key", OPERATOR_KEY, "drain", "host", "edge0")
    assert r.code == 0  # the operator key from the flag, not the file's viewer key
    other = tmp_path / "other.toml"
    other.write_text('url = "http://x"\ntoken = "nope"\n')
    r = cli("--config", str(other), "status")
    assert (r.code, r.err) == (
        2,
        f"acefleet: config file {other}: unknown setting token (known: url, api_key, ca_file)\n",
    )
    r = cli("--config", str(tmp_path / "absent.toml"), "status")
    assert (r.code, r.err) == (
        2,
        f"acefleet: config file {tmp_path / 'absent.toml'} does not exist\n",
    )


def test_the_console_script(fleet: Fleet, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "acefleet"
    assert exe.exists(), "the acefleet console script is not installed: pip install -e '.[dev]'"
    env = {**os.environ, "ACEFLEET_URL": fleet.url, "ACEFLEET_API_KEY": VIEWER_KEY}
    env["HOME"] = str(tmp_path)
    ok = subprocess.run([exe, "--json", "status"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["streams"] == 1
    refused = subprocess.run(
        [exe, "drain", "host", "edge0"], capture_output=True, text=True, env=env
    )
    assert refused.returncode == 4
    assert refused.stderr.startswith("acefleet: central refused (403 forbidden): role viewer")
