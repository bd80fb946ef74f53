"""Channels from an operator's M3U playlist or JSON, checked line by line (our own strict
parser: a playlist is either understood entirely or refused with every bad line named).

M3U: ``#EXTM3U`` first, then per channel ``#EXTINF:<duration> key="value" …,<title>`` followed
by its URL, one of ``acestream://<id>``, ``http(s)://…/ace/getstream?…`` or
``http(s)://…/ace/manifest.m3u8?…`` with exactly one of ``id=``, ``content_id=`` (both a content
id) or ``infohash=``. Kept: ``tvg-name`` (else the title) as the name, ``tvg-id``, ``tvg-logo``,
``group-title`` (else a preceding ``#EXTGRP:``), ``tvg-chno``; other attributes and ``#``
directives are ignored. JSON: a list of channel objects, or an export (``{"items": […]}``),
whose ``id`` fields are ignored (channels are matched by content). Errors carry the 1-based
line (M3U) or item number (JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError, field_validator
from pydantic_core import ErrorDetails

from acefleet.catalog_wire import ChannelFields, ImportLineError

SELECTORS: dict[str, Literal["id", "infohash"]] = {
    "id": "id",
    "content_id": "id",
    "infohash": "infohash",
}
STREAM_PATHS = ("/ace/getstream", "/ace/manifest.m3u8")
_DURATION = re.compile(r"-?\d+(?:\.\d+)?")
_ATTRIBUTE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=(?:"([^"]*)"|([^\s,"]*))')
TEXT_MAX = 200
# Field names as a playlist writer knows them.
M3U_NAMES = {
    "name": "tvg-name/title",
    "group": "group-title",
    "logo": "tvg-logo",
    "tvg_id": "tvg-id",
    "number": "tvg-chno",
    "content_value": "content id",
}


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ChannelInput(ChannelFields):
    """A channel as an operator sends it to central: the wire rules, and no control characters
    in its texts (a line break would split a player's playlist entry, and NUL is no text for
    PostgreSQL)."""

    @field_validator("name", "group", "logo", "tvg_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if CONTROL.search(value):
            raise ValueError("must not contain control characters (line breaks, tabs, NUL)")
        return value


@dataclass(slots=True)
class Parsed:
    """Channels with the line each came from, and every error found."""

    channels: list[tuple[int, ChannelFields]] = field(default_factory=list)
    errors: list[ImportLineError] = field(default_factory=list)

    def error(self, line: int, text: str, message: str) -> None:
        self.errors.append(ImportLineError(line=line, text=text[:TEXT_MAX], message=message))


class LineError(ValueError):
    """One line's fault, for the report."""


def decode(data: bytes, parsed: Parsed) -> str | None:
    """UTF-8 text (a BOM is dropped), or None with the first undecodable line reported."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        text = data[start : start + TEXT_MAX].decode("utf-8", "replace").split("\n")[0]
        parsed.error(line, text, "not UTF-8 text")
        return None


@dataclass(slots=True)
class _Entry:
    """An #EXTINF line waiting for its URL."""

    line: int
    text: str
    attributes: dict[str, str]
    title: str
    group_hint: str
    bad: bool  # already reported: its URL line is consumed without a second error


def parse_m3u(data: bytes) -> Parsed:
    parsed = Parsed()
    text = decode(data, parsed)
    if text is None:
        return parsed
    # split("\n"), not splitlines(): line numbers must match what an editor shows.
    lines = [raw.rstrip("\r") for raw in text.split("\n")]
    header_seen = False
    pending: _Entry | None = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not header_seen:
            header_seen = True
            if stripped.split(None, 1)[0] == "#EXTM3U":
                continue
            parsed.error(number, line, "a playlist starts with #EXTM3U")
        if stripped.startswith("#EXTINF:"):
            if pending is not None and not pending.bad:
                parsed.error(pending.line, pending.text, "#EXTINF without a URL after it")
            try:
                attributes, title = parse_extinf(stripped)
                chno = attributes.get("tvg-chno", "")
                if chno and not chno.isdigit():
                    raise LineError(f"tvg-chno must be a whole number, not {chno!r}")
                pending = _Entry(number, line, attributes, title, "", bad=False)
            except LineError as exc:
                parsed.error(number, line, str(exc))
                pending = _Entry(number, line, {}, "", "", bad=True)
            continue
        if stripped.startswith("#EXTGRP:"):
            if pending is not None:
                pending.group_hint = stripped.removeprefix("#EXTGRP:").strip()
            continue
        if stripped.startswith("#"):
            continue  # other directives and comments (#EXTVLCOPT, #KODIPROP, …)
        if pending is None:
            if "://" in stripped:
                parsed.error(number, line, "a URL without an #EXTINF line before it")
            else:
                parsed.error(number, line, "not a playlist line (#EXTINF, a URL or a # comment)")
            continue
        entry, pending = pending, None
        if not entry.bad:
            _add(parsed, entry, number, line)
    if pending is not None and not pending.bad:
        parsed.error(pending.line, pending.text, "#EXTINF without a URL after it")
    if not header_seen:
        parsed.error(1, "", "the playlist is empty (no #EXTM3U)")
    _check_duplicates(parsed, "line", lambda n: lines[n - 1])
    return parsed


