"""The test helpers' port picker: ports a service binds later must not be taken meanwhile by
another xdist worker or by a client socket the kernel numbers from its ephemeral range."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import procs


def test_ports_come_from_this_workers_slice_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [procs.free_port() for _ in range(50)]
    assert len(set(ports)) == 50  # handed out in turn, none twice
    assert all(p in procs._slice and p < low for p in ports), ports


def test_a_port_in_use_is_skipped() -> None:
    upcoming = procs._next[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", upcoming))
        taken.listen()
        assert procs.free_port() != upcoming


def test_workers_get_disjoint_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        slices.append(set(procs._port_slice()))
    assert len(slices[0] | slices[1] | slices[2]) == sum(len(s) for s in slices)
    assert all(len(s) > 1000 for s in slices)
