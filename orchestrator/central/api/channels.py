"""The operator API of the catalog: channels (``/v1/channels``) and the guide (``/v1/guide``).

Reads take any key, writes an operator key (the usual per-key rate limits apply). An import is
all or nothing: every bad line is reported (422, with line numbers) and then nothing is written;
a good one is merged by content in one transaction, so importing the same playlist twice
changes nothing the second time. Bodies are read with a byte limit before any parsing (413).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from acefleet.catalog_wire import CatalogChannel, ChannelList, ImportReport
from acefleet.wire import ErrorBody
from orchestrator.central.api.deps import Audit, no_key_in_url
from orchestrator.central.catalog import m3u_import
from orchestrator.central.catalog.guide import GuideError, GuideStatus
from orchestrator.central.catalog.m3u_import import ChannelInput
from orchestrator.central.catalog.store import CatalogStore, DuplicateContent, UnknownChannel
from orchestrator.central.http import ERROR_RESPONSES, ApiError, any_reader, etagged, operator_only

router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(no_key_in_url)],
    responses=ERROR_RESPONSES,
    tags=["catalog"],
)
Reader = [Depends(any_reader)]
Operator = [Depends(operator_only)]
ChannelId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The channel's id")]

M3U_TYPES = ("audio/x-mpegurl", "application/vnd.apple.mpegurl", "audio/mpegurl", "text/plain")
JSON_TYPE = "application/json"
XML_TYPES = ("application/xml", "text/xml", "application/octet-stream")


def _error(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": description}}


NOT_FOUND = _error(404, "No such channel")
CONFLICT = _error(409, "Another channel already has this content")
TOO_LARGE = _error(413, "The body is larger than the configured limit")
UNSUPPORTED = _error(415, "A Content-Type this endpoint does not read")


async def catalog_store(request: Request) -> CatalogStore:
    store: CatalogStore = request.app.state.catalog
    return store


Catalog = Annotated[CatalogStore, Depends(catalog_store)]


def _unknown(exc: UnknownChannel) -> ApiError:
    return ApiError(404, "unknown_channel", str(exc))


def _duplicate(exc: DuplicateContent) -> ApiError:
    return ApiError(409, "duplicate_content", str(exc))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, max_bytes: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``max_bytes`` (by
    its Content-Length, or while it streams in): an oversize body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "too_large", f"{what} larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "too_large", f"{what} larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# --- channels --------------------------------------------------------------------------------


@router.get("/channels", dependencies=Reader, response_model=ChannelList)
async def list_channels(request: Request, catalog: Catalog) -> Response:
    """Every channel, by number then name (ETag: send If-None-Match to poll cheaply)."""
    return etagged(request, catalog.channel_list())


@router.post("/channels", dependencies=Operator, status_code=201, responses={**CONFLICT})
async def create_channel(body: ChannelInput, catalog: Catalog, audit: Audit) -> CatalogChannel:
    """A new channel; 409 when a channel already has this content id or infohash."""
    try:
        created = await catalog.create(body)
    except DuplicateContent as exc:
        raise _duplicate(exc) from None
    audit("channel.create", created.id, **_channel_detail(body))
    return created


def _channel_detail(body: ChannelInput) -> dict[str, Any]:
    """What the audit log keeps of a channel edit: the channel as sent (it holds no secret)."""
    return body.model_dump(mode="json")


IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An M3U playlist, or JSON: a list of channels or an export",
        "content": {
            **{t: {"schema": {"type": "string"}} for t in M3U_TYPES},
            JSON_TYPE: {
                "schema": {
                    "anyOf": [
                        {"type": "array", "items": {"$ref": "#/components/schemas/ChannelInput"}},
                        {"$ref": "#/components/schemas/ChannelList"},
                    ]
                }
            },
        },
    }
}


@router.post(
    "/channels/import",
    dependencies=Operator,
    response_model=ImportReport,
    openapi_extra=IMPORT_BODY,
    responses={
        **TOO_LARGE,
        **UNSUPPORTED,
        422: {
            "model": ImportReport,
            "description": "Bad lines (every one listed; nothing was written), or bad parameters "
            "(then the usual error body)",
        },
    },
)
async def import_channels(
    request: Request,
    catalog: Catalog,
    audit: Audit,
    dry_run: Annotated[bool, Query(description="Check and count, write nothing")] = False,
) -> Response:
    """Merge channels from an M3U playlist or JSON into the catalog, matched by content:
    new content is created, known content updated, other channels are kept."""
    media_type = _media_type(request)
    if media_type == JSON_TYPE:
        parse = m3u_import.parse_json
    elif media_type in M3U_TYPES:
        parse = m3u_import.parse_m3u
    else:
        accepted = ", ".join((*M3U_TYPES, JSON_TYPE))
        raise ApiError(415, "unsupported_media_type", f"send one of: {accepted}")
    data = await read_body(request, catalog.files.catalog_max_bytes, "the import is")
    parsed = await asyncio.to_thread(parse, data)  # a big playlist takes a second or so
    if parsed.errors:
        report = ImportReport(
            dry_run=dry_run,
            created=0,
            updated=0,
            unchanged=0,
            errors=sorted(parsed.errors, key=lambda e: e.line),
        )
        return JSONResponse(report.model_dump(), status_code=422)
    report = await catalog.import_channels([c for _, c in parsed.channels], dry_run)
    if not dry_run:
        audit(
            "channel.import",
            "catalog",
            created=report.created,
            updated=report.updated,
            unchanged=report.unchanged,
            bytes=len(data),
        )
    return JSONResponse(report.model_dump())


@router.get("/channels/export", dependencies=Reader, response_model=ChannelList)
async def export_channels(catalog: Catalog) -> Response:
    """The whole catalog as a JSON file that ``POST /v1/channels/import`` takes back."""
    return Response(
        catalog.channel_list().model_dump_json(indent=2),
        media_type=JSON_TYPE,
        headers={"Content-Disposition": 'attachment; filename="acefleet-channels.json"'},
    )


@router.get("/channels/{channel_id}", dependencies=Reader, responses={**NOT_FOUND})
async def get_channel(channel_id: ChannelId, catalog: Catalog) -> CatalogChannel:
    try:
        return catalog.channel(channel_id)
    except UnknownChannel as exc:
        raise _unknown(exc) from None


@router.put("/channels/{channel_id}", dependencies=Operator, responses={**NOT_FOUND, **CONFLICT})
async def replace_channel(
    channel_id: ChannelId, body: ChannelInput, catalog: Catalog, audit: Audit
) -> CatalogChannel:
    """Every field of the channel replaced (its id stays)."""
    try:
        replaced = await catalog.replace(channel_id, body)
    except UnknownChannel as exc:
        raise _unknown(exc) from None
    except DuplicateContent as exc:
        raise _duplicate(exc) from None
    audit("channel.update", channel_id, **_channel_detail(body))
    return replaced


@router.delete(
    "/channels/{channel_id}", dependencies=Operator, status_code=204, responses={**NOT_FOUND}
)
async def delete_channel(channel_id: ChannelId, catalog: Catalog, audit: Audit) -> Response:
    try:
        await catalog.delete(channel_id)
    except UnknownChannel as exc:
        raise _unknown(exc) from None
    audit("channel.delete", channel_id)
    return Response(status_code=204)


# --- the guide -------------------------------------------------------------------------------


def _guide_status(catalog: CatalogStore) -> GuideStatus:
    stored = catalog.guide
    path = catalog.files.guide_path
    if stored is None:
        return GuideStatus(present=False, path=path)
    ids = stored.summary.channel_ids
    return GuideStatus(
        present=True,
        source=stored.source,
        path=path,
        imported_at=stored.imported_at,
        bytes=len(stored.xml),
        etag=stored.summary.etag,
        channels=stored.summary.channels,
        programmes=stored.summary.programmes,
        matched_channels=sum(1 for c in catalog.channels() if c.tvg_id and c.tvg_id in ids),
    )


@router.get("/guide", dependencies=Reader)
async def guide_status(catalog: Catalog) -> GuideStatus:
    """Where the guide came from, when, and how much of it matches the catalog."""
    return _guide_status(catalog)


@router.put(
    "/guide",
    dependencies=Operator,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "An XMLTV document (root <tv>)",
            "content": {t: {"schema": {"type": "string"}} for t in XML_TYPES},
        }
    },
    responses={
        **_error(409, "The guide comes from guide_path on the control host"),
        **TOO_LARGE,
        **UNSUPPORTED,
        422: {"model": ErrorBody, "description": "Not well-formed XML, or not XMLTV"},
    },
)
async def upload_guide(request: Request, catalog: Catalog, audit: Audit) -> GuideStatus:
    """Replace the guide with an XMLTV upload (refused while central reads it from a file)."""
    if catalog.files.guide_path:
        raise ApiError(
            409,
            "guide_from_file",
            f"the guide is read from {catalog.files.guide_path} on the control host; "
            "change that file (or unset guide_path) instead",
        )
    if _media_type(request) not in XML_TYPES:
        raise ApiError(
            415, "unsupported_media_type", f"send XMLTV as one of: {', '.join(XML_TYPES)}"
        )
    data = await read_body(request, catalog.files.guide_max_bytes, "the guide is")
    try:
        await catalog.set_guide(data, "upload")
    except GuideError as exc:
        raise ApiError(422, "invalid_guide", str(exc)) from None
    audit("guide.upload", "guide", bytes=len(data))
    return _guide_status(catalog)
