"""Every way central can say no, as the one stderr line and exit code a script switches on."""

from __future__ import annotations

from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, VIEWER_KEY
from tests.cli.conftest import Cli, Fleet
from tests.support import procs

KEY_HINT = " (the key comes from --api-key, ACEFLEET_API_KEY or api_key in the config file)"


def test_central_unreachable(cli: Cli) -> None:
    url = f"http://127.0.0.1:{procs.free_port()}"  # nothing listens there
    r = cli("--url", url, "--api-key", VIEWER_KEY, "hosts")
    assert (r.code, r.out) == (3, "")
    assert r.err.startswith(f"acefleet: central unreachable at {url}: ")
    assert r.err.count("\n") == 1


def test_wrong_key(cli: Cli, fleet: Fleet) -> None:
    r = cli("--url", fleet.url, "--api-key", "wrong-key-0123456789", "status")
    assert (r.code, r.out) == (4, "")
    assert r.err == f"acefleet: central refused (401 unauthenticated): unknown API key{KEY_HINT}\n"
    assert "wrong-key-0123456789" not in r.err  # the key is never printed


def test_no_key(cli: Cli, fleet: Fleet) -> None:
    r = cli("--url", fleet.url, "hosts")
    assert r.code == 4
    assert r.err == (
        "acefleet: central refused (401 unauthenticated): send an API key in the X-API-Key"
        f" header{KEY_HINT}\n"
    )


def test_forbidden_role(cli: Cli, fleet: Fleet) -> None:
    for argv in (["drain", "host", "edge0"], ["buffer", "set", "--per-edge", "1"]):
        r = cli(*fleet.as_viewer(), *argv)
        assert (r.code, r.out) == (4, ""), argv
        assert r.err.startswith(
            "acefleet: central refused (403 forbidden): role viewer may not do this "
            "(needs operator)"
        )
        assert r.err.count("\n") == 1
    assert not fleet.agent.beat(fleet.service).directives  # nothing was drained


def test_rate_limited_says_how_long_to_wait(cli: Cli, start_central: StartCentral) -> None:
    # 0.1 requests per second: a bucket of one token that refills in 10 s
    svc = start_central(rate_limit_rps="0.1")
    argv = ["--url", svc.url, "--api-key", VIEWER_KEY]
    assert cli(*argv, "status").code == 0
    r = cli(*argv, "status")
    assert (r.code, r.out) == (5, "")
    assert r.err == (
        "acefleet: central refused (429 rate_limited): too many requests for this API key;"
        " retry in 10 s\n"
    )


def test_unknown_host_or_engine(cli: Cli, fleet: Fleet) -> None:
    cases = {
        ("hosts", "nope"): "404 unknown_host",
        ("engines", "nope"): "404 unknown_engine",
        ("drain", "host", "nope"): "404 unknown_host",
        ("undrain", "engine", "nope"): "404 unknown_engine",
    }
    for argv, status in cases.items():
        r = cli("--url", fleet.url, "--api-key", OPERATOR_KEY, *argv)
        assert (r.code, r.out) == (1, ""), argv
        assert r.err.startswith(f"acefleet: central refused ({status}): "), r.err
        assert "nope" in r.err


def test_invalid_request(cli: Cli, fleet: Fleet) -> None:
    r = cli(*fleet.as_viewer(), "history", "--limit", "5000")
    assert r.code == 1
    assert r.err.startswith("acefleet: central refused (422 invalid_request): query.limit: ")


def test_usage_errors(cli: Cli, fleet: Fleet) -> None:
    r = cli("status")
    assert r.code == 2
    assert r.err.startswith("acefleet: no central URL: pass --url, set ACEFLEET_URL, or put url")
    r = cli("--url", "127.0.0.1:8000", "status")
    assert r.code == 2
    assert r.err == "acefleet: central URL '127.0.0.1:8000' must start with http:// or https://\n"
    r = cli(*fleet.as_operator(), "drain", "pool", "edge0")
    assert r.code == 2
    assert "argument kind: invalid choice: 'pool'" in r.err
    assert cli("frobnicate").code == 2
    assert cli("--help").code == 0
