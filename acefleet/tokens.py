"""Stream tokens: what lets a player's stream URL through a proxy without asking central.

A token names a player, a channel (its content key) and an expiry, signed with HMAC-SHA256
under a key that central (which signs, when it writes a player's playlist) and every proxy
(which verifies) share; the Ansible roles distribute the keys. Several keys may be configured:
the first signs, all verify, so keys rotate with an old+new window — add the new key second,
then move it first, then drop the old one once the tokens it signed have expired.

Wire form (URL-safe, in the stream URL's ``token`` parameter)::

    <key id>.<player id>.<expires, unix seconds>.<signature: 16 bytes, base64url>

The signature covers the key id, player id, expiry and the content key, so a token opens only
the channel it was written for, and only until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal

_KID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_SIG_BYTES = 16
MIN_SECRET = 16

Reason = Literal["malformed", "unknown_key", "bad_signature", "expired"]


class TokenError(Exception):
    """A token that does not open a stream; ``reason`` is a bounded metric label."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


@dataclass(frozen=True)
class TokenKeys:
    signing: str  # key id that signs
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, entries: list[str]) -> TokenKeys | None:
        """``["kid:secret", …]`` (first signs) → keys; None when empty; ValueError if bad."""
        keys: dict[str, bytes] = {}
        for entry in entries:
            kid, sep, secret = entry.strip().partition(":")
            if not sep or not _KID.match(kid):
                raise ValueError("a token key is <id>:<secret>, id 1-16 of [A-Za-z0-9_-]")
            if len(secret) < MIN_SECRET:
                raise ValueError(f"token key {kid!r}: the secret needs {MIN_SECRET}+ characters")
            if kid in keys:
                raise ValueError(f"token key {kid!r} given twice")
            keys[kid] = secret.encode()
        if not keys:
            return None
        return cls(signing=next(iter(keys)), keys=keys)


def _signature(key: bytes, kid: str, player_id: int, expires: int, content_key: str) -> str:
    message = f"{kid}.{player_id}.{expires}.{content_key}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:_SIG_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(keys: TokenKeys, player_id: int, content_key: str, expires: int) -> str:
    kid = keys.signing
    sig = _signature(keys.keys[kid], kid, player_id, expires, content_key)
    return f"{kid}.{player_id}.{expires}.{sig}"


def verify(keys: TokenKeys, token: str, content_key: str, now: float) -> int:
    """The player id ``token`` opens ``content_key`` for; :class:`TokenError` otherwise."""
    parts = token.split(".")
    if len(parts) != 4 or len(token) > 200:
        raise TokenError("malformed", "the token is not a stream token")
    kid, player, expires, sig = parts
    if not player.isdigit() or not expires.isdigit() or len(player) > 12 or len(expires) > 12:
        raise TokenError("malformed", "the token is not a stream token")
    key = keys.keys.get(kid)
    if key is None:
        raise TokenError("unknown_key", "the token was signed with a key this proxy does not know")
    expected = _signature(key, kid, int(player), int(expires), content_key)
    # constant time: a forger learns nothing from how long the comparison took
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise TokenError("bad_signature", "the token does not open this channel")
    if int(expires) < now:
        raise TokenError("expired", "the token has expired: fetch the playlist again")
    return int(player)


def secret_sha256(secret: str) -> str:
    """How a player's playlist secret is stored and looked up (never the secret itself)."""
    return hashlib.sha256(secret.encode()).hexdigest()
