"""XMLTV: what central accepts as a guide, and the guide cut down to the catalog's channels.

A guide is accepted when it is well-formed XML whose root is ``<tv>`` and that uses no entities
of its own; nothing else about it is trusted. It is parsed with entities left unresolved, no DTD
loaded and no network, so an upload cannot make central read files or URLs or expand an entity
bomb, and one that references an entity is refused. Filtering keeps a ``<channel>``
whose ``id`` and a ``<programme>`` whose ``channel`` is one of the given guide ids (``tvg-id``),
in their original order, and drops everything else that is a channel or programme.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from lxml import etree  # type: ignore[import-untyped]
from pydantic import Field

from acefleet.wire import Wire

GuideSource = Literal["upload", "file"]
DOCTYPE = '<!DOCTYPE tv SYSTEM "xmltv.dtd">'


class GuideError(ValueError):
    """The bytes are not an XMLTV guide; the message says why, for the operator."""


class GuideStatus(Wire):
    """What ``GET /v1/guide`` tells an operator about the stored guide."""

    present: bool = Field(description="A guide is stored")
    source: GuideSource | None = Field(None, description="upload (PUT /v1/guide) or file")
    path: str = Field("", description="The guide_path central watches ('' when uploads rule)")
    imported_at: datetime | None = None
    bytes: int = 0
    etag: str = Field("", description="Changes whenever the stored guide does")
    channels: int = Field(0, description="<channel> elements in the stored guide")
    programmes: int = Field(0, description="<programme> elements in the stored guide")
    matched_channels: int = Field(
        0, description="Catalog channels whose tvg-id has a <channel> in the guide"
    )


@dataclass(frozen=True, slots=True)
class GuideSummary:
    channel_ids: frozenset[str]
    channels: int
    programmes: int
    etag: str


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not safe to share between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
    )


def etag_of(xml: bytes) -> str:
    return hashlib.blake2b(xml, digest_size=12).hexdigest()


def _root(xml: bytes) -> etree._Element:
    if not xml.strip():
        raise GuideError("the guide is empty")
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as exc:
        line = f" (line {exc.lineno})" if exc.lineno else ""
        raise GuideError(f"not well-formed XML{line}: {exc.msg}") from None
    if not isinstance(root.tag, str) or root.tag != "tv":
        raise GuideError(f"not XMLTV: the root element is <{root.tag}>, not <tv>")
    entity = next(root.iter(etree.Entity), None)
    if entity is not None:
        # Left unresolved they would reach players as references nobody declares.
        raise GuideError(
            f"entity reference {entity.text} (line {entity.sourceline}): only the XML built-ins "
            "(&amp; &lt; …) and character references (&#233;) are accepted"
        )
    return root


def check(xml: bytes) -> GuideSummary:
    """Validate a guide and count what it holds; :class:`GuideError` when it is not one."""
    root = _root(xml)
    ids: set[str] = set()
    channels = programmes = 0
    for element in root:
        if element.tag == "channel":
            channels += 1
            if element.get("id"):
                ids.add(element.get("id"))
        elif element.tag == "programme":
            programmes += 1
    return GuideSummary(frozenset(ids), channels, programmes, etag_of(xml))


def filter_guide(xml: bytes, tvg_ids: Collection[str]) -> bytes:
    """The guide with only the channels and programmes of ``tvg_ids`` (an XMLTV document of
    its own: XML declaration, the XMLTV doctype, the original ``<tv>`` attributes)."""
    keep = set(tvg_ids)
    root = _root(xml)
    for element in list(root):
        if element.tag == "channel":
            wanted = element.get("id") in keep
        elif element.tag == "programme":
            wanted = element.get("channel") in keep
        else:
            continue
        if not wanted:
            _drop(element)
    body: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + DOCTYPE.encode() + b"\n" + body + b"\n"


def _drop(element: etree._Element) -> None:
    # Keep the whitespace that followed the dropped element's predecessor, not its own tail,
    # so the output stays one element per line like the input.
    parent = element.getparent()
    previous = element.getprevious()
    if previous is not None:
        previous.tail = element.tail
    else:
        parent.text = element.tail
    parent.remove(element)
