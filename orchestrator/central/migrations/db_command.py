"""``acefleet-central db upgrade|current|check``: the migrations from a shell (and the roles).

Reads only the database options, from the same places as the service and in the same order:
``--database-url`` over ``ACEFLEET_CENTRAL_DATABASE_URL`` over the TOML file (``--config`` or
``ACEFLEET_CENTRAL_CONFIG``, the role's file) over the default. Nothing else needs to be set (no
API keys): the roles run ``db upgrade`` before central's configuration is (re)written.
Exit codes: 0 done / at head and in agreement with the models, 1 ``check`` found the database
behind or different, 2 bad usage. ``upgrade`` prints ``<before> -> <after>`` only when it
changed something (the roles' changed_when).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from acefleet import logs
from orchestrator.central.migrations import schema
from orchestrator.central.settings import CentralSettings

ACTIONS = {
    "upgrade": "apply every migration the database lacks (adopts a pre-migration database)",
    "current": "print the revision the database is at and the newest one",
    "check": "exit 1 unless the database is at the newest revision and matches the models",
}
PREFIX = "ACEFLEET_CENTRAL_"


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
            if before == after:
                print(f"{_shown(url)}: at {after}, nothing to do (head {head})")
            else:
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


def _database_url(flag: str | None, config_path: str | None) -> str:
    if flag:
        return flag
    env = os.environ.get(f"{PREFIX}DATABASE_URL")
    if env:
        return env
    path = config_path or os.environ.get(f"{PREFIX}CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                value = tomllib.load(fh).get("database_url")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"acefleet-central db: cannot read {path}: {exc}") from None
        if value:
            return str(value)
    return str(CentralSettings.model_fields["database_url"].default)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="acefleet-central db", description="central's database migrations (Alembic)"
    )
    parser.add_argument(
        "action",
        choices=list(ACTIONS),
        help="; ".join(f"{name}: {what}" for name, what in ACTIONS.items()),
    )
    parser.add_argument("--database-url", help=f"[env {PREFIX}DATABASE_URL]")
    parser.add_argument(
        "--config", metavar="FILE", help=f"central's TOML file [env {PREFIX}CONFIG]"
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    logs.configure("info", "auto", "acefleet-central")
    return asyncio.run(_run(args.action, _database_url(args.database_url, args.config)))
