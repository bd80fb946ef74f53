"""Central's Alembic migrations on SQLite and a real PostgreSQL server.

- the revisions make exactly what the models describe (alembic's compare, as ``alembic check``);
- a database built the way central built it before migrations (create_all, no version table), with
  rows, is adopted and upgraded: the rows stay and the newer tables work; also one from before
  ``channels.standby``;
- ``acefleet-central db upgrade|current|check`` does the same from a shell, as the roles run it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from orchestrator.central.audit import audit_log
from orchestrator.central.catalog.players import players
from orchestrator.central.catalog.store import channels
from orchestrator.central.history import History, engine_drains, sessions
from orchestrator.central.migrations import schema
from tests.support import ansible, postgres, procs

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
# The tables central made with create_all before migrations (revision 0001).
BEFORE = (
    "stream_sessions",
    "stream_events",
    "provisioning_log",
    "engine_drains",
    "channels",
    "guide",
    "players",
)


async def _revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(schema.current)


async def _differences(engine: AsyncEngine) -> list[object]:
    async with engine.connect() as conn:
        return await conn.run_sync(schema.differences)


def _old_metadata() -> MetaData:
    """The pre-migration schema as create_all made it: the models' tables of revision 0001."""
    old = MetaData()
    for table in schema.target_metadata().sorted_tables:
        if table.name in BEFORE:
            table.to_metadata(old)
    return old


async def test_migrations_make_what_the_models_describe(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            before = await conn.run_sync(schema.upgrade)
        assert before is None
        assert await _revision(engine) == schema.head()
        assert await _differences(engine) == []
        # Again: nothing to do, still in agreement.
        async with engine.begin() as conn:
            assert await conn.run_sync(schema.upgrade) == schema.head()
        assert await _differences(engine) == []
    finally:
        await engine.dispose()


async def test_two_centrals_upgrading_at_once_migrate_once(
    postgres_cluster: postgres.Cluster,
) -> None:
    """Active and standby central starting together on one PostgreSQL database: the advisory
    lock makes the second wait and find nothing to do (without it, both create the tables and
    one fails)."""
    url = postgres_cluster.url(postgres_cluster.new_database())
    engines = [create_async_engine(url) for _ in range(3)]

    async def upgrade(engine: AsyncEngine) -> str | None:
        async with engine.begin() as conn:
            return await conn.run_sync(schema.upgrade)

    try:
        befores = await asyncio.gather(*(upgrade(e) for e in engines))
        assert befores.count(None) == 1  # one migrated; the others found it done
        assert befores.count(schema.head()) == 2
        assert await _differences(engines[0]) == []
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_create_all_database_is_adopted_with_its_rows(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_old_metadata().create_all)
            await conn.execute(
                insert(sessions).values(
                    stream_id="s1",
                    proxy_id="edge1",
                    host="edge1",
                    content_key="infohash:aa",
                    source="engine",
                    started_at=AT,
                    peak_viewers=4,
                )
            )
            await conn.execute(
                insert(channels).values(
                    name="One",
                    content_kind="infohash",
                    content_value="a" * 40,
                    group_title="News",
                    logo="",
                    tvg_id="one",
                    number=1,
                    enabled=True,
                    standby=True,
                    created_at=AT,
                    updated_at=AT,
                )
            )
            await conn.execute(insert(engine_drains).values(engine_id="edge1/e0", at=AT))
        assert await _revision(engine) is None
    finally:
        await engine.dispose()

    # Central's own start path: History.start() upgrades before anything reads.
    history = History(database_url, 10, lambda: None)
    await history.start()
    try:
        assert await _revision(history.engine) == schema.head()
        assert await _differences(history.engine) == []
        [row] = await history.sessions(10, None, None)
        assert (row["stream_id"], row["peak_viewers"]) == ("s1", 4)
        assert await history.drained_engines() == {"edge1/e0"}
        async with history.engine.begin() as conn:
            kept = (await conn.execute(select(channels.c.name, channels.c.standby))).all()
            await conn.execute(
                insert(audit_log).values(
                    at=AT,
                    actor="ops-alice",
                    role="operator",
                    action="engine.drain",
                    target="edge1/e0",
                    detail={"reason": "maintenance"},
                    client="127.0.0.1",
                )
            )
            audited = (await conn.execute(select(audit_log.c.actor, audit_log.c.detail))).all()
        assert [tuple(r) for r in kept] == [("One", True)]
        assert [tuple(r) for r in audited] == [("ops-alice", {"reason": "maintenance"})]
    finally:
        await history.stop()


async def test_a_database_from_before_standby_gets_the_column(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_old_metadata().create_all)
            # The column came after the table (SQLite 3.35+ drops columns too).
            await conn.execute(text("ALTER TABLE channels DROP COLUMN standby"))
            await conn.execute(
                text(
                    "INSERT INTO channels (name, content_kind, content_value, group_title, logo,"
                    " tvg_id, enabled, created_at, updated_at) VALUES ('Two', 'infohash',"
                    " :value, '', '', '', :on, :at, :at)"
                ),
                {"value": "b" * 40, "on": True, "at": AT},
            )
            await conn.execute(insert(engine_drains).values(engine_id="edge2/e0", at=AT))
        async with engine.begin() as conn:
            assert await conn.run_sync(schema.upgrade) is None
        assert await _revision(engine) == schema.head()
        assert await _differences(engine) == []
        async with engine.connect() as conn:
            rows = (await conn.execute(select(channels.c.name, channels.c.standby))).all()
            count = (await conn.execute(select(func.count()).select_from(players))).scalar()
        assert [tuple(r) for r in rows] == [("Two", False)]
        assert count == 0
    finally:
        await engine.dispose()


def _db(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(procs.BIN / "acefleet-central"), "db", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_db_command_upgrades_reports_and_checks(database_url: str, tmp_path: Path) -> None:
    """As the roles run it: the URL from central's TOML file (with no API keys) or the
    environment, before central's own configuration is written."""
    head = schema.head()
    config = tmp_path / "central.toml"
    config.write_text(f'database_url = "{database_url}"\nlisten_port = 8000\n')
    behind = _db("check", "--config", str(config))
    assert behind.returncode == 1, behind
    assert f"not at head {head}" in behind.stderr
    assert "differs from the models" in behind.stderr

    done = _db("upgrade", env={"ACEFLEET_CENTRAL_DATABASE_URL": database_url})
    assert done.returncode == 0, done
    assert f"empty -> {head}" in done.stdout
    if database_url.startswith("postgresql"):  # the password never shows
        password = database_url.split(":")[2].split("@")[0]
        assert password not in done.stdout + done.stderr
        assert ":***@" in done.stdout
    again = _db("upgrade", "--config", str(config))
    assert again.returncode == 0, again
    assert f"at {head}, nothing to do" in again.stdout
    assert " -> " not in again.stdout

    now = _db("current", "--database-url", database_url)
    assert now.returncode == 0, now
    assert f"at {head}, head {head}" in now.stdout
    checked = _db("check", "--config", str(config))
    assert checked.returncode == 0, checked
    assert "matches the models" in checked.stdout

    bad = _db("downgrade")
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


ROLE_PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ lookup('env', 'PY') }}"
    acefleet_user: "{{ lookup('env', 'RUN_AS') }}"
    acefleet_venv: "{{ lookup('env', 'VENV') }}"
    acefleet_central_database: "{{ lookup('env', 'DB_KIND') }}"
    central_database_url: "{{ lookup('env', 'DB_URL') }}"
  tasks:
    - name: The central role's database tasks
      ansible.builtin.import_tasks: "{{ lookup('env', 'TASKS') }}"
