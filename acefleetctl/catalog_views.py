"""How the catalog, guide and player commands show central's JSON to a person (``--json`` skips
all of this). A player's secret URLs are printed only by :func:`secret`, the one answer that
carries them."""

from __future__ import annotations

from typing import Any

from acefleetctl.tables import age, cell, short, table, when
from acefleetctl.views import pairs


def content(channel: dict[str, Any]) -> str:
    return f"{channel['content_kind']}:{channel['content_value']}"


def channels(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            c["id"],
            c.get("number"),
            c["name"],
            c.get("group"),
            short(content(c), 20),
            c.get("tvg_id"),
            c["enabled"],
            c.get("standby", False),
        ]
        for c in items
    ]
    headers = ["ID", "NUMBER", "NAME", "GROUP", "CONTENT", "TVG-ID", "ENABLED", "STANDBY"]
    return table(headers, rows, empty="(no channels: acefleet channels import FILE)")


def import_report(report: dict[str, Any], name: str) -> str:
    counts = (
        f"{report['created']} created, {report['updated']} updated, {report['unchanged']} unchanged"
    )
    if report["dry_run"]:
        return f"{name}: dry run, nothing written: would be {counts}"
    return f"{name}: imported: {counts}"


def bad_line(error: dict[str, Any]) -> str:
    return f"line {error['line']}: {error['message']} — {error['text']}"


def guide(g: dict[str, Any]) -> str:
    watched = [("file", g["path"])] if g.get("path") else []
    if not g.get("present"):
        why = "central reads the file; it is missing or not a guide" if g.get("path") else ""
        return pairs([("guide", "none stored" + (f" ({why})" if why else "")), *watched])
    imported = g.get("imported_at")
    return pairs(
        [
            ("guide", f"from {g.get('source')}, imported {when(imported)} ({age(imported)} ago)"),
            *watched,
            ("size", f"{g.get('bytes')} bytes"),
            ("channels", g.get("channels")),
            ("programmes", g.get("programmes")),
            ("matched", f"{g.get('matched_channels')} catalog channels have their tvg-id in it"),
        ]
    )


def groups(player: dict[str, Any]) -> str:
    return ",".join(player.get("groups") or []) or "all"


def limit(player: dict[str, Any]) -> str:
    return "none" if player.get("max_streams") == 0 else cell(player.get("max_streams"))


def players(items: list[dict[str, Any]]) -> str:
    rows = [[p["id"], p["name"], groups(p), limit(p), p["enabled"]] for p in items]
    headers = ["ID", "NAME", "GROUPS", "MAX STREAMS", "ENABLED"]
    return table(headers, rows, empty="(no players: acefleet players add NAME)")


def player_line(p: dict[str, Any]) -> str:
    state = "enabled" if p["enabled"] else "disabled"
    return f"player {p['id']} {p['name']}: groups {groups(p)}, max streams {limit(p)}, {state}"


def secret(answer: dict[str, Any], rotated: bool) -> str:
    p = answer["player"]
    head = player_line(p) + ("\nnew secret: the old URLs answer 404 from now on" if rotated else "")
    urls = pairs(
        [
            ("playlist", answer["playlist_url"]),
            ("guide", answer["guide_url"]),
            ("hdhomerun", answer["hdhomerun_url"]),
        ]
    )
    note = (
        "These URLs hold the player's secret and are shown only now: central keeps only its\n"
        f"hash. Lost them? `acefleet players rotate {p['id']}` makes new ones."
    )
    return f"{head}\n{urls}\n{note}"


def usage(data: dict[str, Any], known: list[dict[str, Any]]) -> str:
    """Every player with its streams fleet-wide (0 when it watches none) and per edge host;
    ids central still counts but no longer lists (a deleted player's running streams) too."""
    streams: dict[str, int] = data.get("streams", {})
    by_host: dict[str, dict[str, int]] = data.get("by_host", {})
    names = {str(p["id"]): p for p in known}
    ids = sorted(set(names) | set(streams), key=lambda i: (len(i), i))
    rows = []
    for pid in ids:
        p = names.get(pid)
        hosts = ",".join(f"{h}:{n[pid]}" for h, n in sorted(by_host.items()) if n.get(pid))
        rows.append(
            [
                int(pid) if pid.isdigit() else pid,
                p["name"] if p else "(deleted)",
                streams.get(pid, 0),
                limit(p) if p else None,
                hosts,
            ]
        )
    headers = ["ID", "NAME", "STREAMS", "MAX STREAMS", "HOSTS"]
    return table(headers, rows, empty="(no players)")
