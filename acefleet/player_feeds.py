"""The files players read, rendered from an :class:`EdgeCatalog` (see docs/catalog.md).

Six files, at the root of the player port and under a player's secret prefix ``/p/<secret>/``:
``playlist.m3u``, ``epg.xml`` and the HDHomeRun emulation (``discover.json``, ``lineup.json``,
``lineup_status.json``, ``device.xml``). Central serves them from its database and every proxy
from its cached copy of the same catalog, so the rule of this module is: pure functions of the
catalog, the guide bytes, the token keys and the clock — no I/O, no web framework — and the same
inputs give the same bytes on every host.

Access: in open mode the root files list every enabled channel with plain stream URLs. A
player's files list the enabled channels of its groups; when token keys are given, its stream
URLs carry a token signed for that player and channel (the proxy checks it; in token mode it
needs it). In token mode the root files that name streams (playlist, HDHomeRun) answer 401
``player_url_required``: only a player's own URL lists streams then.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lxml import etree  # type: ignore[import-untyped]

from acefleet.catalog_wire import CatalogChannel, EdgeCatalog, EdgePlayer
from acefleet.tokens import TokenKeys, secret_sha256, sign

PLAYLIST = "playlist.m3u"
GUIDE = "epg.xml"
DISCOVER = "discover.json"
LINEUP = "lineup.json"
LINEUP_STATUS = "lineup_status.json"
DEVICE = "device.xml"
FILES = (PLAYLIST, GUIDE, DISCOVER, LINEUP, LINEUP_STATUS, DEVICE)
# Files that name stream URLs: in token mode only a player's own URL may list them.
_STREAM_FILES = frozenset({PLAYLIST, DISCOVER, LINEUP, LINEUP_STATUS, DEVICE})

M3U_TYPE = "audio/x-mpegurl"
XML_TYPE = "application/xml"
JSON_TYPE = "application/json"

# What a media server expects of an HDHomeRun: Jellyfin only offers its transcoding profiles for
# "hdtc" models, Plex and Emby read the rest as given. The firmware is a fixed date-like version.
MANUFACTURER = "Silicondust"
MODEL = "HDTC-2US"
FIRMWARE_NAME = "hdhomeruntc_atsc"
FIRMWARE_VERSION = "20240101"
SECRET_MIN = 32  # characters of a player's secret (URL-safe random)
_HOUR = 3600
XMLTV_DOCTYPE = '<!DOCTYPE tv SYSTEM "xmltv.dtd">'


class FeedError(Exception):
    """A request for a player file that is answered with an error (JSON, by the caller)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Feed:
    body: bytes
    media_type: str


@dataclass(frozen=True, slots=True)
class Request:
    """What the server knows about one request for a player file."""

    name: str  # one of FILES
    secret: str | None  # the /p/<secret>/ part, None at the root
    files_base: str  # base URL of the files themselves (root or /p/<secret>), no trailing /
    stream_base: str  # base URL of stream URLs (the VIP: the catalog's player_url)
    hls: bool = False  # ?format=hls: stream URLs are HLS master playlists


# --- who is asking ---------------------------------------------------------------------------


def players_by_hash(catalog: EdgeCatalog) -> dict[str, EdgePlayer]:
    return {p.secret_sha256: p for p in catalog.players}


def resolve(
    catalog: EdgeCatalog, index: Mapping[str, EdgePlayer], secret: str | None, name: str
) -> EdgePlayer | None:
    """The player a request is for (None: the root files); :class:`FeedError` when it may not
    read ``name``. The secret is hashed first, so the dict lookup's timing says nothing about
    how close a guess was."""
    if name not in FILES:
        raise FeedError(404, "not_found", f"no player file {name!r}")
    if secret is None:
        if catalog.tokens_required and name in _STREAM_FILES:
            raise FeedError(
                401,
                "player_url_required",
                "this fleet needs a player's own URL (/p/<secret>/...): ask its operator",
            )
        return None
    player = index.get(secret_sha256(secret)) if len(secret) <= 200 else None
    if player is None:
        raise FeedError(404, "player_unknown", "no player has this URL")
    if not player.enabled:
        raise FeedError(403, "player_disabled", f"player {player.name!r} is disabled")
    return player


def visible_channels(catalog: EdgeCatalog, player: EdgePlayer | None) -> list[CatalogChannel]:
    """The enabled channels ``player`` may see (all of them at the root), numbered ones first by
    number, then by name."""
    groups = set(player.groups) if player is not None else set()
    chosen = [c for c in catalog.channels if c.enabled and (not groups or c.group in groups)]
    return sorted(chosen, key=lambda c: (c.number is None, c.number or 0, c.name, c.id))


def tuner_count(catalog: EdgeCatalog, player: EdgePlayer | None) -> int:
    """TunerCount: the fleet's count, bounded by the player's own stream limit."""
    if player is not None and player.max_streams > 0:
        return max(1, min(catalog.tuner_count, player.max_streams))
    return catalog.tuner_count


