"""Who may start a stream here: the token rule, the per-client failure limit, per-player counts.

The rule (token mode, ``tokens_required``): every NEW stream — ``/ace/getstream``,
``/ace/manifest.m3u8``, and an HLS session re-created under an unknown sid — needs a ``token``
that opens its content key (``acefleet.tokens``). The proxy decides locally, from its keys and
its cached copy of central's catalog; nothing on the streaming path asks central, and nothing
refused here ever reaches an engine. In order:

1. a client address with more than ``token_failures_per_min`` refusals in the last minute →
   429 ``too_many_token_failures`` (brute force gets nowhere, and costs no HMAC);
2. no token → 401 ``token_required``; expired → 401 ``token_expired``; malformed, unknown key or
   a bad signature (forged, another channel's, a player id changed) → 403 ``token_invalid``;
3. with a catalog: the token's player unknown or disabled → 403 ``player_disabled``; a channel
   of the catalog outside the player's groups → 403 ``channel_not_allowed``. Without one: if
   central is configured and no catalog was ever loaded (nor found in ``cache_dir``) → 503
   ``catalog_unavailable`` (a disabled player must not slip through a cold start); a proxy
   without central trusts the signature alone (no revocation, no limits);
4. the player's streams fleet-wide at its ``max_streams`` → 429 ``player_stream_limit``.

Token ``0.…`` (player 0) is an edge's own token: proxies sign one when they relay a channel
from another edge, so relays pass without a player or a limit. It is also the relay credential
(:meth:`Access.relay_pull`): a pull that carries a valid one is a fellow proxy, not a client,
and the per-client rate limit of its address does not apply (a client on the same address
without one still counts). Without token keys there is no credential, and a relay counts as a
client of its address.

Open mode accepts anyone: a token is never required nor refused, but one that verifies (player
playlists carry them whenever keys are configured) counts the stream for its player in the
snapshot's usage. Either way the ``token`` parameter is the proxy's: the caller takes it out of
the query before anything is forwarded to an engine.

Fleet count of a player = central's count (``PlayerUsage.streams``) minus central's count for
this host (possibly stale) plus this proxy's live count, so this edge's own share is always
exact. A usage copy older than :data:`USAGE_STALE_S` (central away) is not used: only the
local count limits then. A TS viewer counts as one stream, an HLS player as one (its session).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from acefleet import tokens
from acefleet.catalog_wire import CatalogChannel, EdgePlayer, PlayerUsage
from acefleet.errors import ServiceError
from proxy.metrics import Metrics
from proxy.settings import ProxySettings

EDGE_PLAYER = 0  # the player id of an edge's own (relay) tokens
USAGE_STALE_S = 30.0
LIMIT_RETRY_S = 10
EDGE_TOKEN_TTL_S = 300
_ADDRESSES_MAX = 50_000


def edge_token(keys: tokens.TokenKeys, content_key: str, now: float) -> str:
    """The token an edge's relay request carries (player 0, valid for a few minutes)."""
    return tokens.sign(keys, EDGE_PLAYER, content_key, int(now) + EDGE_TOKEN_TTL_S)


class CatalogView(Protocol):
    """What the rule reads of the catalog copy (``proxy.catalog_cache.CatalogCache``)."""

    @property
    def loaded(self) -> bool: ...

    def player(self, player_id: int) -> EdgePlayer | None: ...

    def channel(self, content_key: str) -> CatalogChannel | None: ...

    def usage(self, max_age_s: float) -> PlayerUsage | None: ...


class Watching(Protocol):
    """A TS viewer or an HLS session: it watches while it has a channel (and is not closed)."""

    @property
    def channel(self) -> object | None: ...


def watching(item: Watching) -> bool:
    return item.channel is not None and not getattr(item, "closed", False)


class PlayerStreams:
    """This proxy's live streams per player: the TS viewers and HLS sessions started with a
    player's token. Entries are dropped lazily once their viewer or session is gone."""

    def __init__(self) -> None:
        self._by_player: dict[int, list[Watching]] = {}

    def add(self, player: int, item: Watching) -> None:
        self._prune()
        self._by_player.setdefault(player, []).append(item)

    def count(self, player: int) -> int:
        items = [i for i in self._by_player.get(player, ()) if watching(i)]
        if items:
            self._by_player[player] = items
        else:
            self._by_player.pop(player, None)
        return len(items)

    def on(self, channel: object) -> dict[str, int]:
        """Player id → streams of it watching ``channel`` (the snapshot's ``players``)."""
        counts: dict[str, int] = {}
        for player, items in self._by_player.items():
            n = sum(1 for i in items if i.channel is channel and watching(i))
            if n:
                counts[str(player)] = n
        return counts

    def _prune(self) -> None:
        for player in list(self._by_player):
            self.count(player)


