"""Relay pulls are not clients: a fellow proxy's pull, recognised by its relay credential (an
edge token, proxy/access.py), does not spend the per-client rate limit of its address, while a
client on that same address without one still does (issue 16)."""

from __future__ import annotations

import time
import urllib.parse

from acefleet.tokens import TokenKeys
from proxy.access import edge_token
from tests.proxy.client import request
from tests.proxy.conftest import StartProxy, endpoint
from tests.support import procs

KEY = "k1:0123456789abcdef-secret"
KEYS = TokenKeys.parse([KEY])
assert KEYS is not None
CONTENTS = [f"{n:040x}" for n in range(1, 6)]


def target(content: str, token: str | None = None) -> str:
    query = {"id": content, **({"token": token} if token else {})}
    return f"/ace/getstream?{urllib.parse.urlencode(query)}"


async def status_of(base: str, path: str) -> int:
    stream = await request(base, path)
    stream.close()
    return stream.status


async def test_relay_pulls_do_not_spend_the_client_rate_limit(
    sim: procs.Service, start_proxy: StartProxy
) -> None:
    # one new stream per client address, refilled only after ~100 s: the second from a client
    # is refused. Open mode (no token needed), but the edge has the fleet's token keys.
    proxy = start_proxy(f"{endpoint(sim)}@10", client_burst="1", client_rate="0.01", token_keys=KEY)
    assert await status_of(proxy.url, target(CONTENTS[0])) == 200  # a client, its one stream
    now = time.time()
    for content in CONTENTS[1:4]:  # relays from the same address: each carries its credential
        relay = target(content, edge_token(KEYS, f"id:{content}", now))
        assert await status_of(proxy.url, relay) == 200, content
    # the client on that address is still limited, and a forged credential makes no relay
    assert await status_of(proxy.url, target(CONTENTS[4])) == 429
    forged = edge_token(KEYS, f"id:{CONTENTS[0]}", now)  # another channel's edge token
    assert await status_of(proxy.url, target(CONTENTS[4], forged)) == 429
