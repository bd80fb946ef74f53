"""A throwaway certificate authority for the TLS tests: a CA and host certificates for loopback,
made in the test with ``cryptography`` (the library the ``pki`` role's community.crypto uses),
written as PEM files the services read like the ones ``/etc/acefleet/tls/`` holds in a fleet."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import procs


@dataclass(frozen=True)
class HostFiles:
    cert_file: str
    key_file: str


class TestCA:
    """A CA whose certificate is ``ca_file``; :meth:`issue` signs host certificates with it."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "acefleet test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = str(directory / "ca.crt")
        Path(self.ca_file).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> HostFiles:
        """A server certificate for ``names`` (DNS names or IP addresses), signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for entry in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                sans.append(x509.DNSName(entry))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path = self.directory / f"{name}.crt"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return HostFiles(str(cert_path), str(key_path))


def start_https(
    name: str,
    args: list[str],
    *,
    port: int,
    ca_file: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
    ready_path: str = "/livez",
    timeout: float = 30.0,
) -> procs.Service:
    """Run console script ``name`` like :func:`tests.support.procs.start`, but wait for
    ``https://127.0.0.1:<port><ready_path>`` verified against ``ca_file``."""
    return procs.start(
        name,
        args,
        port=port,
        ready_path=ready_path,
        log_dir=log_dir,
        env=env,
        timeout=timeout,
        ca_file=ca_file,
    )


def openssl_verify(
    address: str, port: int, ca_file: Path | str
) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` to ``address:port``, verifying the chain against ``ca_file`` and the
    certificate for ``address`` (as the lab's TLS proof does); "Verification: OK" in its output
    when it holds."""
    return subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{address}:{port}",
            "-CAfile",
            str(ca_file),
            "-verify_return_error",
            "-verify_ip",
            address,
            "-brief",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
