"""``acefleet-agent``: run the engine agent of one edge host."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn

from acefleet import config, logs
from orchestrator.agent.app import DESCRIPTION, create_app
from orchestrator.agent.profiles import resolve
from orchestrator.agent.settings import AgentSettings


def main(argv: Sequence[str] | None = None) -> None:
    settings = config.load(
        AgentSettings,
        sys.argv[1:] if argv is None else argv,
        prog="acefleet-agent",
        description=DESCRIPTION,
    )
    try:
        resolve(settings.engine_profile, settings.engine_image)
    except ValueError as exc:
        raise SystemExit(f"acefleet-agent: {exc}") from None
    logs.configure(settings.log_level, settings.log_format, service="acefleet-agent")
    # One line per probe would drown the log; the agent logs what the probes mean instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
        access_log=False,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        timeout_graceful_shutdown=5,
        # HTTPS when given a certificate (docs/tls.md)
        ssl_certfile=settings.tls_cert_file or None,
        ssl_keyfile=settings.tls_key_file or None,
    )


if __name__ == "__main__":
    main()