def _add(parsed: Parsed, entry: _Entry, number: int, line: str) -> None:
    try:
        kind, value = parse_stream_url(line.strip())
        channel = _channel(entry, kind, value)
    except LineError as exc:
        parsed.error(number, line, str(exc))
        return
    except ValidationError as exc:
        # The content id came from the URL line; everything else from the #EXTINF line.
        on_url = [e for e in exc.errors() if e.get("loc") == ("content_value",)]
        rest = [e for e in exc.errors() if e.get("loc") != ("content_value",)]
        if on_url:
            parsed.error(number, line, _describe(on_url, M3U_NAMES))
        if rest:
            parsed.error(entry.line, entry.text, _describe(rest, M3U_NAMES))
        return
    parsed.channels.append((entry.line, channel))


def parse_extinf(line: str) -> tuple[dict[str, str], str]:
    """``#EXTINF:-1 a="b" c="d",Title`` → ({"a": "b", "c": "d"}, "Title")."""
    rest = line.removeprefix("#EXTINF:")
    duration = _DURATION.match(rest)
    if duration is None:
        raise LineError("#EXTINF needs a duration first (e.g. #EXTINF:-1 …)")
    pos = duration.end()
    attributes: dict[str, str] = {}
    while True:
        while pos < len(rest) and rest[pos] in " \t":
            pos += 1
        if pos >= len(rest):
            raise LineError("#EXTINF without ',<title>' at its end")
        if rest[pos] == ",":
            return attributes, rest[pos + 1 :].strip()
        match = _ATTRIBUTE.match(rest, pos)
        if match is None or match.end() == pos:
            raise LineError(f"malformed attribute at column {len('#EXTINF:') + pos + 1}")
        value = match.group(2) if match.group(2) is not None else match.group(3)
        attributes[match.group(1).lower()] = value.strip()
        pos = match.end()
        if pos < len(rest) and rest[pos] not in " \t,":
            raise LineError(f"malformed attribute at column {len('#EXTINF:') + pos + 1}")


def parse_stream_url(url: str) -> tuple[Literal["id", "infohash"], str]:
    """The content an AceStream URL names: (kind, value). Values are checked by ChannelFields."""
    if url.lower().startswith("acestream://"):
        value = url[len("acestream://") :]
        if not value:
            raise LineError("acestream:// without a content id")
        return "id", value
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise LineError("not a stream URL (acestream://<id> or http(s)://…/ace/getstream?id=<id>)")
    if not parts.path.endswith(STREAM_PATHS):
        raise LineError(
            "not an AceStream URL: the path must end /ace/getstream or /ace/manifest.m3u8"
        )
    found = [
        (SELECTORS[k], v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k in SELECTORS
    ]
    if not found:
        raise LineError("the URL has no id=, content_id= or infohash=")
    if len(found) > 1:
        raise LineError("the URL has more than one of id=, content_id=, infohash=")
    kind, value = found[0]
    if not value:
        raise LineError(f"the URL's {kind}= is empty")
    return kind, value


def _channel(entry: _Entry, kind: Literal["id", "infohash"], value: str) -> ChannelFields:
    attributes = entry.attributes
    chno = attributes.get("tvg-chno", "")  # digits only (checked with its #EXTINF line)
    number = int(chno) if chno else None
    return ChannelInput(
        name=attributes.get("tvg-name") or entry.title,
        content_kind=kind,
        content_value=value,
        group=attributes.get("group-title") or entry.group_hint,
        logo=attributes.get("tvg-logo", ""),
        tvg_id=attributes.get("tvg-id", ""),
        number=number,
        enabled=True,
    )


def _describe(errors: Sequence[ErrorDetails], names: Mapping[str, str]) -> str:
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{names.get(where, where) or 'item'}: {message}")
    return "; ".join(parts)


def _check_duplicates(parsed: Parsed, unit: str, text_of: Callable[[int], str]) -> None:
    first: dict[str, int] = {}
    for line, channel in parsed.channels:
        seen = first.setdefault(channel.content_key, line)
        if seen != line:
            parsed.error(line, text_of(line), f"the same content as {unit} {seen}")


def parse_json(data: bytes) -> Parsed:
    parsed = Parsed()
    text = decode(data, parsed)
    if text is None:
        return parsed
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        parsed.error(exc.lineno, text.split("\n")[exc.lineno - 1], f"not JSON: {exc.msg}")
        return parsed
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, [[[[… nested too deep
        parsed.error(1, text[:TEXT_MAX], f"not JSON central reads: {str(exc)[:100]}")
        return parsed
    if isinstance(document, dict) and set(document) == {"items"}:
        document = document["items"]
    if not isinstance(document, list):
        parsed.error(1, text[:TEXT_MAX], 'expected a list of channels or {"items": […]}')
        return parsed
    for index, item in enumerate(document, start=1):
        shown = json.dumps(item)[:TEXT_MAX]
        if not isinstance(item, dict):
            parsed.error(index, shown, "a channel is a JSON object")
            continue
        try:
            fields = {k: v for k, v in item.items() if k != "id"}
            parsed.channels.append((index, ChannelInput.model_validate(fields)))
        except ValidationError as exc:
            parsed.error(index, shown, _describe(exc.errors(), {}))
    _check_duplicates(parsed, "item", lambda n: json.dumps(document[n - 1]))
    return parsed
