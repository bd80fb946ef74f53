"""The files players read, served by central: ``/playlist.m3u``, ``/epg.xml``, the HDHomeRun
emulation, and each under a player's secret prefix ``/p/<secret>/`` (see docs/catalog.md).

Media servers and IPTV apps cannot send an API key, so these are public; what guards them is
the secret in a player's URL (32+ random characters, looked up by its SHA-256) and a token
bucket per client address (``public_rate_limit_rps``) in which a failed secret lookup costs
double, so guessing secrets is slower than asking right. The rendering is
``acefleet.player_feeds``, the same the proxies serve their cached copy with.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from acefleet import player_feeds as feeds
from acefleet.tokens import TokenKeys
from acefleet.wire import ErrorBody
from orchestrator.central.api.deps import client_address
from orchestrator.central.api.edge_catalog import edge_catalog
from orchestrator.central.api.players import files_base
from orchestrator.central.auth import Bucket
from orchestrator.central.catalog.store import CatalogStore
from orchestrator.central.http import ApiError
from orchestrator.central.settings import CentralSettings

router = APIRouter(tags=["player files"])
_CLIENTS_MAX = 10_000  # client addresses remembered; the least recently seen go first
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Token mode: use a player's own URL"},
    403: {"model": ErrorBody, "description": "The player is disabled"},
    404: {"model": ErrorBody, "description": "No player has this URL"},
    429: {"model": ErrorBody, "description": "Too many requests from this address"},
}
Format = Annotated[
    Literal["ts", "hls"] | None,
    Query(description="hls: stream URLs are HLS master playlists (/ace/manifest.m3u8)"),
]


class PublicLimiter:
    """Token buckets per client address (bounded: an LRU of addresses)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, 2 * rate)
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def _bucket(self, address: str, now: float) -> Bucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = Bucket(self.rate, self.burst, self.burst, now)
            if len(self._buckets) > _CLIENTS_MAX:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket

    def take(self, address: str) -> None:
        """One request; :class:`ApiError` 429 when the address has none left."""
        now = time.monotonic()
        bucket = self._bucket(address, now)
        if not bucket.take(now):
            retry = max(1, math.ceil((1 - bucket.tokens) / self.rate))
            raise ApiError(
                429,
                "rate_limited",
                "too many requests from this address",
                retry_after_s=retry,
                headers={"Retry-After": str(retry)},
            )

    def penalize(self, address: str) -> None:
        """A failed secret lookup costs one more token (the bucket may go below zero)."""
        self._bucket(address, time.monotonic()).tokens -= 1


class FeedState:
    """Central's per-app state for the player files: limiter, keys, guide cache."""

    def __init__(self, settings: CentralSettings) -> None:
        self.limiter = PublicLimiter(settings.public_rate_limit_rps)
        self.keys = TokenKeys.parse(settings.token_keys)
        self.guides = feeds.GuideCache()


def _state(request: Request) -> FeedState:
    state: FeedState | None = getattr(request.app.state, "player_feeds", None)
    if state is None:
        state = request.app.state.player_feeds = FeedState(request.app.state.central.settings)
    return state


async def _serve(request: Request, name: str, secret: str | None, fmt: str | None) -> Response:
    state = _state(request)
    address = client_address(request)
    state.limiter.take(address)
    catalog = edge_catalog(request)
    central = request.app.state.central
    store: CatalogStore = request.app.state.catalog
    try:
        player = feeds.resolve(catalog, request.app.state.players.by_hash(), secret, name)
    except feeds.FeedError as exc:
        if exc.code == "player_unknown":
            state.limiter.penalize(address)
        raise ApiError(exc.status, exc.code, exc.message) from None
    base = files_base(request, central)
    req = feeds.Request(
        name=name,
        secret=secret,
        files_base=f"{base}/p/{secret}" if secret is not None else base,
        stream_base=catalog.player_url or base,
        hls=fmt == "hls",
    )
    if name == feeds.GUIDE:
        # The store cuts (in a thread) and caches per set of guide ids; same bytes as render.
        ids = feeds.guide_ids(feeds.visible_channels(catalog, player))
        xml = await store.filtered_guide(ids)
        feed = feeds.Feed(xml or feeds.empty_guide(), feeds.XML_TYPE)
    else:
        feed = feeds.render(
            catalog,
            player,
            req,
            keys=state.keys,
            now=time.time(),
            guide=state.guides,
            guide_xml=None,
        )
    # Players re-read these often; a change of catalog shows within a minute.
    return Response(feed.body, media_type=feed.media_type, headers={"Cache-Control": "max-age=60"})


def _root_route(name: str) -> Callable[..., Awaitable[Response]]:
    async def serve(request: Request, format: Format = None) -> Response:
        return await _serve(request, name, None, format)

    serve.__name__ = "root_" + name.replace(".", "_")
    serve.__doc__ = f"The fleet's {name} (open mode; token mode: a player's own URL)."
    return serve


for _name in feeds.FILES:
    router.add_api_route(
        f"/{_name}", _root_route(_name), methods=["GET"], responses=_ERRORS, response_class=Response
    )


@router.get("/p/{secret}/{name}", responses=_ERRORS, response_class=Response)
async def player_file(
    request: Request,
    secret: Annotated[str, Path(min_length=1, max_length=200)],
    name: Annotated[str, Path(description="One of: " + ", ".join(feeds.FILES))],
    format: Format = None,
) -> Response:
    """A player's own files: its groups' channels, stream URLs carrying its tokens."""
    return await _serve(request, name, secret, format)
