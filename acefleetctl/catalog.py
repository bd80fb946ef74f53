"""``acefleet channels …`` and ``acefleet guide …``: the channel catalog and the XMLTV guide
through central's ``/v1/channels`` and ``/v1/guide`` (docs/catalog.md).

An import is central's all-or-nothing rule, shown as it is: a file with bad lines prints every
one of them (``line N: message — text``), writes nothing and exits 1. The file's format is its
extension (``.json``; ``.m3u``/``.m3u8``), else its content (JSON starts with ``[`` or ``{``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from acefleetctl import catalog_views as views
from acefleetctl.client import Central, answer
from acefleetctl.command import Add, Handler, path
from acefleetctl.errors import CliError, Exit

M3U_TYPE = "audio/x-mpegurl"
JSON_TYPE = "application/json"
XML_TYPE = "application/xml"
IMPORT = "/v1/channels/import"
# What a JSON file may start with, after a byte order mark and blanks.
_JSON_START = (b"[", b"{")


def register(add: Add, common: argparse.ArgumentParser) -> None:
    p = add(
        "channels", _list, "the channel catalog: list it, or import, export, enable, standby, rm"
    )
    sub = p.add_subparsers(dest="channels_command", metavar="SUBCOMMAND")

    def child(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        c.set_defaults(handler=handler)
        return c

    child("list", _list, "every channel, by number then name (the default)")
    c = child(
        "import",
        _import,
        "merge an M3U playlist or a JSON list/export into the catalog (all or nothing)",
    )
    c.add_argument("file", help="the M3U or JSON file ('-': standard input)")
    c.add_argument("--dry-run", action="store_true", help="check and count, write nothing")
    c = child("export", _export, "the whole catalog as JSON (importable as it is)")
    c.add_argument("-o", "--output", type=Path, help="write it to this file instead of stdout")
    for verb, on in (("enable", True), ("disable", False)):
        what = "list a channel to players again" if on else "stop listing a channel to players"
        c = child(verb, _enable, what)
        c.add_argument("id", type=int, help="the channel's id (acefleet channels)")
        c.set_defaults(enabled=on)
    for verb, on in (("standby", True), ("no-standby", False)):
        what = (
            "keep a warm standby session of a channel while it plays (a second engine)"
            if on
            else "keep a standby of a channel only when its viewer count asks for one"
        )
        c = child(verb, _standby, what)
        c.add_argument("id", type=int, help="the channel's id (acefleet channels)")
        c.set_defaults(standby=on)
    c = child("rm", _remove, "delete a channel from the catalog")
    c.add_argument("id", type=int, help="the channel's id (acefleet channels)")

    p = add("guide", _guide, "the XMLTV guide: its status, or `guide upload FILE`")
    guide = p.add_subparsers(dest="guide_command", metavar="upload")
    g = guide.add_parser("upload", parents=[common], help="replace the guide with an XMLTV file")
    g.set_defaults(handler=_upload)
    g.add_argument("file", help="the XMLTV file ('-': standard input)")


def read_file(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(Exit.usage, f"cannot read {name}: {exc.strerror or exc}") from None


def import_type(name: str, data: bytes) -> str:
    """The Content-Type to send a catalog file as."""
    suffix = Path(name).suffix.lower()
    if suffix == ".json":
        return JSON_TYPE
    if suffix in (".m3u", ".m3u8"):
        return M3U_TYPE
    head = data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
    return JSON_TYPE if head in _JSON_START else M3U_TYPE


def _list(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/channels")
    return data, views.channels(data["items"])


def _import(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    name = "stdin" if args.file == "-" else args.file
    data = read_file(args.file)
    params = {"dry_run": "true"} if args.dry_run else None
    response = c.send("POST", IMPORT, data, import_type(args.file, data), params)
    if response.status_code == 422:
        report = _report(response)
        if report is not None:  # bad lines (else a plain 422: the usual refusal below)
            errors = report["errors"]
            noun = "bad line" if len(errors) == 1 else "bad lines"
            raise CliError(
                Exit.other,
                f"{name}: {len(errors)} {noun}; nothing was imported",
                details=[f"{name}: {views.bad_line(e)}" for e in errors],
                data=report,
            )
    report = answer(response, "POST", IMPORT)
    return report, views.import_report(report, name)


def _report(response: Any) -> dict[str, Any] | None:
    """The import report of a 422, or None when the body is the usual error."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        return body
    return None


def _export(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    response = c.request("GET", "/v1/channels/export")
    data = answer(response, "GET", "/v1/channels/export")
    if args.output is None:
        return data, response.text.rstrip("\n")  # central's bytes, as a backup takes them
    write_atomically(args.output, response.content)
    return data, f"wrote {len(data['items'])} channels to {args.output}"


def write_atomically(target: Path, content: bytes) -> None:
    """The whole file or none of it: a crash or a full disk never leaves half a backup."""
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(tmp, target)
    except OSError as exc:
        raise CliError(Exit.other, f"cannot write {target}: {exc.strerror or exc}") from None


def _enable(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    # Central replaces every field (PUT): read the channel, change one, send it back.
    one = c.get(path("channels", args.id))
    fields = {k: v for k, v in one.items() if k != "id"}
    data = c.put(path("channels", args.id), {**fields, "enabled": args.enabled})
    state = "enabled: listed to players" if data["enabled"] else "disabled: not listed to players"
    return data, f"channel {data['id']} {data['name']}: {state}"


def _standby(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    one = c.get(path("channels", args.id))
    fields = {k: v for k, v in one.items() if k != "id"}
    data = c.put(path("channels", args.id), {**fields, "standby": args.standby})
    state = (
        "standby: edges keep a warm standby session while it plays"
        if data.get("standby")
        else "no standby unless its viewers ask for one"
    )
    return data, f"channel {data['id']} {data['name']}: {state}"


def _remove(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    c.delete(path("channels", args.id))  # 204: no JSON, so --json prints null
    return None, f"channel {args.id} deleted"


def _guide(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/guide")
    return data, views.guide(data)


def _upload(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    xml = read_file(args.file)
    data = answer(c.send("PUT", "/v1/guide", xml, XML_TYPE), "PUT", "/v1/guide")
    return data, views.guide(data)
