"""A stand-in engine for agent tests, used only until the real simulator image exists.

It speaks the small part of the engine API the agent touches (get_version, get_status,
get_network_connection_status, a stat URL) plus the simulator's fault switch
(``POST /_sim/faults {"action": "fail_probes"}`` when started with ``--chaos``). Standard library
only, so it runs in a bare Debian image with python3.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = {"fail_probes": False, "started": time.monotonic()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, default=6878)
    parser.add_argument("--port", type=int, default=8621)
    parser.add_argument("--bind-all", action="store_true")
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--timing", default="fast")
    args = parser.parse_args()
    ready_after = float(os.environ.get("ACEFLEET_SIM_READY_DELAY", "0.3"))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: object) -> None:
            pass

        def _json(self, body: object, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            if STATE["fail_probes"]:
                self._json({"result": None, "error": "chaos"}, 500)
                return
            method = q.get("method")
            if url.path == "/webui/api/service" and method == "get_version":
                self._json({"result": {"code": 3017000, "version": "3.1.70"}, "error": None})
            elif url.path == "/server/api" and q.get("api_version") != "3":
                self._json({"result": None, "error": "access denied"})
            elif url.path == "/server/api" and method == "get_status":
                if time.monotonic() - float(STATE["started"]) < ready_after:
                    self._json({"result": None, "error": "starting"})
                    return
                self._json({"result": {"playlist_loaded": True, "p2p_port": args.port}})
            elif url.path == "/server/api" and method == "get_network_connection_status":
                self._json({"result": {"connected": True, "p2p_port": args.port}})
            elif url.path.startswith("/ace/stat/"):
                self._json(
                    {
                        "response": {
                            "status": "dl",
                            "peers": 7,
                            "speed_down": 512,
                            "speed_up": 64,
                            "downloaded": 1000,
                            "uploaded": 10,
                        },
                        "error": None,
                    }
                )
            else:
                self._json({"error": "not found"}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/_sim/faults" and args.chaos:
                STATE["fail_probes"] = body.get("action") == "fail_probes"
                self._json({"ok": True})
            else:
                self._json({"error": "not found"}, 404)

    host = "0.0.0.0" if args.bind_all else "127.0.0.1"
    ThreadingHTTPServer((host, args.http_port), Handler).serve_forever()


if __name__ == "__main__":
    main()
