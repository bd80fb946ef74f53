"""``acefleet-central db upgrade|current|check``: the migrations from a shell (and the roles).

Takes the same options as the service (``--config`` with the role's TOML, ``--database-url``,
the environment), so a deploy runs ``db upgrade`` against exactly the database central will use
before it restarts central. Exit codes: 0 done / at head and in agreement with the models, 1
``check`` found the database behind or different, 2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from acefleet import config, logs
from orchestrator.central.migrations import schema
from orchestrator.central.settings import CentralSettings

ACTIONS = {
    "upgrade": "apply every migration the database lacks (adopts a pre-migration database)",
    "current": "print the revision the database is at and the newest one",
    "check": "exit 1 unless the database is at the newest revision and matches the models",
}
USAGE = "usage: acefleet-central db {" + ",".join(ACTIONS) + "} [service options, e.g. --config]"


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _upgrade(conn: Connection) -> tuple[str | None, str | None]:
    before = schema.upgrade(conn)
    return before, schema.current(conn)


def _check(conn: Connection) -> tuple[str | None, list[Any]]:
    return schema.current(conn), schema.differences(conn)


async def _run(action: str, url: str) -> int:
    engine = create_async_engine(url)
    head = schema.head()
    try:
        if action == "upgrade":
            async with engine.begin() as conn:
                before, after = await conn.run_sync(_upgrade)
            print(f"{_shown(url)}: {before or 'empty'} -> {after} (head {head})")
            return 0
        async with engine.connect() as conn:
            if action == "current":
                at = await conn.run_sync(schema.current)
                print(f"{_shown(url)}: at {at or 'none'}, head {head}")
                return 0
            at, diffs = await conn.run_sync(_check)
    finally:
        await engine.dispose()
    problems = [] if at == head else [f"at {at or 'none'}, not at head {head}"]
    problems += [f"differs from the models: {d}" for d in diffs]
    for line in problems:
        print(f"{_shown(url)}: {line}", file=sys.stderr)
    if not problems:
        print(f"{_shown(url)}: at head {head}, matches the models")
    return 1 if problems else 0


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ACTIONS:
        print(USAGE, file=sys.stderr)
        for name, what in ACTIONS.items():
            print(f"  {name:8} {what}", file=sys.stderr)
        return 2
    action = argv[0]
    settings = config.load(
        CentralSettings,
        argv[1:],
        prog=f"acefleet-central db {action}",
        description=ACTIONS[action],
    )
    logs.configure(settings.log_level, settings.log_format, "acefleet-central")
    return asyncio.run(_run(action, settings.database_url))
