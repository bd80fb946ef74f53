"""``acefleet players …``: player profiles through central's ``/v1/players`` (docs/catalog.md).

A player's secret URLs are printed once, by ``players add`` and ``players rotate`` (the only two
answers of central that carry them); nothing else ever shows them, and central cannot either.
"""

from __future__ import annotations

import argparse
from typing import Any

from acefleetctl import catalog_views as views
from acefleetctl.client import Central
from acefleetctl.command import Add, Handler, path

FIELDS = ("name", "groups", "max_streams", "enabled")


def register(add: Add, common: argparse.ArgumentParser) -> None:
    p = add("players", _list, "players (profiles): list, add, rotate, enable, disable, rm, usage")
    sub = p.add_subparsers(dest="players_command", metavar="SUBCOMMAND")

    def child(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        c.set_defaults(handler=handler)
        return c

    child("list", _list, "every player (the default; never a secret)")
    c = child("add", _add, "a new player; prints its secret URLs, this once")
    c.add_argument("name", help="who it is for (a household, a media server)")
    c.add_argument(
        "--groups",
        type=_groups,
        help="comma-separated channel groups it may watch (default: every group)",
    )
    c.add_argument(
        "--max-streams",
        type=int,
        help="concurrent streams fleet-wide, 0: no limit (central's default: 2)",
    )
    c = child("rotate", _rotate, "a new secret: prints the new URLs; the old ones stop")
    c.add_argument("id", type=int, help="the player's id (acefleet players)")
    for verb, on in (("enable", True), ("disable", False)):
        what = "let a player in again" if on else "refuse a player's URLs and new streams (403)"
        c = child(verb, _enable, what)
        c.add_argument("id", type=int, help="the player's id (acefleet players)")
        c.set_defaults(enabled=on)
    c = child("rm", _remove, "delete a player: its URLs stop at once")
    c.add_argument("id", type=int, help="the player's id (acefleet players)")
    child("usage", _usage, "streams each player is watching, fleet-wide and per edge")


def _groups(value: str) -> list[str]:
    return [g.strip() for g in value.split(",") if g.strip()]


def _list(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/players")
    return data, views.players(data["items"])


def _add(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    body: dict[str, Any] = {"name": args.name}
    if args.groups is not None:
        body["groups"] = args.groups
    if args.max_streams is not None:
        body["max_streams"] = args.max_streams
    data = c.post("/v1/players", body)
    return data, views.secret(data, rotated=False)


def _rotate(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.post(path("players", args.id, "secret"))
    return data, views.secret(data, rotated=True)


def _enable(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    # Central replaces every field (PUT): read the player, change one, send the fields back.
    one = c.get(path("players", args.id))
    fields = {k: one[k] for k in FIELDS}
    data = c.put(path("players", args.id), {**fields, "enabled": args.enabled})
    return data, views.player_line(data)


def _remove(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    c.delete(path("players", args.id))  # 204: no JSON, so --json prints null
    return None, f"player {args.id} deleted: its URLs stop at once"


def _usage(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/players/usage")
    known = c.get("/v1/players")  # usage counts by id; the list gives the names and limits
    return data, views.usage(data, known["items"])
