"""``acefleet-proxy reload``: ask the running proxy for a hitless takeover and report it.

Prints one JSON line (``ok``, ``old_pid``, ``new_pid``, ``pause_ms``, ``viewers``, ``channels``,
``error``) and returns the exit status: 0 when a new process took over, 1 otherwise (so
``systemctl reload`` reports the failure).
"""

from __future__ import annotations

import json
import socket
from typing import Any

from proxy.settings import ProxySettings

# the running proxy may take handover_timeout_s to spawn and hear the new process, then
# needs a moment to answer
_MARGIN_S = 10.0


def reload(settings: ProxySettings) -> int:
    result: dict[str, Any]
    path = settings.handover_socket
    try:
        if not path:
            raise OSError("handover_socket is empty: reload is off in this configuration")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(settings.handover_timeout_s + _MARGIN_S)
            sock.connect(path)
            sock.sendall(b"takeover\n")
            answer = b""
            while not answer.endswith(b"\n"):
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        result = json.loads(answer) if answer.strip() else {}
        if not isinstance(result, dict) or "ok" not in result:
            result = {"ok": False, "error": "the proxy closed the connection without an answer"}
    except (OSError, ValueError) as exc:
        result = {"ok": False, "error": f"{path}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1
