"""``acefleet watch``: central's live feed (``/v1/live/ws``) as one compact line per change.

The feed sends a ``snapshot`` of the whole view, then ``delta`` frames (upserts and removals of
hosts by name, engines by id, streams by stream_id) and a ``ping`` when quiet. :class:`Feed`
keeps the view and turns each frame into lines; :func:`watch` owns the connection.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from acefleet.tls import client_context
from acefleetctl.client import API_KEY_HEADER, refusal
from acefleetctl.config import KEY_ENV, Target
from acefleetctl.errors import CliError, Exit
from acefleetctl.tables import cell

LIVE_WS_PATH = "/v1/live/ws"
# Waits between attempts to open a lost feed again: short at first, then at most this.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
KINDS = ("hosts", "engines", "streams")
KEYS = {"hosts": "name", "engines": "id", "streams": "stream_id"}
SINGULAR = {"hosts": "host", "engines": "engine", "streams": "stream"}
# The fields whose change is worth a line; the others (heartbeat times, seq) change constantly.
WATCHED = {
    "hosts": ("status", "draining", "engines", "engines_healthy", "streams"),
    "engines": ("health", "load", "placeable", "draining"),
    "streams": ("viewers", "engine_id", "source", "peers", "degraded", "degraded_reason"),
}
# Close codes of the feed (the shared contract): the exit code, and what to say when central
# gave no reason.
CLOSES: dict[int, tuple[Exit, str]] = {
    4401: (Exit.auth, "unknown or missing API key"),
    4403: (Exit.auth, "this key's role may not read the live feed"),
    4408: (Exit.auth, "no authentication in time"),
    4429: (Exit.rate_limited, "too many connections or requests for this key"),
    4000: (Exit.other, "this client fell too far behind the feed"),
}


def ws_url(http_url: str) -> str:
    if http_url.startswith("https://"):
        return "wss://" + http_url.removeprefix("https://") + LIVE_WS_PATH
    return "ws://" + http_url.removeprefix("http://") + LIVE_WS_PATH


def summary_line(s: dict[str, Any]) -> str:
    hosts = s.get("hosts", {})
    live = hosts.get("live", 0)
    total = sum(v for v in hosts.values() if isinstance(v, int))
    return (
        f"{total} hosts ({live} live), {s.get('engines')} engines "
        f"({s.get('engines_placeable')} placeable), {s.get('streams')} streams, "
        f"{s.get('viewers')} viewers"
    )


class Feed:
    """The live view as the frames built it; :meth:`apply` returns the lines a frame is worth."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.summary: dict[str, Any] = {}
        self.items: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}

    def apply(self, frame: dict[str, Any]) -> list[str]:
        kind = frame.get("type")
        if kind == "snapshot":
            return self._snapshot(frame)
        if kind == "delta":
            return self._delta(frame)
        return []  # ping, or a type a newer central sends: nothing changed for us

    def _snapshot(self, frame: dict[str, Any]) -> list[str]:
        fleet = frame.get("fleet", {})
        self.version = frame.get("version")
        self.summary = fleet.get("summary", {})
        for kind in KINDS:
            self.items[kind] = {item[KEYS[kind]]: item for item in fleet.get(kind, [])}
        return [f"snapshot v{self.version}: {summary_line(self.summary)}"]

    def _delta(self, frame: dict[str, Any]) -> list[str]:
        self.version = frame.get("version")
        lines: list[str] = []
        for kind in KINDS:
            for item in frame.get("upsert", {}).get(kind, []):
                lines.extend(self._upsert(kind, item))
            for key in frame.get("remove", {}).get(kind, []):
                if self.items[kind].pop(key, None) is not None:
                    lines.append(f"- {SINGULAR[kind]} {key}")
        summary = frame.get("summary")
        if summary is not None and summary != self.summary:
            self.summary = summary
            lines.append(f"= {summary_line(summary)}")
        return lines

    def _upsert(self, kind: str, item: dict[str, Any]) -> list[str]:
        key = item[KEYS[kind]]
        old = self.items[kind].get(key)
        self.items[kind][key] = item
        if old is None:
            fields = " ".join(f"{f}={cell(item.get(f))}" for f in WATCHED[kind] if f in item)
            return [f"+ {SINGULAR[kind]} {key} {fields}".rstrip()]
        changes = [
            f"{f} {cell(old.get(f))}→{cell(item.get(f))}"
            for f in WATCHED[kind]
            if old.get(f) != item.get(f)
        ]
        return [f"~ {SINGULAR[kind]} {key} {', '.join(changes)}"] if changes else []


