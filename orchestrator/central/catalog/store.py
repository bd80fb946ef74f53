"""The catalog in the history database: channels and the one guide, served from memory.

Every write goes to the database first, in one transaction, under one lock; the in-memory copy is
then reloaded from what was committed, so readers (the operator API, the player files, edges)
never see a state the database does not hold. Channels are unique by content (kind and value):
that is what makes re-importing a playlist idempotent. ``version`` is a digest of the channel
list, so it changes exactly when the list does and survives a restart unchanged (edges' ETags).
Statements are SQLAlchemy Core only, the same on SQLite and PostgreSQL. A column added since a
database was created (``standby``) is added at start, with its default, before the first read.
An import that does not name ``standby`` (an M3U playlist has no such notion) keeps each known
channel's flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    delete,
    false,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from acefleet import logs
from acefleet.catalog_wire import CatalogChannel, ChannelFields, ChannelList, ImportReport
from orchestrator.central.catalog import guide as xmltv
from orchestrator.central.catalog import m3u_import
from orchestrator.central.catalog.guide import GuideSource, GuideSummary
from orchestrator.central.history import metadata

log = logs.get(__name__)

channels = Table(
    "channels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("content_kind", String(10), nullable=False),
    Column("content_value", String(128), nullable=False),
    Column("group_title", String(100), nullable=False),
    Column("logo", String(2000), nullable=False),
    Column("tvg_id", String(200), nullable=False),
    Column("number", Integer),
    Column("enabled", Boolean, nullable=False),
    Column("standby", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("content_kind", "content_value", name="uq_channels_content"),
)

# One row (id 1): the guide as it was uploaded or read from guide_path.
guide = Table(
    "guide",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("xml", LargeBinary, nullable=False),
    Column("source", String(10), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("etag", String(64), nullable=False),
)
GUIDE_ROW = 1
GUIDE_POLL_S = 1.0  # how often guide_path is looked at (a stat; read only when it changed)
FILTERED_CACHE = 16  # filtered guides kept (one per distinct set of guide ids: players' groups)


class DuplicateContent(Exception):
    """Another channel already has this content."""

    def __init__(self, existing: int | None, content_key: str) -> None:
        who = f"channel {existing}" if existing is not None else "another channel"
        super().__init__(f"{who} already has {content_key}")
        self.existing = existing


class UnknownChannel(LookupError):
    def __init__(self, channel_id: int) -> None:
        super().__init__(f"no channel {channel_id}")


@dataclass(frozen=True, slots=True)
class StoredGuide:
    xml: bytes
    source: GuideSource
    imported_at: datetime
    summary: GuideSummary


def _row(fields: ChannelFields) -> dict[str, Any]:
    return {
        "name": fields.name,
        "content_kind": fields.content_kind,
        "content_value": fields.content_value,
        "group_title": fields.group,
        "logo": fields.logo,
        "tvg_id": fields.tvg_id,
        "number": fields.number,
        "enabled": fields.enabled,
        "standby": fields.standby,
    }


def _channels_of(rows: Sequence[Any]) -> tuple[list[CatalogChannel], str]:
    """Rows as the ordered channel list, and its version (the digest of that list)."""
    adapter = TypeAdapter(list[CatalogChannel])
    items = adapter.validate_python(
        [
            {
                "id": r.id,
                "name": r.name,
                "content_kind": r.content_kind,
                "content_value": r.content_value,
                "group": r.group_title,
                "logo": r.logo,
                "tvg_id": r.tvg_id,
                "number": r.number,
                "enabled": r.enabled,
                "standby": r.standby,
            }
            for r in rows
        ]
    )
    items.sort(key=lambda c: (c.number is None, c.number or 0, c.name.casefold(), c.id))
    body = ChannelList(items=items).model_dump_json().encode()
    return items, hashlib.blake2b(body, digest_size=12).hexdigest()


def _utc(value: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive (they were written as UTC).
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CatalogFiles:
    """Where the catalog may come from on the control host (central's settings)."""

    seed_path: str = ""
    guide_path: str = ""
    guide_max_bytes: int = 64 * 1024 * 1024
    catalog_max_bytes: int = 8 * 1024 * 1024


class CatalogStore:
    def __init__(
        self,
        engine: Callable[[], AsyncEngine],
        files: CatalogFiles | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        # The engine exists only once history has started; ask for it when needed.
        self._engine_of = engine
        self.files = files or CatalogFiles()
        self._watcher: asyncio.Task[None] | None = None
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = asyncio.Lock()
        self._channels: list[CatalogChannel] = []
        self._by_id: dict[int, CatalogChannel] = {}
        self._by_content: dict[str, CatalogChannel] = {}
        self.version = ""
        self._guide: StoredGuide | None = None
        self._filtered: dict[frozenset[str], bytes] = {}

    @property
    def _engine(self) -> AsyncEngine:
        return self._engine_of()

    async def start(self) -> None:
        await self._reload()  # the schema is the migrations' (History.start runs them first)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(guide).where(guide.c.id == GUIDE_ROW))).first()
        if row is not None:
            try:
                summary = await asyncio.to_thread(xmltv.check, row.xml)
            except xmltv.GuideError as exc:  # stored by an older central that checked less
                log.error("catalog_stored_guide_invalid", error=str(exc))
            else:
                self._guide = StoredGuide(row.xml, row.source, _utc(row.imported_at), summary)
        log.info("catalog_loaded", channels=len(self._channels), guide=self._guide is not None)
        if self.files.seed_path and not self._channels:
            await self._seed(self.files.seed_path)
        if self.files.guide_path:
            watcher = GuideFileWatcher(self, self.files.guide_path, self.files.guide_max_bytes)
            await watcher.poll()  # the file as it is now, before the first request
            self._watcher = asyncio.create_task(watcher.run(), name="guide-file-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _seed(self, path: str) -> None:
        """The first catalog of a fresh database (the lab's demo channels). A bad seed file is
        logged line by line and imports nothing; central runs on with an empty catalog."""
        try:
            data = await asyncio.to_thread(_read_bounded, path, self.files.catalog_max_bytes)
        except OSError as exc:
            log.error("catalog_seed_unreadable", path=path, error=str(exc))
            return
        parse = m3u_import.parse_json if path.endswith(".json") else m3u_import.parse_m3u
        parsed = parse(data)
        if parsed.errors:
            for error in parsed.errors:
                log.error("catalog_seed_rejected", path=path, line=error.line, error=error.message)
            return
        report = await self.import_channels([c for _, c in parsed.channels], dry_run=False)
        log.info("catalog_seeded", path=path, created=report.created)

    # --- reads (memory) ------------------------------------------------------------------------

    def channels(self) -> list[CatalogChannel]:
        """Every channel, ordered by number (unnumbered last), then name, then id."""
        return list(self._channels)

    def channel(self, channel_id: int) -> CatalogChannel:
        try:
            return self._by_id[channel_id]
        except KeyError:
            raise UnknownChannel(channel_id) from None

    def channel_list(self) -> ChannelList:
        return ChannelList(items=self.channels())

    def tvg_ids(self, enabled_only: bool = True) -> frozenset[str]:
        return frozenset(
            c.tvg_id for c in self._channels if c.tvg_id and (c.enabled or not enabled_only)
        )

    # --- channel writes ------------------------------------------------------------------------

    async def create(self, fields: ChannelFields) -> CatalogChannel:
        async with self._lock:
            self._refuse_duplicate(fields, None)
            now = self._now()
            try:
                async with self._engine.begin() as conn:
                    result = await conn.execute(
                        insert(channels).values(**_row(fields), created_at=now, updated_at=now)
                    )
                    key = result.inserted_primary_key
                    assert key is not None
                    new_id = int(key[0])
            except IntegrityError:  # written by someone else meanwhile
                raise DuplicateContent(None, fields.content_key) from None
            await self._reload()
        return self._by_id[new_id]

    async def replace(self, channel_id: int, fields: ChannelFields) -> CatalogChannel:
        async with self._lock:
            self.channel(channel_id)
            self._refuse_duplicate(fields, channel_id)
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        update(channels)
                        .where(channels.c.id == channel_id)
                        .values(**_row(fields), updated_at=self._now())
                    )
            except IntegrityError:
                raise DuplicateContent(None, fields.content_key) from None
            await self._reload()
        return self._by_id[channel_id]

    async def delete(self, channel_id: int) -> None:
        async with self._lock:
            self.channel(channel_id)
            async with self._engine.begin() as conn:
                await conn.execute(delete(channels).where(channels.c.id == channel_id))
            await self._reload()

    async def import_channels(
        self, incoming: Sequence[ChannelFields], dry_run: bool
    ) -> ImportReport:
        """Merge channels by content: new content is created, known content updated when any
        field differs; channels not named are kept. One transaction: all of it or nothing.
        The caller has refused duplicates within ``incoming`` (with their line numbers)."""
        created = updated = unchanged = 0
        async with self._lock:
            now = self._now()
            async with self._engine.begin() as conn:
                existing = {
                    (r["content_kind"], r["content_value"]): r
                    for r in (await conn.execute(select(channels))).mappings().all()
                }
                new_rows: list[dict[str, Any]] = []
                for fields in incoming:
                    row = _row(fields)
                    old = existing.get((fields.content_kind, fields.content_value))
                    if old is not None and "standby" not in fields.model_fields_set:
                        del row["standby"]  # not named (an M3U line): the channel keeps its flag
                    if old is None:
                        created += 1
                        new_rows.append({**row, "created_at": now, "updated_at": now})
                    elif all(old[k] == v for k, v in row.items()):
                        unchanged += 1
                    else:
                        updated += 1
                        if not dry_run:
                            await conn.execute(
                                update(channels)
                                .where(channels.c.id == old["id"])
                                .values(**row, updated_at=now)
                            )
                if new_rows and not dry_run:
                    await conn.execute(insert(channels), new_rows)  # one executemany
            if not dry_run:
                await self._reload()
        return ImportReport(
            dry_run=dry_run, created=created, updated=updated, unchanged=unchanged, errors=[]
        )

    def _refuse_duplicate(self, fields: ChannelFields, own_id: int | None) -> None:
        other = self._by_content.get(fields.content_key)
        if other is not None and other.id != own_id:
            raise DuplicateContent(other.id, fields.content_key)

    async def _reload(self) -> None:
        """The memory copy from what is committed (called after each write's commit)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(channels))).all()
        # In a thread: a catalog of tens of thousands of channels takes a while to build.
        items, version = await asyncio.to_thread(_channels_of, rows)
        self._channels = items
        self._by_id = {c.id: c for c in items}
        self._by_content = {c.content_key: c for c in items}
        self.version = version
        self._filtered.clear()

    # --- the guide -----------------------------------------------------------------------------

    @property
    def guide(self) -> StoredGuide | None:
        return self._guide

    def guide_xml(self) -> bytes | None:
        return self._guide.xml if self._guide else None

    async def set_guide(self, xml: bytes, source: GuideSource) -> StoredGuide:
        """Store a guide (:class:`xmltv.GuideError` when it is not one; nothing changes then).
        The same bytes again change nothing, not even the import time."""
        summary = await asyncio.to_thread(xmltv.check, xml)
        async with self._lock:
            current = self._guide
            if current is not None and (current.summary.etag, current.source) == (
                summary.etag,
                source,
            ):
                return current
            stored = StoredGuide(xml, source, self._now(), summary)
            row = {
                "xml": xml,
                "source": source,
                "imported_at": stored.imported_at,
                "etag": summary.etag,
            }
            async with self._engine.begin() as conn:
                await conn.execute(delete(guide).where(guide.c.id == GUIDE_ROW))
                await conn.execute(insert(guide).values(id=GUIDE_ROW, **row))
            self._guide = stored
            self._filtered.clear()
        log.info(
            "guide_stored",
            source=source,
            bytes=len(xml),
            channels=summary.channels,
            programmes=summary.programmes,
        )
        return stored

    async def filtered_guide(self, tvg_ids: Collection[str] | None = None) -> bytes | None:
        """The stored guide cut to ``tvg_ids`` (default: the enabled channels' guide ids);
        None without a guide. Cached per id set until the guide or the channels change; cut in
        a thread (a big guide takes a while, and claims must not wait for it)."""
        stored = self._guide
        if stored is None:
            return None
        ids = frozenset(self.tvg_ids() if tvg_ids is None else tvg_ids)
        cached = self._filtered.get(ids)
        if cached is None:
            cached = await asyncio.to_thread(xmltv.filter_guide, stored.xml, ids)
            if self._guide is not stored:
                return cached  # replaced while cutting: answer, but do not cache a stale cut
            if len(self._filtered) >= FILTERED_CACHE:
                self._filtered.pop(next(iter(self._filtered)))
            self._filtered[ids] = cached
        return cached

    def guide_version(self, tvg_ids: Collection[str] | None = None) -> str:
        """ETag of :meth:`filtered_guide` for these ids ('' without a guide)."""
        if self._guide is None:
            return ""
        ids = sorted(self.tvg_ids() if tvg_ids is None else tvg_ids)
        digest = hashlib.blake2b(self._guide.summary.etag.encode(), digest_size=12)
        for tvg_id in ids:
            digest.update(b"\0" + tvg_id.encode())
        return digest.hexdigest()


def _read_bounded(path: str, max_bytes: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(f"larger than {max_bytes} bytes")
    return data


class GuideFileWatcher:
    """Re-reads guide_path whenever it changes on disk (size, mtime or inode: an editor's
    save and an atomic rename both count). A file that is missing, too big or not XMLTV is
    logged and the guide stays what it was."""

    def __init__(self, store: CatalogStore, path: str, max_bytes: int) -> None:
        self.store = store
        self.path = path
        self.max_bytes = max_bytes
        self._seen: tuple[int, int, int] | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(GUIDE_POLL_S)
            try:
                await self.poll()
            except Exception as exc:  # the watcher must outlive any one bad read
                log.error("guide_file_failed", path=self.path, error=repr(exc))

    async def poll(self) -> None:
        try:
            st = await asyncio.to_thread(os.stat, self.path)
        except OSError as exc:
            if self._seen != (0, 0, 0):
                log.warning("guide_file_missing", path=self.path, error=str(exc))
            self._seen = (0, 0, 0)
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            xml = await asyncio.to_thread(_read_bounded, self.path, self.max_bytes)
            await self.store.set_guide(xml, "file")
        except (OSError, xmltv.GuideError) as exc:
            log.error("guide_file_rejected", path=self.path, error=str(exc))
