"""Stream tokens (acefleet/tokens.py): what opens a stream and what never does."""

from __future__ import annotations

import pytest

from acefleet.tokens import TokenError, TokenKeys, secret_sha256, sign, verify

OLD = TokenKeys.parse(["k1:old-secret-0123456789"])
BOTH = TokenKeys.parse(["k2:new-secret-0123456789", "k1:old-secret-0123456789"])
NOW = 1_800_000_000


def keys(k: TokenKeys | None) -> TokenKeys:
    assert k is not None
    return k


def test_a_token_opens_its_channel_until_it_expires() -> None:
    token = sign(keys(OLD), 7, "id:abc", NOW + 60)
    assert verify(keys(OLD), token, "id:abc", NOW) == 7
    with pytest.raises(TokenError) as expired:
        verify(keys(OLD), token, "id:abc", NOW + 61)
    assert expired.value.reason == "expired"


def test_a_token_opens_nothing_else() -> None:
    token = sign(keys(OLD), 7, "id:abc", NOW + 60)
    kid, player, expires, sig = token.split(".")
    forged = [
        (token, "id:other"),  # another channel
        (f"{kid}.8.{expires}.{sig}", "id:abc"),  # another player
        (f"{kid}.{player}.{int(expires) + 999}.{sig}", "id:abc"),  # a later expiry
        (f"{kid}.{player}.{expires}.{('B' if sig[0] == 'A' else 'A') + sig[1:]}", "id:abc"),
    ]
    for bad, key in forged:
        with pytest.raises(TokenError) as err:
            verify(keys(OLD), bad, key, NOW)
        assert err.value.reason == "bad_signature"
    for malformed in ("", "x", "a.b.c.d", f"{kid}.{player}.{expires}", "k1.1.2.3.4"):
        with pytest.raises(TokenError) as err:
            verify(keys(OLD), malformed, "id:abc", NOW)
        assert err.value.reason == "malformed"
    with pytest.raises(TokenError) as err:
        verify(keys(OLD), "k9.1.2.xyz", "id:abc", NOW)
    assert err.value.reason == "unknown_key"


def test_rotation_window_new_key_signs_old_still_verifies() -> None:
    old_token = sign(keys(OLD), 1, "id:abc", NOW + 60)
    new_token = sign(keys(BOTH), 1, "id:abc", NOW + 60)
    assert new_token.startswith("k2.")
    assert verify(keys(BOTH), old_token, "id:abc", NOW) == 1
    assert verify(keys(BOTH), new_token, "id:abc", NOW) == 1
    with pytest.raises(TokenError):
        verify(keys(OLD), new_token, "id:abc", NOW)  # a proxy not yet given the new key


def test_bad_key_settings_are_refused_with_the_reason() -> None:
    assert TokenKeys.parse([]) is None
    for bad in (["nocolon"], ["k1:short"], ["k 1:0123456789abcdef"], ["a:0123456789abcdef"] * 2):
        with pytest.raises(ValueError, match=r"token key|<id>:<secret>"):
            TokenKeys.parse(bad)
    assert secret_sha256("s") == secret_sha256("s") != secret_sha256("t")
