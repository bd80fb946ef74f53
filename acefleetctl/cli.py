"""The ``acefleet`` console script: argparse subcommands over central's operator API.

``main(argv)`` returns the exit code (``acefleetctl.errors.Exit``) instead of exiting, so tests
run it in-process; the console script passes that code to the shell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acefleetctl import catalog, inventory, players, views
from acefleetctl.client import Central
from acefleetctl.command import Handler
from acefleetctl.command import path as _path
from acefleetctl.config import CA_ENV, CONFIG_ENV, KEY_ENV, URL_ENV, resolve
from acefleetctl.errors import CliError, Exit
from acefleetctl.watch import watch

EPILOG = f"""\
central's URL and API key come from --url/--api-key, else {URL_ENV}/{KEY_ENV}, else the config
file (--config, {CONFIG_ENV}, or ~/.config/acefleet/cli.toml with url = "..." and
api_key = "..."). Exit codes: 0 ok, 1 refused or problems found, 2 usage, 3 central unreachable,
4 wrong key or role (401/403), 5 rate limited (the message says how long to wait).
"""


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    """Options every subcommand takes, before or after its name (``default`` is SUPPRESS on the
    subcommands so that their absence does not undo a value given before the name)."""
    parser.add_argument("--url", default=default, help=f"central's base URL (or {URL_ENV})")
    parser.add_argument(
        "--api-key", default=default, help=f"operator or viewer API key (or {KEY_ENV})"
    )
    parser.add_argument(
        "--ca-file",
        default=default,
        help=f"CA certificate an https central is verified against (or {CA_ENV}; default: the "
        "system's trust store)",
    )
    parser.add_argument(
        "--config", default=default, help="config file (TOML: url, api_key, ca_file)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default, help="print central's JSON as it came"
    )
    parser.add_argument(
        "--timeout", type=float, default=default, help="seconds to wait for central (default 10)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acefleet",
        description="Operate an acefleet fleet through acefleet-central's API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)

    def add(name: str, handler: Handler | None, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add("status", _status, "counts over the whole fleet")
    add("whoami", _whoami, "the name and role central knows this key by")
    add("hosts", _hosts, "edge hosts, or one host in detail").add_argument(
        "host", nargs="?", help="show only this host"
    )
    p = add("tunnels", _tunnels, "every edge's VPN tunnels (state, public IP, forwarded port)")
    p.add_argument("--host", dest="on_host", help="only the tunnels of this host")
    p = add("tunnel-rotate", _tunnel_rotate, "rotate a VPN tunnel blue/green (operators; audited)")
    p.add_argument("host", help="the edge host")
    p.add_argument("name", help="the tunnel's name (from `acefleet tunnels`)")
    p = add("engines", _engines, "engines with load, claims and stats, or one engine")
    p.add_argument("engine", nargs="?", help="show only this engine (by id)")
    p.add_argument("--host", dest="on_host", help="only the engines of this host")
    add("streams", _streams, "live streams with viewers, peers and degradation")
    add("claims", _claims, "claims central holds (pending and confirmed; operators see all)")
    p = add("release", _release, "release a claim (an operator may release any; it is audited)")
    p.add_argument("claim", help="the claim id (from `acefleet claims`)")
    p = add("audit", _audit, "the audit log of operator changes, newest first (operators)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (1-1000, default 50)")
    p.add_argument("--since", help="only entries at or after this ISO time (UTC if no offset)")
    p.add_argument("--actor", help="only this key name")
    p.add_argument("--action", help="only this action (engine.drain) or family (engine.)")
    p = add("history", _history, "past and present sessions, newest first")
    p.add_argument("--limit", type=int, default=50, help="at most this many (1-1000, default 50)")
    p.add_argument("--content-key", help="only sessions of this content key")
    p.add_argument("--host", dest="on_host", help="only sessions on this host")
    for verb, on in (("drain", True), ("undrain", False)):
        what = "no new work on" if on else "allow new work again on"
        p = add(verb, _drain, f"{what} a host or an engine (live streams continue)")
        p.add_argument("kind", choices=["host", "engine"], help="what to drain")
        p.add_argument("target", help="the host name or engine id")
        p.set_defaults(drain=on)
    p = add("buffer", _buffer_show, "the warm buffer: show it, or `buffer set` to scale it")
    buffer = p.add_subparsers(dest="buffer_command", metavar="set")
    s = buffer.add_parser("set", parents=[common], help="scale the warm buffer")
    s.set_defaults(handler=_buffer_set)
    s.add_argument("--per-edge", type=int, help="free engines to keep ready per edge")
    s.add_argument("--fleet-max", type=int, help="fleet-wide engine maximum (0: none)")
    s.add_argument("--host", dest="on_host", help="apply --per-edge to this edge only")
    catalog.register(add, common)
    players.register(add, common)
    p = add("watch", None, "follow the fleet live (central's WebSocket feed) until Ctrl-C")
    p.add_argument("--count", type=int, help="stop after this many snapshot/delta frames")
    p.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="exit (code 3) when the feed is lost instead of opening it again",
    )
    p = sub.add_parser(
        "check-config",
        help="check an Ansible inventory for what the fleet needs",
        description=inventory.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inventory", type=Path, help="the inventory directory (e.g. inventories/lab)")
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the problems as JSON"
    )
    p.set_defaults(handler=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, argparse printed why)
        return int(exc.code or 0)
    try:
        return _run(args)
    except CliError as exc:
        if exc.data is not None and getattr(args, "json", False):
            print(json.dumps(exc.data, indent=2))  # e.g. an import report listing its bad lines
        for line in (*exc.details, exc.message):
            print(f"acefleet: {line}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (`acefleet streams | head`): no traceback, and none at exit either
        # when Python flushes stdout again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.other


def _run(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        return _check_config(args)
    target = resolve(args.url, args.api_key, args.config, ca_file=args.ca_file)
    if args.command == "watch":
        return watch(
            target,
            sys.stdout,
            sys.stderr,
            as_json=bool(args.json),
            count=args.count,
            open_timeout=args.timeout or 10.0,
            reconnect=args.reconnect,
        )
    with Central(target, timeout=args.timeout or 10.0) as central:
        data, text = args.handler(args, central)
    print(json.dumps(data, indent=2) if args.json else text)
    return Exit.ok


# Each handler returns (central's JSON, the text a person reads).


def _status(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/fleet")
    return data, views.status(data, c.target.url)


def _whoami(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/whoami")
    return data, f"{data['name']} ({data['role']})"


def _hosts(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    if args.host:
        one = c.get(_path("hosts", args.host))
        return one, views.host(one)
    data = c.get("/v1/hosts")
    return data, _warming(data) + views.hosts(data["items"])


def _tunnels(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    if args.on_host:
        one = c.get(_path("hosts", args.on_host))
        return one, views.tunnels([one])
    data = c.get("/v1/hosts")
    return data, _warming(data) + views.tunnels(data["items"])


def _tunnel_rotate(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.post(_path("hosts", args.host, "tunnels", args.name, "rotate"))
    return data, (
        f"tunnel {args.host}/{data['name']}: rotating to generation {data['generation']} "
        f"({data['container']}, {data['state']}); its engines move over make-before-break"
    )


def _engines(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    if args.engine:
        one = c.get(_path("engines", args.engine))
        return one, views.engine(one)
    data = c.get("/v1/engines", {"host": args.on_host})
    return data, _warming(data) + views.engines(data["items"])


def _streams(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/streams")
    return data, _warming(data) + views.streams(data["items"])


def _claims(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/claims")
    return data, _warming(data) + views.claims(data["items"])


def _release(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    c.delete(_path("claims", args.claim))
    return {"released": args.claim}, f"claim {args.claim}: released"


def _audit(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    params = {
        "limit": args.limit,
        "since": args.since,
        "actor": args.actor,
        "action": args.action,
    }
    data = c.get("/v1/audit", params)
    return data, views.audit(data["items"])


def _history(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    params = {"limit": args.limit, "content_key": args.content_key, "host": args.on_host}
    data = c.get("/v1/streams/history", params)
    return data, views.history(data["items"])


def _drain(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    verb = "drain" if args.drain else "undrain"
    data = c.post(_path(f"{args.kind}s", args.target, verb))
    state = "draining: no new work goes there" if data["draining"] else "not draining"
    return data, f"{args.kind} {data['target']}: {state}"


def _buffer_show(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    data = c.get("/v1/provisioning", {"log_limit": 0})
    return data, views.buffer(data)


def _buffer_set(args: argparse.Namespace, c: Central) -> tuple[Any, str]:
    body = {
        "warm_buffer_per_edge": args.per_edge,
        "fleet_max_engines": args.fleet_max,
        "host": args.on_host,
    }
    if args.per_edge is None and args.fleet_max is None:
        raise CliError(Exit.usage, "buffer set: give --per-edge N and/or --fleet-max N")
    data = c.put("/v1/provisioning/buffer", {k: v for k, v in body.items() if v is not None})
    return data, views.buffer(data)


def _warming(data: dict[str, Any]) -> str:
    return (
        "(central is warming up: this view may be incomplete)\n" if data.get("warming_up") else ""
    )


def _check_config(args: argparse.Namespace) -> int:
    data = inventory.load(args.inventory)
    problems = inventory.check(data)
    if args.json:
        print(json.dumps([{"host": p.host, "problem": p.message} for p in problems], indent=2))
    elif not problems:
        print(inventory.summary(data))
    for p in problems if not args.json else []:
        print(f"acefleet: {args.inventory}: {p}", file=sys.stderr)
    if problems and not args.json:
        noun = "problem" if len(problems) == 1 else "problems"
        print(f"acefleet: {args.inventory}: {len(problems)} {noun}", file=sys.stderr)
    return Exit.other if problems else Exit.ok
