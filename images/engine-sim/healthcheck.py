"""HEALTHCHECK of the acefleet/engine-sim image: the engine's own liveness call, get_version.

Runs inside the container with Debian's python3 and only the standard library, so it works even
when the acefleet virtualenv is broken (which is exactly when it should report unhealthy).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

LIVENESS_PATH = "/webui/api/service?method=get_version"


def main() -> int:
    # The simulator reads its port from ACEFLEET_SIM_HTTP_PORT too; follow it when set.
    port = os.environ.get("ACEFLEET_SIM_HTTP_PORT", "6878")
    url = f"http://127.0.0.1:{port}{LIVENESS_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            answer = json.load(resp)
    except (OSError, ValueError) as exc:
        print(f"get_version failed: {exc}", file=sys.stderr)
        return 1
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, dict) or "version" not in result:
        print(f"get_version answered without a version: {answer!r}", file=sys.stderr)
        return 1
    print(f"engine {result['version']} is live")
    return 0


if __name__ == "__main__":
    sys.exit(main())
