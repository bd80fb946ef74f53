"""Central over HTTPS (docs/tls.md, internal section): the real ``acefleet-central`` command given
``tls_cert_file``/``tls_key_file`` serves its API over HTTPS only, to clients that verify it
against the fleet CA made in the test; a client with another CA is refused, a plain-HTTP client
gets nothing, and a certificate without its key is a configuration error."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.central.conftest import start_https_central, tls_env
from tests.central.fleetsim import OPERATOR_KEY
from tests.support import procs
from tests.support.tls_ca import TestCA


def test_central_serves_https_verified_against_the_fleet_ca(tmp_path: Path, log_dir: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    other = TestCA(tmp_path / "other", name="some other CA")
    central = start_https_central(ca, tmp_path, log_dir)
    port = central.port
    try:
        base = f"https://127.0.0.1:{port}"
        trusted = ssl.create_default_context(cafile=ca.ca_file)
        with httpx.Client(verify=trusted, headers={"X-API-Key": OPERATOR_KEY}) as client:
            r = client.get(f"{base}/v1/hosts")
            assert r.status_code == 200, r.text
            assert r.json()["items"] == []
        stranger = ssl.create_default_context(cafile=other.ca_file)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{base}/readyz", verify=stranger)
        # no clear-text API on that port: a plain-HTTP request gets no answer
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    finally:
        central.stop()


def _check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(procs.BIN / "acefleet-central"), "--check-config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_certificate_without_its_key_is_refused_at_start(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    files = ca.issue("control")
    done = _check_config(tls_env(files.cert_file, "", tmp_path))
    assert done.returncode == 2
    assert "tls_cert_file and tls_key_file go together" in done.stderr
    missing = _check_config(tls_env(files.cert_file, str(tmp_path / "nokey"), tmp_path))
    assert missing.returncode == 2
    assert "does not exist or is not readable" in missing.stderr
    # a valid pair: the check prints the key file's path (a path, not a secret), keys masked
    valid = _check_config(tls_env(files.cert_file, files.key_file, tmp_path))
    assert valid.returncode == 0, valid.stderr
    shown = json.loads(valid.stdout)
    assert shown["tls_key_file"] == files.key_file
    assert shown["service_keys"] == ["***"]
