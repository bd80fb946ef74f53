"""The proxy's copy of central's catalog: what it serves players and checks tokens against.

Central is the source (``GET /v1/edge/catalog``, ``/v1/edge/guide``, ``/v1/players/usage``,
service key, through the proxy's control link to central). The proxy polls the catalog and
guide every ``catalog_refresh_s`` and the usage every ``usage_refresh_s``, sending back the
last ETag (``If-None-Match``) so an unchanged catalog costs a 304. The last catalog and guide
are kept in memory and, with ``cache_dir``, on disk (written atomically: a crash leaves the old
file or the new one, never half of one), and loaded from there at start, so a restarted proxy
serves the player files and checks players while central is away. Usage is never kept on disk:
a count from before a restart says nothing about now.

A failed poll keeps the last copy; nothing here ever blocks the streaming path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from pydantic import ValidationError

from acefleet import logs
from acefleet import player_feeds as feeds
from acefleet.catalog_wire import CatalogChannel, EdgeCatalog, EdgePlayer, PlayerUsage
from acefleet.errors import ServiceError
from acefleet.tokens import TokenKeys
from proxy.access import FailureLimit
from proxy.control.peer import ControlPeer
from proxy.metrics import Metrics
from proxy.settings import ProxySettings

log = logs.get(__name__)

CATALOG_FILE = "edge_catalog.json"
GUIDE_FILE = "guide.xml"
_GUIDE_MAX = 256 * 1024 * 1024
_RENDERED_MAX = 256


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path``, all or nothing (a temporary file renamed over it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class CatalogCache:
    """The last catalog, guide and usage from central, and the loops that refresh them."""

    def __init__(
        self, settings: ProxySettings, metrics: Metrics, central: ControlPeer | None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.central = central
        self.dir = Path(settings.cache_dir) if settings.cache_dir else None
        self.catalog: EdgeCatalog | None = None
        self.guide: bytes | None = None
        self.guide_version = ""  # changes whenever ``guide`` does (a rendering cache key)
        self._usage: PlayerUsage | None = None
        self._usage_at = 0.0
        self._players: dict[int, EdgePlayer] = {}
        self._by_secret: dict[str, EdgePlayer] = {}
        self._channels: dict[str, CatalogChannel] = {}
        self._etags: dict[str, str] = {}
        self._refused: dict[str, int] = {}
        self.confirmed_at = 0.0  # monotonic time central last confirmed the catalog copy
        self.tasks: list[asyncio.Task[None]] = []

    # --- what the rest of the proxy reads ---------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.catalog is not None

    def player(self, player_id: int) -> EdgePlayer | None:
        return self._players.get(player_id)

    def players_by_hash(self) -> dict[str, EdgePlayer]:
        return self._by_secret

    def channel(self, content_key: str) -> CatalogChannel | None:
        return self._channels.get(content_key)

    def standby_wanted(self, key: str) -> bool:
        """The catalog asks for a warm standby of the channel ``key`` (its ``standby`` flag),
        from this edge's copy (so it holds while central is away); unknown channels: no."""
        channel = self._channels.get(key)
        return channel is not None and channel.standby

    def usage(self, max_age_s: float) -> PlayerUsage | None:
        """Central's per-player counts, if fetched within ``max_age_s``."""
        if self._usage is None or time.monotonic() - self._usage_at > max_age_s:
            return None
        return self._usage

    # --- copies ---------------------------------------------------------------------------
    def _set_catalog(self, catalog: EdgeCatalog) -> None:
        self.catalog = catalog
        self._players = {p.id: p for p in catalog.players}
        self._by_secret = {p.secret_sha256: p for p in catalog.players}
        self._channels = {c.content_key: c for c in catalog.channels}

    def _set_guide(self, xml: bytes | None) -> None:
        if xml != self.guide:
            self.guide = xml
            self.guide_version = hashlib.blake2b(xml or b"", digest_size=12).hexdigest()

    def load(self) -> None:
        """The copies a previous run left in ``cache_dir`` (a bad file is ignored, logged)."""
        if self.dir is None:
            return
        path = self.dir / CATALOG_FILE
        try:
            self._set_catalog(EdgeCatalog.model_validate_json(path.read_bytes()))
        except FileNotFoundError:
            return
        except (OSError, ValidationError) as exc:
            log.warning("catalog_cache_unreadable", path=str(path), error=str(exc)[:200])
            return
        if self.catalog is not None and self.catalog.guide_version:
            with contextlib.suppress(FileNotFoundError):
                self._set_guide((self.dir / GUIDE_FILE).read_bytes())
        log.info(
            "catalog_cache_loaded",
            version=self.catalog.version if self.catalog else None,
            channels=len(self._channels),
            players=len(self._players),
            guide=self.guide is not None,
        )

    def _keep(self, name: str, data: bytes) -> None:
        if self.dir is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / name, data)
        except OSError as exc:  # a full disk must not stop the proxy serving from memory
            log.warning("catalog_cache_write_failed", file=name, error=str(exc)[:200])

    # --- polling ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.central is None:
            return
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self._every(self.settings.catalog_refresh_s, self.refresh_catalog)),
            loop.create_task(self._every(self.settings.usage_refresh_s, self.refresh_usage)),
        ]

    async def _every(self, period_s: float, poll: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await poll()
            except Exception as exc:  # a bug must not end the polling for the process's life
                log.exception("catalog_poll_crashed", error=repr(exc))
            self.metrics.catalog_age.set(
                time.monotonic() - self.confirmed_at if self.loaded else -1
            )
            await asyncio.sleep(period_s)

    async def _get(self, what: str, path: str) -> httpx.Response | bool:
        """GET ``path`` on central with the last ETag: the response if 200, True when central
        confirmed the copy (304), False when the poll failed."""
        assert self.central is not None
        headers = dict(self.central.headers)
        if what in self._etags:
            headers["If-None-Match"] = self._etags[what]
        try:
            resp = await self.central.http.get(
                self.central.url(path), headers=headers, timeout=self.central.timeout_s
            )
        except httpx.HTTPError as exc:
            self.metrics.catalog_fetches.labels(what, "error").inc()
            log.debug("catalog_poll_failed", what=what, error=repr(exc))
            return False
        if resp.status_code == 304:
            self.metrics.catalog_fetches.labels(what, "not_modified").inc()
            return True
        if resp.status_code != 200:
            self.metrics.catalog_fetches.labels(what, "refused").inc()
            if self._refused.get(what) != resp.status_code:  # once per change, not every poll
                log.warning("catalog_poll_refused", what=what, status=resp.status_code)
            self._refused[what] = resp.status_code
            return False
        self._refused.pop(what, None)
        self.metrics.catalog_fetches.labels(what, "ok").inc()
        if "etag" in resp.headers:
            self._etags[what] = resp.headers["etag"]
        return resp

    async def refresh_catalog(self) -> None:
        resp = await self._get("catalog", "/v1/edge/catalog")
        if resp is True:
            self.confirmed_at = time.monotonic()
        elif isinstance(resp, httpx.Response):
            try:
                catalog = EdgeCatalog.model_validate_json(resp.content)
            except ValidationError as exc:
                self._etags.pop("catalog", None)
                log.warning("catalog_invalid", error=str(exc)[:300])
                return
            changed = self.catalog is None or catalog.version != self.catalog.version
            self._set_catalog(catalog)
            self.confirmed_at = time.monotonic()
            if changed:
                self._keep(CATALOG_FILE, resp.content)
                log.info("catalog_updated", version=catalog.version)
        if self.catalog is None:
            return
        if not self.catalog.guide_version:  # central has no guide (any more)
            self._set_guide(None)
            return
        resp = await self._get("guide", "/v1/edge/guide")
        if isinstance(resp, httpx.Response) and len(resp.content) <= _GUIDE_MAX:
            self._set_guide(resp.content)
            self._keep(GUIDE_FILE, resp.content)

    async def refresh_usage(self) -> None:
        resp = await self._get("usage", "/v1/players/usage")
        if resp is True:
            self._usage_at = time.monotonic()
        if not isinstance(resp, httpx.Response):
            return  # failed: the copy's age decides how long it still counts
        try:
            self._usage = PlayerUsage.model_validate_json(resp.content)
        except ValidationError as exc:
            log.warning("usage_invalid", error=str(exc)[:300])
            return
        self._usage_at = time.monotonic()

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class PlayerFiles:
    """The six player files and ``/p/<secret>/…``, rendered from the catalog copy with
    ``acefleet.player_feeds`` — the same bytes central serves — so players keep their playlist,
    guide and tuner while central is away. Stream URLs in a player's files are signed with
    this proxy's keys (the fleet's keys: central's tokens and ours open the same streams).

    Failed secret lookups drain the client's failure budget (``Access.failures``, the one
    token failures use); an address out of budget gets 429 ``rate_limited``. Rendered files are
    kept per (catalog version, player, file, format, token hour), so a playlist's HMACs are
    computed once an hour, not per request."""

    def __init__(self, cache: CatalogCache, failures: FailureLimit, own_url: str) -> None:
        self.cache = cache
        self.failures = failures
        self.own_url = own_url
        self.keys = TokenKeys.parse(cache.settings.token_keys)
        self.guides = feeds.GuideCache()
        self._rendered: OrderedDict[tuple[str, ...], feeds.Feed] = OrderedDict()

    @staticmethod
    def wants(path: str) -> bool:
        return path.startswith("/p/") or path[1:] in feeds.FILES

    def answer(self, address: str, path: str, query: str) -> tuple[int, feeds.Feed]:
        """(status 200, the file) for ``path``; :class:`ServiceError` otherwise."""
        if path.startswith("/p/"):
            secret, _, name = path[3:].partition("/")
            if not secret or "/" in name:
                raise ServiceError(404, "not_found", f"no such endpoint: {path[:100]}")
        else:
            secret, name = None, path[1:]
        wait = self.failures.wait(address, time.monotonic())
        if wait:
            raise ServiceError(
                429,
                "rate_limited",
                "too many failed requests from this address",
                retry_after_s=wait,
            )
        catalog = self.cache.catalog
        if catalog is None:
            raise ServiceError(
                503,
                "catalog_unavailable",
                "this proxy has not yet loaded the catalog from central",
                retry_after_s=5,
            )
        try:
            player = feeds.resolve(catalog, self.cache.players_by_hash(), secret, name)
        except feeds.FeedError as exc:
            if exc.code == "player_unknown":
                self.failures.failed(address, time.monotonic())
            raise ServiceError(exc.status, exc.code, exc.message) from None
        hls = "format=hls" in query.split("&")
        now = time.time()
        hour = str(feeds.token_expiry(now, catalog.token_ttl_s))
        key = (catalog.version, self.cache.guide_version, secret or "", name, str(hls), hour)
        feed = self._rendered.get(key)
        if feed is None:
            base = catalog.player_url or self.own_url
            req = feeds.Request(
                name=name,
                secret=secret,
                files_base=f"{base}/p/{secret}" if secret is not None else base,
                stream_base=base,
                hls=hls,
            )
            # the guide's version as this copy has it (the guide may lag the catalog a poll)
            catalog = catalog.model_copy(update={"guide_version": self.cache.guide_version})
            feed = feeds.render(
                catalog,
                player,
                req,
                keys=self.keys,
                now=now,
                guide=self.guides,
                guide_xml=self.cache.guide,
            )
            self._rendered[key] = feed
            while len(self._rendered) > _RENDERED_MAX:
                self._rendered.popitem(last=False)
        else:
            self._rendered.move_to_end(key)
        return 200, feed
