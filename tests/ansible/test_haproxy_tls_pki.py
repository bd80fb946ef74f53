"""The pki role, run for real by ansible-playbook against this machine as an lb host (its files
under a temporary directory): it creates the fleet CA with community.crypto, issues the host
certificate naming the host, its address and the VIP, writes HAProxy's bundle, which a real
haproxy serves and `openssl s_client -verify_return_error` verifies against the CA; a second run
changes nothing, a certificate near its end is issued again, an inventory's CA signs instead."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.support import ansible, procs, tools
from tests.support.tls_ca import openssl_verify

ROOT = Path(__file__).resolve().parents[2]
VIP = "127.0.0.77"

PLAYBOOK = """
- hosts: lb1
  connection: local
  gather_facts: false
  roles:
    - role: acefleet.fleet.pki
"""


def _run(tmp_path: Path, *extra: str) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    lb:\n      hosts:\n        lb1:\n"
        "          ansible_host: 127.0.0.1\n          ansible_python_interpreter: "
        f"{ROOT / '.venv' / 'bin' / 'python'}\n"
    )
    (tmp_path / "pki.yml").write_text(PLAYBOOK)
    values = {
        "acefleet_tls_ca_dir": tmp_path / "ca",
        "pki_dir": tmp_path / "etc" / "tls",
        "pki_haproxy_bundle": tmp_path / "etc" / "haproxy" / "acefleet.pem",
        "keepalived_vip": VIP,
        "acefleet_group": "root",  # the machine's own: the role creates the group if missing
    }
    args = [arg for name, value in values.items() for arg in ("-e", f"{name}={value}")]
    done = ansible.playbook(tmp_path / "pki.yml", str(tmp_path / "hosts.yml"), *args, *extra)
    return done.stdout


def _changed(stdout: str) -> int:
    recap = stdout.rsplit("PLAY RECAP", 1)[1]
    return int(recap.split("changed=", 1)[1].split()[0])


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _served_and_verified(tmp_path: Path, bundle: Path, ca: Path) -> str:
    """haproxy serves ``bundle`` on loopback; openssl verifies it against ``ca`` for the VIP."""
    haproxy = tools.require("haproxy", "haproxy")
    port = procs.free_port(VIP)
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n"
        "    timeout server 5s\nfrontend tls\n"
        f"    bind {VIP}:{port} ssl crt {bundle}\n"
        "    http-request return status 200 content-type text/plain string ok\n"
    )
    hap = subprocess.Popen([haproxy, "-db", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        done = None
        for _ in range(50):
            done = openssl_verify(VIP, port, ca)
            if done.returncode == 0 or "refused" not in done.stderr:
                break
            time.sleep(0.1)
        assert done is not None
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stderr + done.stdout
    finally:
        hap.terminate()
        hap.wait(timeout=10)


@pytest.mark.slow
def test_pki_makes_a_ca_and_a_certificate_haproxy_serves(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert _changed(first) > 0
    ca_file, tls = tmp_path / "ca" / "ca.crt", tmp_path / "etc" / "tls"
    assert (tls / "ca.crt").read_bytes() == ca_file.read_bytes()
    assert (tls / "host.key").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "etc" / "haproxy" / "acefleet.pem").stat().st_mode & 0o777 == 0o600
    host = _cert(tls / "host.crt")
    names = host.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"lb1"} <= set(names.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", VIP} <= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert host.issuer == _cert(ca_file).subject
    assert "Verification: OK" in _served_and_verified(
        tmp_path, tmp_path / "etc" / "haproxy" / "acefleet.pem", tls / "ca.crt"
    )
    # host.crt carries the chain: openssl verifies it against the CA alone
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_file), str(tls / "host.crt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # nothing to do the second time
    assert _changed(_run(tmp_path)) == 0
    assert _cert(tls / "host.crt").serial_number == host.serial_number

    # a certificate that ends within the renewal window is issued again, by the same CA
    _run(tmp_path, "-e", "pki_renew_days=500", "-e", "pki_host_cert_days=600")
    renewed = _cert(tls / "host.crt")
    assert renewed.serial_number != host.serial_number
    assert renewed.issuer == host.issuer
    assert (tls / "ca.crt").read_bytes() == ca_file.read_bytes()


@pytest.mark.slow
def test_pki_signs_with_the_inventorys_ca(tmp_path: Path) -> None:
    own = tmp_path / "own"
    _run(own)  # a CA made elsewhere: the first run's
    ca, key = own / "ca" / "ca.crt", own / "ca" / "ca.key"
    fleet = tmp_path / "fleet"
    _run(fleet, "-e", f"acefleet_tls_ca_cert={ca}", "-e", f"acefleet_tls_ca_key={key}")
    assert not (fleet / "ca" / "ca.crt").exists()  # no CA of its own
    tls = fleet / "etc" / "tls"
    assert (tls / "ca.crt").read_bytes() == ca.read_bytes()
    assert _cert(tls / "host.crt").issuer == _cert(ca).subject
