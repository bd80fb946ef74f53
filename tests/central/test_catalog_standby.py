"""The catalog's ``standby`` flag in central's database: a database created before the column
existed gets it at start (with its default), and the flag is stored and served after that."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY

# The channels table as central created it before the standby flag.
OLD_SCHEMA = """
CREATE TABLE channels (
    id INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    content_kind VARCHAR(10) NOT NULL,
    content_value VARCHAR(128) NOT NULL,
    group_title VARCHAR(100) NOT NULL,
    logo VARCHAR(2000) NOT NULL,
    tvg_id VARCHAR(200) NOT NULL,
    number INTEGER,
    enabled BOOLEAN NOT NULL,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    CONSTRAINT uq_channels_content UNIQUE (content_kind, content_value)
);
INSERT INTO channels VALUES (1, 'Old One', 'id', 'old1', 'News', '', '', 7, 1,
    '2026-01-01 00:00:00', '2026-01-01 00:00:00');
"""


def test_an_older_database_gets_the_standby_column(
    start_central: StartCentral, tmp_path: Path
) -> None:
    with sqlite3.connect(tmp_path / "central.db") as db:
        db.executescript(OLD_SCHEMA)
    central = start_central()
    with httpx.Client(base_url=central.url, headers={"X-API-Key": OPERATOR_KEY}, timeout=10) as ops:
        [old] = ops.get("/v1/channels").json()["items"]
        assert (old["name"], old["standby"]) == ("Old One", False)
        fields = {k: v for k, v in old.items() if k != "id"}
        r = ops.put("/v1/channels/1", json={**fields, "standby": True})
        assert r.status_code == 200, r.text
    central.stop()
    with sqlite3.connect(tmp_path / "central.db") as db:
        assert db.execute("SELECT standby FROM channels WHERE id = 1").fetchone() == (1,)
    again = start_central()
    with httpx.Client(base_url=again.url, headers={"X-API-Key": OPERATOR_KEY}) as ops:
        assert ops.get("/v1/channels/1").json()["standby"] is True
