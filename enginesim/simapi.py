"""The simulator's own API: ``/_sim/sessions`` (always on) and ``/_sim/faults`` (``--chaos``)."""

from __future__ import annotations

import os

from acefleet import logs
from enginesim import faults as faultmod
from enginesim.httpserver import Connection, Request
from enginesim.session import Registry

log = logs.get(__name__)

CRASH_EXIT_CODE = 70


class SimApi:
    def __init__(self, registry: Registry, faults: faultmod.FaultBook, chaos: bool) -> None:
        self.registry = registry
        self.faults = faults
        self.chaos = chaos

    async def sessions(self, req: Request, conn: Connection) -> None:
        conn.send_json(self.registry.snapshot())

    async def fault(self, req: Request, conn: Connection) -> None:
        if not self.chaos:
            conn.send_json({"error": "fault injection is off (start with --chaos)"}, status=404)
            return
        if req.method == "GET":
            conn.send_json({"faults": self.faults.describe()})
            return
        parsed = faultmod.parse(req.body)
        if isinstance(parsed, str):
            conn.send_json({"error": parsed}, status=400)
            return
        log.warning("fault injected", **parsed.model_dump())
        if parsed.action == "crash":
            os._exit(CRASH_EXIT_CODE)  # at once: no cleanup, no answer, like a killed engine
        if parsed.action == "clear":
            self.faults.clear(parsed.infohash)
        elif parsed.action == "cut":
            self.cut(parsed.infohash)
        else:
            self.faults.add(parsed)
        conn.send_json({"ok": True, "faults": self.faults.describe()})

    def cut(self, infohash: str | None) -> None:
        """Abort the playback connections of one content (or all); sessions stay live."""
        for session in list(self.registry.by_infohash.values()):
            if infohash is None or session.infohash == infohash.lower():
                for reader in list(session.readers):
                    reader.abort()
