"""What a subcommand is made of, shared by the modules that add them to the parser: a handler
takes the parsed arguments and a connection to central and returns ``(central's JSON, the text a
person reads)``; ``--json`` prints the first, otherwise the second is printed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from acefleetctl.client import Central

Handler = Callable[[argparse.Namespace, Central], Any]
# cli.build_parser's ``add(name, handler, help)``: a subcommand that takes the common options.
Add = Callable[[str, Handler | None, str], argparse.ArgumentParser]


def path(*parts: str | int) -> str:
    """``/v1/...`` with every part quoted (names and ids come from the command line)."""
    return "/v1/" + "/".join(quote(str(p), safe="") for p in parts)