class FailureLimit:
    """Refusals per client address per minute: a token bucket (capacity ``per_min``, refilled
    at ``per_min``/60 s) that only refusals drain. The table is bounded, oldest first out."""

    def __init__(self, per_min: int) -> None:
        self.capacity = float(per_min)
        self.rate = per_min / 60.0
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, address: str, now: float) -> float:
        level, at = self.buckets.get(address, (self.capacity, now))
        return min(self.capacity, level + (now - at) * self.rate)

    def wait(self, address: str, now: float) -> float:
        """0 when ``address`` may try, else the seconds until it may again."""
        level = self._level(address, now)
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def failed(self, address: str, now: float) -> None:
        level = self._level(address, now) - 1
        self.buckets.pop(address, None)
        self.buckets[address] = (level, now)
        while len(self.buckets) > _ADDRESSES_MAX:
            self.buckets.popitem(last=False)


class Denied(ServiceError):
    """A stream refused by the access rule; ``reason`` is the metric label."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        reason: str,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(status, code, message, retry_after_s=retry_after_s)
        self.reason = reason


class Access:
    """The rule above, for one proxy. :meth:`admit` is called before every new stream."""

    def __init__(
        self,
        settings: ProxySettings,
        metrics: Metrics,
        catalog: CatalogView,
        streams: PlayerStreams,
        host: str,
    ) -> None:
        self.required = settings.tokens_required
        self.keys = tokens.TokenKeys.parse(settings.token_keys)
        self.central = bool(settings.central_url)
        self.catalog = catalog
        self.streams = streams
        self.host = host
        self.failures = FailureLimit(settings.token_failures_per_min)
        self.metrics = metrics

    def admit(self, address: str, key: str, token: str | None) -> int | None:
        """The player the new stream counts for (None: open mode or an edge's relay);
        :class:`Denied` when it may not start."""
        now = time.time()
        if not self.required:
            return self._counted(key, token, now)
        try:
            return self._admit(address, key, token, now)
        except Denied as exc:
            self.metrics.token_rejections.labels(exc.reason).inc()
            if exc.reason not in ("too_many_failures", "player_stream_limit", "no_catalog"):
                self.failures.failed(address, time.monotonic())
            raise

    def _admit(self, address: str, key: str, token: str | None, now: float) -> int | None:
        wait = self.failures.wait(address, time.monotonic())
        if wait:
            raise Denied(
                429,
                "too_many_token_failures",
                "too many refused tokens from this client; wait before trying again",
                "too_many_failures",
                retry_after_s=wait,
            )
        if not token:
            raise Denied(
                401,
                "token_required",
                "this fleet needs a token: use the stream URLs of your playlist",
                "missing",
            )
        assert self.keys is not None  # settings refuse tokens_required without keys
        try:
            player_id = tokens.verify(self.keys, token, key, now)
        except tokens.TokenError as exc:
            status, code = (401, "token_expired") if exc.reason == "expired" else (403, "")
            raise Denied(status, code or "token_invalid", exc.message, exc.reason) from None
        if player_id == EDGE_PLAYER:
            return None
        if not self.catalog.loaded:
            if self.central:
                raise Denied(
                    503,
                    "catalog_unavailable",
                    "this proxy has not yet loaded the player list from central",
                    "no_catalog",
                    retry_after_s=5,
                )
            return player_id
        player = self.catalog.player(player_id)
        if player is None or not player.enabled:
            raise Denied(
                403,
                "player_disabled",
                "this player is disabled or no longer exists",
                "player_unknown" if player is None else "player_disabled",
            )
        channel = self.catalog.channel(key)
        if channel is not None and player.groups and channel.group not in player.groups:
            raise Denied(
                403,
                "channel_not_allowed",
                "this player may not watch this channel's group",
                "channel_not_allowed",
            )
        if player.max_streams and self.fleet_streams(player_id) >= player.max_streams:
            raise Denied(
                429,
                "player_stream_limit",
                f"this player already watches its maximum of {player.max_streams} streams",
                "player_stream_limit",
                retry_after_s=LIMIT_RETRY_S,
            )
        return player_id

    def relay_pull(self, key: str, token: str | None) -> bool:
        """True when ``token`` is an edge's relay token for ``key`` (a fellow proxy pulls)."""
        if not token or self.keys is None:
            return False
        try:
            return tokens.verify(self.keys, token, key, time.time()) == EDGE_PLAYER
        except tokens.TokenError:
            return False

    def _counted(self, key: str, token: str | None, now: float) -> int | None:
        """Open mode: a valid token only names whose stream it is (for usage), never refuses."""
        if not token or self.keys is None:
            return None
        try:
            player_id = tokens.verify(self.keys, token, key, now)
        except tokens.TokenError:
            return None
        return player_id if player_id != EDGE_PLAYER else None

    def fleet_streams(self, player_id: int) -> int:
        """The player's streams across the fleet, with this proxy's own share counted live."""
        local = self.streams.count(player_id)
        usage = self.catalog.usage(USAGE_STALE_S)
        if usage is None:
            return local
        player = str(player_id)
        elsewhere = usage.streams.get(player, 0) - usage.by_host.get(self.host, {}).get(player, 0)
        return max(0, elsewhere) + local
