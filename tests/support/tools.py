"""The programs outside Python that the suite drives, and the one way a test asks for them.

A missing tool is a test FAILURE that says how to install it, on every machine (with or without
``CI`` set): a skip would let a fresh machine pass without ever running the test.
``scripts/bootstrap.sh`` installs all of them; to leave a whole area out of a quick local run,
deselect it by marker (``-m "not docker"``) rather than by uninstalling a tool.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

# Debian installs some daemons' binaries in sbin, which a non-root PATH does not list.
_SBIN = (Path("/usr/sbin"), Path("/sbin"))


def missing(what: str, package: str) -> str:
    """The failure message for a tool that is not there: what is missing and how to get it."""
    return f"{what} is missing: run scripts/bootstrap.sh (or apt-get install -y {package})"


def require(command: str, package: str) -> str:
    """The absolute path of ``command``; fails the test (with the install hint) when absent."""
    found = shutil.which(command)
    if found is None:
        found = next((str(d / command) for d in _SBIN if (d / command).is_file()), None)
    if found is None:
        pytest.fail(missing(command, package), pytrace=False)
    return found


def require_docker() -> None:
    """A dockerd that answers ``docker info``; fails the test with the hint when it does not."""
    require("docker", "docker.io")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        pytest.fail(
            "dockerd does not answer: run scripts/bootstrap.sh (scripts/ensure-docker.sh starts"
            f" it)\n{info.stderr.strip()}",
            pytrace=False,
        )
