"""Central's catalog: the channels and the guide players are shown (see docs/catalog.md).

``store`` keeps them in the history database (tables on ``history.metadata``, so SQLite and
PostgreSQL alike), ``m3u_import`` turns an operator's playlist or JSON into channels, line by
line, and ``guide`` reads, checks and filters XMLTV. The stores of this package share one small
lifecycle (:class:`Store`) so the app starts and stops them together.
"""

from __future__ import annotations

from typing import Protocol


class Store(Protocol):
    """A part of central's state kept in the database, loaded into memory at start."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