@dataclass
class Session:
    """What one ``watch`` run prints to, and how far it got (it outlives reconnections)."""

    out: TextIO
    err: TextIO
    as_json: bool
    count: int | None
    clock: Callable[[], datetime]
    feed: Feed = field(default_factory=Feed)
    seen: int = 0  # snapshot and delta frames so far

    def done(self) -> bool:
        return self.count is not None and self.seen >= self.count


def watch(
    target: Target,
    out: TextIO,
    err: TextIO,
    *,
    as_json: bool = False,
    count: int | None = None,
    open_timeout: float = 10.0,
    reconnect: bool = True,
    clock: Callable[[], datetime] = datetime.now,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the feed until Ctrl-C (or ``count`` snapshot/delta frames); returns the exit code.

    A feed that is lost (central restarting, the network) is opened again, with a ``resume`` from
    the last version seen, unless ``reconnect`` is off; a refusal (key, role, limits) ends it.
    """
    if not target.api_key:
        raise CliError(Exit.auth, f"watch needs an API key: pass --api-key or set {KEY_ENV}")
    url, key = ws_url(target.url), target.api_key
    # wss:// against the fleet's CA when one is given (websockets refuses ssl= for ws://)
    tls = client_context(target.ca_file) if target.ca_file and url.startswith("wss://") else None
    session = Session(out, err, as_json, count, clock)
    try:
        # the first attempt fails fast: a wrong URL is likely
        ws = _open(url, key, open_timeout, tls)
        while True:
            try:
                with ws:
                    _follow(ws, session)
                return Exit.ok
            except CliError as exc:
                if not reconnect or exc.code != Exit.unreachable:
                    raise
                print(f"acefleet: {exc.message}; reconnecting", file=err, flush=True)
            ws = _reopen(url, key, open_timeout, sleep, tls)
    except KeyboardInterrupt:
        return Exit.ok


def _open(url: str, key: str, open_timeout: float, tls: ssl.SSLContext | None) -> ClientConnection:
    try:
        return connect(
            url,
            additional_headers={API_KEY_HEADER: key},
            open_timeout=open_timeout,
            proxy=None,
            ssl=tls,
        )
    except InvalidStatus as exc:
        raise _handshake_refused(exc) from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise CliError(Exit.unreachable, f"central unreachable at {url}: {exc}") from None


def _reopen(
    url: str,
    key: str,
    open_timeout: float,
    sleep: Callable[[float], None],
    tls: ssl.SSLContext | None,
) -> ClientConnection:
    """Connect again, waiting longer between attempts while central stays away."""
    wait = RECONNECT_FIRST_S
    while True:
        sleep(wait)
        try:
            return _open(url, key, open_timeout, tls)
        except CliError as exc:
            if exc.code != Exit.unreachable:
                raise
        wait = min(wait * 2, RECONNECT_MAX_S)


def _follow(ws: ClientConnection, session: Session) -> None:
    feed = session.feed
    if feed.version is not None:
        # Right after auth (the header): central answers with the delta since, or a snapshot.
        ws.send(json.dumps({"type": "resume", "version": feed.version}))
    while not session.done():
        try:
            raw = ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        frame = json.loads(raw)
        if frame.get("type") in ("snapshot", "delta"):
            session.seen += 1
        lines = feed.apply(frame)
        if session.as_json:
            session.out.write(json.dumps(frame, separators=(",", ":")) + "\n")
        else:
            stamp = session.clock().strftime("%H:%M:%S")
            session.out.writelines(f"{stamp} {line}\n" for line in lines)
        session.out.flush()


def _handshake_refused(exc: InvalidStatus) -> CliError:
    response = exc.response
    try:
        detail = json.loads(response.body or b"")["error"]
        code, message = str(detail["code"]), str(detail["message"])
        retry = detail.get("retry_after_s")
    except (ValueError, KeyError, TypeError):
        code, message, retry = f"http_{response.status_code}", response.reason_phrase, None
    if response.status_code == 404:
        message += " (this central has no live WebSocket feed)"
    return refusal(response.status_code, code, message, retry)


def _closed(exc: ConnectionClosed) -> CliError:
    close = exc.rcvd
    if close is None:
        return CliError(Exit.unreachable, "the connection to central was lost")
    exit_code, meaning = CLOSES.get(close.code, (Exit.unreachable, "central closed the feed"))
    text = f"central closed the live feed ({close.code}): {close.reason or meaning}"
    if close.code == 4429:
        text += "; retry later"
    return CliError(exit_code, text)