# --- stream URLs and tokens ------------------------------------------------------------------


def token_expiry(now: float, ttl_s: float) -> int:
    """``now + ttl_s`` rounded UP to the hour: one playlist per hour, so it caches."""
    return math.ceil((now + ttl_s) / _HOUR) * _HOUR


def stream_url(stream_base: str, channel: CatalogChannel, *, hls: bool, token: str | None) -> str:
    path = "/ace/manifest.m3u8" if hls else "/ace/getstream"
    url = f"{stream_base}{path}?{channel.content_kind}={quote(channel.content_value, safe='')}"
    return f"{url}&token={token}" if token else url


def _urls(
    catalog: EdgeCatalog,
    player: EdgePlayer | None,
    channels: list[CatalogChannel],
    req: Request,
    keys: TokenKeys | None,
    now: float,
) -> list[str]:
    expires = token_expiry(now, catalog.token_ttl_s)
    out = []
    for channel in channels:
        token = None
        if player is not None and keys is not None:
            token = sign(keys, player.id, channel.content_key, expires)
        out.append(stream_url(req.stream_base, channel, hls=req.hls, token=token))
    return out


# --- M3U ---------------------------------------------------------------------------------------


def _attr(value: str) -> str:
    # An attribute value ends at '"' and a line at a newline: neither may come from the data.
    return " ".join(value.replace('"', "'").split())


def playlist(
    catalog: EdgeCatalog,
    player: EdgePlayer | None,
    req: Request,
    keys: TokenKeys | None,
    now: float,
) -> str:
    guide = _attr(f"{req.files_base}/{GUIDE}")
    lines = [f'#EXTM3U url-tvg="{guide}" x-tvg-url="{guide}"']
    channels = visible_channels(catalog, player)
    for channel, url in zip(
        channels, _urls(catalog, player, channels, req, keys, now), strict=True
    ):
        attrs = [
            ("tvg-id", channel.tvg_id),
            ("tvg-name", channel.name),
            ("tvg-logo", channel.logo),
            ("group-title", channel.group),
        ]
        if channel.number is not None:
            attrs.append(("tvg-chno", str(channel.number)))
        text = " ".join(f'{k}="{_attr(v)}"' for k, v in attrs)
        # The title is everything after the last comma for some parsers: keep commas out.
        title = _attr(channel.name.replace(",", " "))
        lines += [f"#EXTINF:-1 {text},{title}", url]
    return "\n".join(lines) + "\n"


# --- XMLTV -------------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    # Nothing in a guide is trusted: no entities, no DTD, no network (a fresh parser per call,
    # lxml parsers are not thread-safe).
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


def empty_guide() -> bytes:
    return _document(etree.Element("tv", {"generator-info-name": "acefleet"}))


def _document(root: etree._Element) -> bytes:
    body: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + XMLTV_DOCTYPE.encode() + b"\n" + body + b"\n"
    )


def filter_guide(xml: bytes | None, tvg_ids: Collection[str]) -> bytes:
    """The XMLTV guide with only the ``<channel>`` and ``<programme>`` elements of ``tvg_ids``
    (in their order; the ``<tv>`` attributes kept). No guide, or one that does not parse as
    XMLTV, gives an empty guide: players then show channels without programmes."""
    if not xml:
        return empty_guide()
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError:
        return empty_guide()
    if root.tag != "tv":
        return empty_guide()
    keep = set(tvg_ids)
    for element in list(root):
        tag = element.tag
        if tag == "channel":
            wanted = element.get("id") in keep
        elif tag == "programme":
            wanted = element.get("channel") in keep
        else:
            continue
        if not wanted:
            previous = element.getprevious()
            if previous is not None:
                previous.tail = element.tail
            else:
                root.text = element.tail
            root.remove(element)
    return _document(root)


def guide_ids(channels: list[CatalogChannel]) -> frozenset[str]:
    return frozenset(c.tvg_id for c in channels if c.tvg_id)


def guide_version(guide_etag: str, tvg_ids: Collection[str]) -> str:
    """ETag of a filtered guide: changes with the stored guide and with the ids kept."""
    if not guide_etag:
        return ""
    ids = "\n".join(sorted(tvg_ids)).encode()
    return hashlib.blake2b(guide_etag.encode() + b"\0" + ids, digest_size=12).hexdigest()


