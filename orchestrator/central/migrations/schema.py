"""Running the migrations: upgrade (with adoption of a ``create_all`` database), current, check.

Every function takes a synchronous SQLAlchemy connection inside a transaction (an async caller
uses ``await conn.run_sync(...)``), so central's start, the ``db`` command and the tests apply
exactly the same code. On PostgreSQL an upgrade first takes a transaction-scoped advisory lock:
two centrals starting at once (active and standby) apply a revision once, the second waits and
then finds nothing to do.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text

from acefleet import logs

log = logs.get(__name__)

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"
# Any number, the same in every central: the key of the advisory lock around an upgrade.
_LOCK_KEY = 0x61636566_6C656574  # "acefleet" in ASCII
# A database made by create_all, by the revision whose tables it holds: adopted at the newest
# revision all of whose tables are there (tables that came later are made by the upgrade).
_TABLES_BY_REVISION = (
    (
        "0001",
        {
            "stream_sessions",
            "stream_events",
            "provisioning_log",
            "engine_drains",
            "channels",
            "guide",
            "players",
        },
    ),
    ("0002", {"audit_log"}),
)


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our scripts, bound to ``connection`` (env.py reads it)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def target_metadata() -> MetaData:
    """Every table central has: the modules defining them are imported here so that nothing is
    left out of a comparison (they all put their tables on ``history.metadata``)."""
    from orchestrator.central import audit  # noqa: F401
    from orchestrator.central.catalog import players, store  # noqa: F401
    from orchestrator.central.history import metadata

    return metadata


def head() -> str:
    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None, "no revisions in orchestrator/central/migrations/versions"
    return found


def current(conn: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()


def differences(conn: Connection) -> list[Any]:
    """What the models have that the database does not (and the reverse); empty when they agree."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    diffs: list[Any] = compare_metadata(context, target_metadata())
    return diffs


def upgrade(conn: Connection, revision: str = "head") -> str | None:
    """Bring the database to ``revision`` (head by default); returns the revision it was at."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    before = current(conn)
    if before is None:
        _adopt(conn)
    command.upgrade(config(conn), revision)
    after = current(conn)
    if after != before:
        log.info("database_migrated", before=before, after=after)
    return before


def _revision_module(revision: str) -> ModuleType:
    script = ScriptDirectory.from_config(config()).get_revision(revision)
    assert script is not None
    assert script.module is not None
    return script.module


def _adopt(conn: Connection) -> None:
    """A database with our tables and no version: made by create_all (central before Alembic).
    Make what 0001 would have and is missing (tables, columns added since), then stamp it."""
    existing = set(inspect(conn).get_table_names())
    if not existing & _TABLES_BY_REVISION[0][1]:
        return  # empty (or someone else's tables only): a plain upgrade from nothing
    ops = Operations(MigrationContext.configure(conn))
    _revision_module("0001").complete(ops, existing)
    stamp = "0001"
    for revision, tables in _TABLES_BY_REVISION[1:]:
        if not tables <= existing:
            break
        stamp = revision
    command.stamp(config(conn), stamp)
    log.info("database_adopted", stamped=stamp, tables=sorted(existing))
