"""``acefleet-central``: run the central orchestrator; ``acefleet-central db ...``: its database
migrations (``orchestrator/central/migrations/db_command.py``)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from acefleet import config, logs
from orchestrator.central.migrations import db_command
from orchestrator.central.settings import CentralSettings


def server_config(app: Any, settings: CentralSettings, **overrides: Any) -> uvicorn.Config:
    """How central's HTTP server runs (the console script; the tests' in-thread central too)."""
    options: dict[str, Any] = {
        "host": settings.listen_host,
        "port": settings.listen_port,
        "loop": "uvloop",
        "http": "httptools",
        "log_config": None,
        "access_log": False,
        # Who the client is behind a balancer is central's own rule (trusted_proxies,
        # api/deps.py client_address). uvicorn's would also believe any X-Forwarded-For sent
        # from 127.0.0.1, whatever trusted_proxies says, and costs a layer on every request.
        "proxy_headers": False,
        # Open live-update streams never end by themselves; do not wait long for them.
        "timeout_graceful_shutdown": 2,
        # HTTPS when given a certificate (docs/tls.md); uvicorn loads the pair itself
        "ssl_certfile": settings.tls_cert_file or None,
        "ssl_keyfile": settings.tls_key_file or None,
        "ws_per_message_deflate": settings.live_ws_deflate,
    }
    return uvicorn.Config(app, **(options | overrides))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["db"]:
        raise SystemExit(db_command.main(args[1:]))
    # Imported here: `db` (run by the roles before every restart) does without the whole app.
    from orchestrator.central.app import create_app

    settings = config.load(
        CentralSettings,
        argv,
        prog="acefleet-central",
        description="Fleet view, engine claims, stream registry, operator API and dashboard.",
    )
    logs.configure(settings.log_level, settings.log_format, "acefleet-central")
    app = create_app(settings)
    # ~100k objects from imports and app setup live as long as the process; a full GC pass over
    # them takes tens of ms, which would land on some claim's latency. Take them out of its sight.
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(server_config(app, settings))
    server.run()


if __name__ == "__main__":
    main()
