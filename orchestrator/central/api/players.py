"""Operator API of players (profiles): ``/v1/players`` (see docs/catalog.md).

Reads need any key, writes an operator key. A player's secret is answered only when it is made
(``POST /v1/players``, ``POST /v1/players/{id}/secret``) inside its URLs: central keeps only its
SHA-256 and cannot show it again. ``GET /v1/players/usage`` is what the proxies' per-player
stream limits read (any key; the proxies use their service key).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from acefleet.catalog_wire import Player, PlayerFields, PlayerList, PlayerSecret, PlayerUsage
from acefleet.player_feeds import GUIDE, PLAYLIST
from acefleet.wire import ErrorBody
from orchestrator.central.api.deps import Audit, central, no_key_in_url
from orchestrator.central.api.edge_catalog import player_store
from orchestrator.central.catalog import players as store
from orchestrator.central.catalog.players import PlayerStore, UnknownPlayer
from orchestrator.central.http import ERROR_RESPONSES, ApiError, any_reader, etagged, operator_only
from orchestrator.central.state import Central

router = APIRouter(
    prefix="/v1/players",
    dependencies=[Depends(no_key_in_url)],
    responses=ERROR_RESPONSES,
    tags=["players"],
)
Players = Annotated[PlayerStore, Depends(player_store)]
State = Annotated[Central, Depends(central)]
PlayerId = Annotated[int, Path(ge=1, le=2**31 - 1)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such player"}
}
Reader = [Depends(any_reader)]
Operator = [Depends(operator_only)]


def _unknown(exc: UnknownPlayer) -> ApiError:
    return ApiError(404, "unknown_player", str(exc))


def files_base(request: Request, c: Central) -> str:
    """Where players reach the player files: the fleet's player URL (the VIP), else central."""
    return c.settings.player_url or str(request.base_url).rstrip("/")


def secret_answer(request: Request, c: Central, player: Player, secret: str) -> PlayerSecret:
    base = f"{files_base(request, c)}/p/{secret}"
    return PlayerSecret(
        player=player,
        secret=secret,
        playlist_url=f"{base}/{PLAYLIST}",
        guide_url=f"{base}/{GUIDE}",
        hdhomerun_url=base,
    )


@router.get("", dependencies=Reader, response_model=PlayerList)
async def list_players(request: Request, players: Players) -> Response:
    """Every player (never a secret; ETag: send If-None-Match to poll cheaply)."""
    return etagged(request, PlayerList(items=players.list()))


@router.post("", dependencies=Operator, status_code=201)
async def create_player(
    request: Request, body: PlayerFields, players: Players, c: State, audit: Audit
) -> PlayerSecret:
    """A new player and its secret URLs: shown this once, keep them secret."""
    player, secret = await players.create(body)
    audit("player.create", player.id, **body.model_dump(mode="json"))  # the secret is not in it
    return secret_answer(request, c, player, secret)


@router.get("/usage", dependencies=Reader)
async def usage(c: State) -> PlayerUsage:
    """Streams each player is watching, fleet-wide and per edge host (from proxy snapshots)."""
    return store.usage(c.registry)


@router.get("/{player_id}", dependencies=Reader, responses=NOT_FOUND)
async def get_player(player_id: PlayerId, players: Players) -> Player:
    try:
        return players.get(player_id)
    except UnknownPlayer as exc:
        raise _unknown(exc) from None


@router.put("/{player_id}", dependencies=Operator, responses=NOT_FOUND)
async def replace_player(
    player_id: PlayerId, body: PlayerFields, players: Players, audit: Audit
) -> Player:
    """Replace name, groups, limit, enabled (the secret stays)."""
    try:
        replaced = await players.replace(player_id, body)
    except UnknownPlayer as exc:
        raise _unknown(exc) from None
    audit("player.update", player_id, **body.model_dump(mode="json"))
    return replaced


@router.delete("/{player_id}", dependencies=Operator, status_code=204, responses=NOT_FOUND)
async def delete_player(player_id: PlayerId, players: Players, audit: Audit) -> Response:
    """Its URLs stop at once; streams it started run on, new ones need another player's token."""
    try:
        await players.delete(player_id)
    except UnknownPlayer as exc:
        raise _unknown(exc) from None
    audit("player.delete", player_id)
    return Response(status_code=204)


@router.post("/{player_id}/secret", dependencies=Operator, responses=NOT_FOUND)
async def rotate_secret(
    request: Request, player_id: PlayerId, players: Players, c: State, audit: Audit
) -> PlayerSecret:
    """A new secret: the old URLs answer 404 from now on (edges: within their poll interval)."""
    try:
        player, secret = await players.rotate_secret(player_id)
    except UnknownPlayer as exc:
        raise _unknown(exc) from None
    audit("player.secret_rotate", player_id, name=player.name)  # never the secret itself
    return secret_answer(request, c, player, secret)
