"""The checkout is the collection acefleet.fleet: make its FQCN names resolve for every test that
runs ansible-playbook, as scripts/install-collections.sh does for the lint, Molecule and the lab."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def checkout_as_collection() -> None:
    link = ROOT / "collections" / "ansible_collections" / "acefleet" / "fleet"
    if link.is_symlink() or link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another test process linked it meanwhile
        os.symlink("../../..", link)
