"""What the CLI tells the shell: one line on stderr and an exit code a script can switch on."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    """The exit codes of ``acefleet`` (docs/cli.md lists them)."""

    ok = 0
    other = 1  # central said no otherwise (404, 422, 5xx), a check found problems, bad import lines
    usage = 2  # bad flags, no URL, an unreadable config file (argparse uses 2 as well)
    unreachable = 3  # no answer from central: refused, timed out, DNS, TLS
    auth = 4  # 401 (no or unknown key) or 403 (the key's role may not do this)
    rate_limited = 5  # 429: the key's token bucket is empty; the message says how long to wait


class CliError(Exception):
    """A failure the user sees as ``acefleet: <message>`` with exit code ``code``.

    ``details`` are printed first, one ``acefleet: <detail>`` line each (an import's bad lines);
    ``data`` is central's JSON answer, printed on stdout under ``--json`` (the import report)."""

    def __init__(
        self, code: Exit, message: str, details: Sequence[str] = (), data: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.data = data
