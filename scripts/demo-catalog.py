#!/usr/bin/env python3
"""The lab's demo catalog and its XMLTV guide: what `scripts/lab.sh up` (and Molecule's converge)
hands central as its seed catalog and guide file (central_catalog_src, central_guide_src).

    scripts/demo-catalog.py OUTDIR      writes OUTDIR/channels.m3u and OUTDIR/guide.xml

The channels are the simulator's: any content id plays in the lab, and the simulator picks a
channel's clip from the id (enginesim/clips_library.py: sha256 of the id's infohash, sha1(id)),
so these ids were chosen to play the clips CH 1 … CH 5, one each. Logos are http URLs that need not
resolve (players show a placeholder). The guide covers yesterday, today and tomorrow (UTC) with
programmes of 30 to 90 minutes, so "now" always has one; it is built from the day alone, so a
second run on the same day writes the same bytes (the converge stays idempotent). It also lists a
channel the catalog does not have: players never see it (central filters the guide).

A file is rewritten only when its bytes change; the one line printed says which were.
Standard library only (it runs with any python3).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

LOGOS = "http://logos.acefleet.invalid"


@dataclass(frozen=True)
class Channel:
    number: int
    name: str
    group: str
    tvg_id: str
    content_id: str
    shows: tuple[tuple[str, int], ...]  # (title, minutes), repeated through the day


CHANNELS = (
    Channel(101, "Lab News", "News", "news.lab.acefleet",
            "6a4d06eb4d94df26111749d9f0596a411d9d8146",
            (("Morning Headlines", 60), ("World Report", 30), ("Business Today", 30),
             ("Weather", 30), ("Evening News", 60))),
    Channel(201, "Lab Sport", "Sport", "sport.lab.acefleet",
            "b2cfa2e278411597e450c8d7a93c692fad980968",
            (("Match of the Day", 90), ("Goals Roundup", 30), ("Tennis Live", 60))),
    Channel(301, "Lab Movies", "Movies", "movies.lab.acefleet",
            "b990a1ea89824c6a41f883eadf87ccc6a9318c4a",
            (("Feature Film", 90), ("Short Films", 30), ("Classic Cinema", 90))),
    Channel(401, "Lab Kids", "Kids", "kids.lab.acefleet",
            "813b35dee1d5909a750be0aa870c6299485d19c7",
            (("Cartoons", 30), ("Science Club", 30), ("Story Time", 30), ("Puppets", 30))),
    Channel(501, "Lab Music", "Music", "music.lab.acefleet",
            "80de3140fceed2869906a1ad349c97aa4786fb8d",
            (("Top 40", 60), ("Live Session", 60), ("Night Mix", 120))),
)  # fmt: skip
# In the guide only: filtered out of what players get.
NOT_IN_CATALOG = Channel(
    999, "Guide Only", "Other", "guide-only.example", "0" * 40, (("Not for players", 60),)
)


def playlist() -> str:
    lines = ["#EXTM3U"]
    for ch in CHANNELS:
        lines.append(
            f'#EXTINF:-1 tvg-id="{ch.tvg_id}" tvg-name="{ch.name}" '
            f'tvg-logo="{LOGOS}/{ch.tvg_id}.png" group-title="{ch.group}" '
            f'tvg-chno="{ch.number}",{ch.name}'
        )
        lines.append(f"acestream://{ch.content_id}")
    return "\n".join(lines) + "\n"


def _stamp(at: dt.datetime) -> str:
    return at.strftime("%Y%m%d%H%M%S +0000")


def guide(today: dt.date) -> bytes:
    start = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=1)
    end = start + dt.timedelta(days=3)
    tv = ET.Element("tv", {"generator-info-name": "acefleet scripts/demo-catalog.py"})
    listed = (*CHANNELS, NOT_IN_CATALOG)
    for ch in listed:
        channel = ET.SubElement(tv, "channel", {"id": ch.tvg_id})
        ET.SubElement(channel, "display-name", {"lang": "en"}).text = ch.name
        ET.SubElement(channel, "icon", {"src": f"{LOGOS}/{ch.tvg_id}.png"})
    for ch in listed:
        at, n = start, 0
        while at < end:
            title, minutes = ch.shows[n % len(ch.shows)]
            stop = min(at + dt.timedelta(minutes=minutes), end)
            programme = ET.SubElement(
                tv, "programme", {"start": _stamp(at), "stop": _stamp(stop), "channel": ch.tvg_id}
            )
            ET.SubElement(programme, "title", {"lang": "en"}).text = title
            desc = f"{title} on {ch.name}, from the acefleet lab's simulator ({ch.group})."
            ET.SubElement(programme, "desc", {"lang": "en"}).text = desc
            ET.SubElement(programme, "category", {"lang": "en"}).text = ch.group
            at, n = stop, n + 1
    ET.indent(tv)
    body = ET.tostring(tv, encoding="unicode")
    head = '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE tv SYSTEM "xmltv.dtd">\n'
    return (head + body + "\n").encode()


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # a reader (Ansible's copy) never sees half a file
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    today = dt.datetime.now(dt.UTC).date()
    files = {"channels.m3u": playlist().encode(), "guide.xml": guide(today)}
    written = [name for name, data in files.items() if write_if_changed(args.outdir / name, data)]
    state = f"written: {', '.join(written)}" if written else "unchanged"
    print(f"demo catalog in {args.outdir}: {len(CHANNELS)} channels, guide of {today} ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
