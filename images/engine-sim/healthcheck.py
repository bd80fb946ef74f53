"""HEALTHCHECK of the acefleet/engine-sim image: the engine's own liveness call, get_version.

Runs inside the container with Debian's python3 and only the standard library, so it works even
when the acefleet virtualenv is broken (which is exactly when it should report unhealthy).
    healthcheck.py          check the port the engine (PID 1) was started with
    healthcheck.py PORT     check PORT
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

LIVENESS_PATH = "/webui/api/service?method=get_version"
DEFAULT_PORT = 6878


def engine_port(cmdline: list[str], env: dict[str, str]) -> int:
    """The HTTP port as the simulator resolves it: --http-port flag, then env, then default.

    acefleet-agent starts engines with ``--http-port N`` (one port per engine on the host), so the
    image's default 6878 is often not the port in use.
    """
    for i, arg in enumerate(cmdline):
        if arg == "--http-port" and i + 1 < len(cmdline):
            return int(cmdline[i + 1])
        if arg.startswith("--http-port="):
            return int(arg.partition("=")[2])
    return int(env.get("ACEFLEET_SIM_HTTP_PORT", DEFAULT_PORT))


def pid1_cmdline() -> list[str]:
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def check(port: int) -> int:
    url = f"http://127.0.0.1:{port}{LIVENESS_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            answer = json.load(resp)
    except (OSError, ValueError) as exc:
        print(f"get_version on port {port} failed: {exc}", file=sys.stderr)
        return 1
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, dict) or "version" not in result:
        print(f"get_version on port {port} answered without a version: {answer!r}", file=sys.stderr)
        return 1
    print(f"engine {result['version']} is live on port {port}")
    return 0


def main(argv: list[str]) -> int:
    try:
        port = int(argv[0]) if argv else engine_port(pid1_cmdline(), dict(os.environ))
    except ValueError as exc:
        print(f"bad port: {exc}", file=sys.stderr)
        return 1
    return check(port)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
