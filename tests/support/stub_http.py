"""Small HTTP stubs a test plays in place of a service (a control plane, a gate in front of an
agent): served on a free loopback port from a daemon thread, answering JSON on connections they
close after each reply (a stub keeps no connection state between requests)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
    """Answer the handler's request with ``status`` and the JSON body ``data``, then close."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """``handler`` served on 127.0.0.1 (a free port) in a daemon thread: the server and its URL;
    :func:`stop` ends it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()
