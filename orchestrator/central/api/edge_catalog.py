"""What edges poll so they can serve the player files and check tokens while central is away.

``GET /v1/edge/catalog`` is the :class:`EdgeCatalog` (channels, players with their secrets'
hashes only, the fleet's tuner count, the player URL); ``GET /v1/edge/guide`` the guide cut to
the catalog's enabled channels. Both carry their version as a strong ETag and answer 304 to
``If-None-Match``, so a proxy polling every few seconds moves bytes only after a change. The
same :func:`edge_catalog` is what central renders its own player files from, so a playlist
looks the same from central and from an edge.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from acefleet.catalog_wire import EdgeCatalog
from orchestrator.central import views
from orchestrator.central.api.deps import no_key_in_url
from orchestrator.central.catalog.players import PlayerStore
from orchestrator.central.catalog.store import CatalogStore
from orchestrator.central.http import ERROR_RESPONSES, ApiError, service_only
from orchestrator.central.state import Central

router = APIRouter(
    prefix="/v1/edge",
    dependencies=[Depends(no_key_in_url), Depends(service_only)],
    responses=ERROR_RESPONSES,
    tags=["services"],
)


async def catalog_store(request: Request) -> CatalogStore:
    store: CatalogStore = request.app.state.catalog
    return store


async def player_store(request: Request) -> PlayerStore:
    store: PlayerStore = request.app.state.players
    return store


def tuner_count(c: Central) -> int:
    """Free stream slots of the fleet (placeable engines' free capacity, as the fleet view
    counts them), at least 1 and at most ``hdhomerun_max_tuners``: a media server that believes
    it has more tuners than the fleet has room asks for streams that cannot start."""
    free = views.summary(c).slots_free
    return max(1, min(free, c.settings.hdhomerun_max_tuners))


class EdgeView:
    """The last EdgeCatalog built, rebuilt only when one of its inputs moved."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._value: EdgeCatalog | None = None

    def get(self, c: Central, catalog: CatalogStore, players: PlayerStore) -> EdgeCatalog:
        s = c.settings
        tuners = tuner_count(c)
        guide_version = catalog.guide_version()
        key = (catalog.version, players.version, guide_version, tuners)
        if self._value is not None and key == self._key:
            return self._value
        inputs = "\0".join(
            map(str, (*key, s.player_url, s.tokens_required, s.token_ttl_s))
        ).encode()
        self._value = EdgeCatalog(
            version=hashlib.blake2b(inputs, digest_size=12).hexdigest(),
            player_url=s.player_url,
            tokens_required=s.tokens_required,
            tuner_count=tuners,
            token_ttl_s=s.token_ttl_s,
            channels=catalog.channels(),
            players=players.edge_players(),
            guide_version=guide_version,
        )
        self._key = key
        return self._value


def edge_catalog(request: Request) -> EdgeCatalog:
    view: EdgeView | None = getattr(request.app.state, "edge_view", None)
    if view is None:
        view = request.app.state.edge_view = EdgeView()
    return view.get(request.app.state.central, request.app.state.catalog, request.app.state.players)


def _not_modified(request: Request, tag: str) -> bool:
    inm = request.headers.get("if-none-match", "")
    return tag in (t.strip().removeprefix("W/") for t in inm.split(","))


@router.get("/catalog", response_model=EdgeCatalog)
async def catalog(request: Request) -> Response:
    """Channels, players (secret hashes only), tuner count and player URL; ETag = version."""
    body = edge_catalog(request)
    tag = f'"{body.version}"'
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if _not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


@router.get(
    "/guide",
    response_class=Response,
    responses={
        200: {"content": {"application/xml": {}}, "description": "XMLTV"},
        404: {"description": "No guide is stored"},
    },
)
async def guide(
    request: Request, catalog: Annotated[CatalogStore, Depends(catalog_store)]
) -> Response:
    """The stored guide cut to the catalog's enabled channels (XMLTV); ETag = guide_version."""
    version = catalog.guide_version()
    xml = await catalog.filtered_guide()
    if xml is None or not version:
        raise ApiError(404, "no_guide", "no XMLTV guide is stored")
    tag = f'"{version}"'
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if _not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    return Response(xml, media_type="application/xml", headers=headers)