class GuideCache:
    """Filtered guides by (guide version, ids): filtering a large guide per request would cost
    more than serving it. Small and LRU, since the keys are the catalog's few player views."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, frozenset[str]], bytes] = OrderedDict()

    def get(self, version: str, xml: bytes | None, tvg_ids: frozenset[str]) -> bytes:
        key = (version, tvg_ids)
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        out = filter_guide(xml, tvg_ids)
        self._items[key] = out
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return out


# --- HDHomeRun -------------------------------------------------------------------------------


def _device_seed(catalog: EdgeCatalog, player: EdgePlayer | None) -> bytes:
    who = f"player:{player.id}" if player is not None else "fleet"
    return f"{catalog.player_url}\0{who}".encode()


def device_id(catalog: EdgeCatalog, player: EdgePlayer | None) -> str:
    """8 hex digits, stable per fleet (its player URL) and player: a media server keys its
    tuner settings on it."""
    return hashlib.sha256(b"id\0" + _device_seed(catalog, player)).hexdigest()[:8].upper()


def _device_auth(catalog: EdgeCatalog, player: EdgePlayer | None) -> str:
    return hashlib.sha256(b"auth\0" + _device_seed(catalog, player)).hexdigest()[:24]


def _friendly_name(player: EdgePlayer | None) -> str:
    return f"acefleet ({player.name})" if player is not None else "acefleet"


def discover(catalog: EdgeCatalog, player: EdgePlayer | None, req: Request) -> dict[str, Any]:
    return {
        "FriendlyName": _friendly_name(player),
        "Manufacturer": MANUFACTURER,
        "ModelNumber": MODEL,
        "FirmwareName": FIRMWARE_NAME,
        "FirmwareVersion": FIRMWARE_VERSION,
        "DeviceID": device_id(catalog, player),
        "DeviceAuth": _device_auth(catalog, player),
        "BaseURL": req.files_base,
        "LineupURL": f"{req.files_base}/{LINEUP}",
        "TunerCount": tuner_count(catalog, player),
    }


def lineup(
    catalog: EdgeCatalog,
    player: EdgePlayer | None,
    req: Request,
    keys: TokenKeys | None,
    now: float,
) -> list[dict[str, Any]]:
    channels = visible_channels(catalog, player)
    urls = _urls(catalog, player, channels, req, keys, now)
    # Media servers need a number per channel: unnumbered ones follow the highest number.
    spare = max((c.number for c in channels if c.number is not None), default=0)
    out = []
    for channel, url in zip(channels, urls, strict=True):
        number = channel.number
        if number is None:
            spare += 1
            number = spare
        out.append({"GuideNumber": str(number), "GuideName": channel.name, "URL": url, "HD": 1})
    return out


def lineup_status() -> dict[str, Any]:
    return {"ScanInProgress": 0, "ScanPossible": 1, "Source": "Cable", "SourceList": ["Cable"]}


def device_xml(catalog: EdgeCatalog, player: EdgePlayer | None, req: Request) -> bytes:
    ns = "urn:schemas-upnp-org:device-1-0"
    root = etree.Element(f"{{{ns}}}root", nsmap={None: ns})

    def child(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
        element = etree.SubElement(parent, f"{{{ns}}}{tag}")
        element.text = text
        return element

    child(root, "URLBase", req.files_base)
    spec = child(root, "specVersion")
    child(spec, "major", "1")
    child(spec, "minor", "0")
    device = child(root, "device")
    child(device, "deviceType", "urn:schemas-upnp-org:device:MediaServer:1")
    child(device, "friendlyName", _friendly_name(player))
    child(device, "manufacturer", MANUFACTURER)
    child(device, "modelName", MODEL)
    child(device, "modelNumber", MODEL)
    child(device, "serialNumber", device_id(catalog, player))
    digest = hashlib.sha256(b"udn\0" + _device_seed(catalog, player)).hexdigest()
    udn = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    child(device, "UDN", f"uuid:{udn}")
    body: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=True)
    return body


# --- one entry point for both servers ----------------------------------------------------------


def render(
    catalog: EdgeCatalog,
    player: EdgePlayer | None,
    req: Request,
    *,
    keys: TokenKeys | None,
    now: float,
    guide: GuideCache,
    guide_xml: bytes | None,
) -> Feed:
    """The file ``req.name`` for ``player`` (from :func:`resolve`). ``guide_xml`` is the guide
    already filtered to the whole catalog (``catalog.guide_version`` is its version)."""
    if req.name == PLAYLIST:
        return Feed(playlist(catalog, player, req, keys, now).encode(), M3U_TYPE)
    if req.name == GUIDE:
        ids = guide_ids(visible_channels(catalog, player))
        return Feed(guide.get(catalog.guide_version, guide_xml, ids), XML_TYPE)
    if req.name == DEVICE:
        return Feed(device_xml(catalog, player, req), XML_TYPE)
    value: Any
    if req.name == DISCOVER:
        value = discover(catalog, player, req)
    elif req.name == LINEUP:
        value = lineup(catalog, player, req, keys, now)
    elif req.name == LINEUP_STATUS:
        value = lineup_status()
    else:
        raise FeedError(404, "not_found", f"no player file {req.name!r}")
    return Feed(json.dumps(value, separators=(",", ":")).encode(), JSON_TYPE)