"""


def test_the_central_roles_database_tasks_migrate_once(database_url: str, tmp_path: Path) -> None:
    """roles/central/tasks/database.yml as the role runs it (as the service user: here the user
    running the tests), against each database: changed the first time, not the second."""
    play = tmp_path / "play.yml"
    play.write_text(ROLE_PLAY)
    env = {
        "RUN_AS": pwd.getpwuid(os.geteuid()).pw_name,
        "VENV": str(procs.BIN.parent),
        "PY": sys.executable,
        "DB_KIND": "sqlite" if database_url.startswith("sqlite") else "external",
        "DB_URL": database_url,
        "TASKS": str(procs.REPO / "roles" / "central" / "tasks" / "database.yml"),
    }
    first = ansible.playbook(play, "localhost,", env=env)
    assert "changed=1" in first.stdout, first.stdout
    second = ansible.playbook(play, "localhost,", env=env)
    assert "changed=0" in second.stdout, second.stdout
    if "@" in database_url:  # the password never shows
        password = database_url.split("@")[0].rsplit(":", 1)[1]
        assert password not in first.stdout + second.stdout
    now = _db("current", "--database-url", database_url)
    assert f"at {schema.head()}, head {schema.head()}" in now.stdout

    env["DB_KIND"] = "postgres"  # not a choice: the role stops before touching the database
    refused = ansible.playbook(play, "localhost,", env=env, check=False)
    assert refused.returncode != 0
    assert "acefleet_central_database must be sqlite, local_postgresql or external" in (
        refused.stdout
    )
