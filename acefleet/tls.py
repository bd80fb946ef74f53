"""TLS between acefleet's own services (central, agents, proxies): one way to build contexts.

The rule: a service serves HTTPS when it is given a certificate and its key (both or neither,
checked when the settings load); a client verifies every ``https://`` peer, against the fleet's
CA file when one is configured, else against the system's trust store. Verification is never
switched off: a peer whose chain or name does not check out is refused. Plain ``http://`` URLs
keep working, so a fleet can move to TLS one service at a time.

The files are the ones the ``pki`` role writes (see docs/tls.md): ``/etc/acefleet/tls/ca.crt``,
``host.crt`` and ``host.key``.
"""

from __future__ import annotations

import functools
import os
import ssl

# TLS 1.2 is the oldest version a service here needs to speak: every peer is ours.
MIN_VERSION = ssl.TLSVersion.TLSv1_2


def check_files(cert_file: str, key_file: str, ca_file: str = "") -> None:
    """ValueError with the reason when the TLS options do not fit together or a file is not
    readable (settings validators call it: a bad path fails at start, not at the first peer)."""
    if bool(cert_file) != bool(key_file):
        raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
    for name, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file)):
        _readable(name, path)
    _readable("tls_ca_file", ca_file)


def _readable(name: str, path: str) -> None:
    if path and not os.access(path, os.R_OK):
        raise ValueError(f"{name} {path!r} does not exist or is not readable")


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The context a service listens with: its certificate (chain first) and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSION
    context.load_cert_chain(cert_file, key_file)
    # HTTP/1.1 only: the proxy's protocol and uvicorn's speak nothing else
    context.set_alpn_protocols(["http/1.1"])
    return context


@functools.lru_cache(maxsize=8)
def client_context(ca_file: str = "") -> ssl.SSLContext:
    """The context a service verifies its ``https://`` peers with: chain and host name, against
    ``ca_file`` (the fleet CA) or, empty, the system's trust store. Cached per file: loading a
    CA costs a millisecond or so, and relays open connections often."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = MIN_VERSION
    context.set_alpn_protocols(["http/1.1"])
    return context
