"""The CLI against central over HTTPS with the fleet's own CA: ``--ca-file`` (or
``ACEFLEET_CA_FILE``, or ``ca_file`` in the config file) verifies it, for the API and for the
live feed (wss); without it the system's trust store refuses the fleet CA (exit 3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.central.conftest import start_https_central
from tests.central.fleetsim import OPERATOR_KEY
from tests.cli.conftest import Cli
from tests.support.tls_ca import TestCA


@pytest.fixture
def https_central(tmp_path: Path, log_dir: Path) -> Iterator[tuple[str, str]]:
    """Central serving HTTPS with a certificate of a test CA: (its URL, the CA file)."""
    ca = TestCA(tmp_path / "ca")
    svc = start_https_central(ca, tmp_path, log_dir)
    try:
        yield f"https://127.0.0.1:{svc.port}", ca.ca_file
    finally:
        svc.stop()


def test_the_fleet_ca_verifies_an_https_central(
    cli: Cli, https_central: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file = https_central
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    key = ("--url", url, "--api-key", OPERATOR_KEY)
    refused = cli(*key, "status")
    assert refused.code == 3
    assert "CERTIFICATE_VERIFY_FAILED" in refused.err
    ok = cli(*key, "--ca-file", ca_file, "--json", "status")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["hosts"] == {"live": 0, "stale": 0, "lost": 0}
    # the live feed over wss, verified the same way
    watched = cli(*key, "--ca-file", ca_file, "--json", "watch", "--count", "1")
    assert watched.code == 0, watched.err
    assert json.loads(watched.out.splitlines()[0])["type"] == "snapshot"
    # the environment and the config file name it too
    monkeypatch.setenv("ACEFLEET_CA_FILE", ca_file)
    assert cli(*key, "status").code == 0
    monkeypatch.delenv("ACEFLEET_CA_FILE")
    config = tmp_path / "cli.toml"
    config.write_text(f'url = "{url}"\napi_key = "{OPERATOR_KEY}"\nca_file = "{ca_file}"\n')
    assert cli("--config", str(config), "audit").code == 0
    missing = cli(*key, "--ca-file", str(tmp_path / "nope.crt"), "status")
    assert (missing.code, missing.err) == (
        2,
        f"acefleet: CA file {tmp_path / 'nope.crt'} does not exist or is not readable\n",
    )
