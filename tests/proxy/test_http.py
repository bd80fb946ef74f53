"""The client-facing HTTP surface: validation, limits, hostile input, small endpoints."""

from __future__ import annotations

import asyncio
import urllib.parse

from tests.proxy.client import metric, request, sim_sessions
from tests.proxy.conftest import StartProxy, endpoint
from tests.support.procs import Service

CONTENT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"


BAD_QUERIES = [
    ("", "selector"),
    (f"id={CONTENT}&infohash={CONTENT}", "selector"),
    (f"id={CONTENT}&content_id={CONTENT}", "selector"),
    (f"id={CONTENT}&pid=abc", "pid_refused"),
    (f"id={CONTENT}&sid=abc", "sid_refused"),
    (f"id={CONTENT}&format=json", "format_refused"),
    ("id=a%20b", "bad_selector"),
    (f"id={CONTENT}&x=1&x=2", "duplicate_param"),
]


async def test_bad_stream_requests_are_400(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim))
    for query, code in BAD_QUERIES:
        s = await request(proxy.url, f"/ace/getstream?{query}")
        assert s.status == 400, query
        assert s.json()["error"]["code"] == code, query
    assert sim_sessions(sim.url)["sessions_started_total"] == 0


async def test_params_pass_through_with_a_fresh_pid(start_proxy: StartProxy) -> None:
    seen: list[str] = []

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode()
        seen.append(line.split()[1])
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"response": null, "error": "failed to load content"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        writer.close()

    server = await asyncio.start_server(engine, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = start_proxy(f"127.0.0.1:{port}", args=("--probe-interval-s", "3600"))
    for _ in range(2):
        s = await request(proxy.url, f"/ace/getstream?id={CONTENT}&transcode_audio=1")
        assert s.status == 502
    server.close()
    starts = [
        urllib.parse.parse_qs(urllib.parse.urlsplit(t).query) for t in seen if "getstream" in t
    ]
    assert len(starts) == 2
    for q in starts:
        assert q["transcode_audio"] == ["1"]
        assert q["id"] == [CONTENT]
        assert q["format"] == ["json"]
        assert len(q["pid"][0]) == 32
    assert starts[0]["pid"] != starts[1]["pid"]


async def test_head_answers_without_opening_playback(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim))
    s = await request(proxy.url, f"/ace/getstream?id={CONTENT}", method="HEAD")
    assert s.status == 200
    assert s.headers["content-type"] == "video/mp2t"
    assert sim_sessions(sim.url)["sessions_started_total"] == 0


async def test_other_methods_are_405(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim))
    for target in (f"/ace/getstream?id={CONTENT}", "/ace/status"):
        s = await request(proxy.url, target, method="DELETE")
        assert s.status == 405
        assert s.headers["allow"] == "GET, HEAD"


async def test_keep_alive_serves_several_small_requests(
    sim: Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(sim))
    s = await request(proxy.url, "/livez")
    assert s.status == 200
    for target in ("/readyz", "/ace/status", "/metrics", "/nope"):
        s.writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await s.reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await s.reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 404" if target == "/nope" else b"HTTP/1.1 200")
    s.close()


async def test_max_viewers_is_503_with_retry_after(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim), args=("--max-viewers", "2"))
    ok = [await request(proxy.url, f"/ace/getstream?id={CONTENT}") for _ in range(2)]
    refused = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "max_viewers"
    assert refused.headers["retry-after"] == "5"
    assert [s.status for s in ok] == [200, 200]
    for s in ok:
        s.close()


async def test_max_upstreams_is_503(sim: Service, start_proxy: StartProxy) -> None:
    proxy = start_proxy(endpoint(sim) + "@4", args=("--max-upstreams", "1"))
    first = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert first.status == 200
    second = await request(proxy.url, f"/ace/getstream?id={OTHER}")
    assert second.status == 503
    assert second.json()["error"]["code"] == "max_upstreams"
    assert "retry-after" in second.headers
    joiner = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert joiner.status == 200  # joining a live channel needs no new upstream
    first.close()
    joiner.close()


async def test_new_streams_per_client_are_rate_limited(
    sim: Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(sim), args=("--client-burst", "2", "--client-rate", "0.2"))
    ok = [await request(proxy.url, f"/ace/getstream?id={CONTENT}") for _ in range(2)]
    limited = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    assert limited.status == 429
    assert limited.json()["error"]["code"] == "too_many_streams"
    assert int(limited.headers["retry-after"]) >= 1
    for s in ok:
        s.close()


async def test_forwarded_for_from_trusted_balancer_limits_per_client(
    sim: Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(
        endpoint(sim),
        args=("--client-burst", "1", "--client-rate", "0.1", "--trusted-proxies", "127.0.0.1"),
    )

    def raw(client: str) -> bytes:
        return (
            f"GET /ace/getstream?id={CONTENT} HTTP/1.1\r\nHost: x\r\n"
            f"X-Forwarded-For: 198.51.100.9, {client}\r\n\r\n"
        ).encode()

    a = await request(proxy.url, "", raw=raw("192.0.2.1"))
    b = await request(proxy.url, "", raw=raw("192.0.2.2"))  # another client: its own bucket
    again = await request(proxy.url, "", raw=raw("192.0.2.1"))
    assert (a.status, b.status, again.status) == (200, 200, 429)
    for s in (a, b):
        s.close()


async def test_hostile_clients_get_precise_errors_and_viewers_keep_going(
    sim: Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(
        endpoint(sim), args=("--header-timeout-s", "1", "--max-header-bytes", "4096")
    )
    viewer = await request(proxy.url, f"/ace/getstream?id={CONTENT}")
    await viewer.read_until(10_000)

    garbage = await request(proxy.url, "", raw=b"\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n")
    assert garbage.status == 400
    assert garbage.json()["error"]["code"] == "malformed_request"

    big = await request(
        proxy.url, "", raw=b"GET /livez HTTP/1.1\r\nX-Junk: " + b"a" * 10_000 + b"\r\n\r\n"
    )
    assert big.status == 431

    body = await request(
        proxy.url, "", raw=b"GET /livez HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert body.status == 413

    # slowloris: half a request, then silence → 408 after the header deadline, then closed
    slow = await request(
        proxy.url, "", raw=b"GET /ace/getstream?id=abc HTTP/1.1\r\nHost:", within=5
    )
    assert slow.status == 408
    assert await slow.reader.read() == b""

    # many connections that never send anything are closed after the idle timeout
    idle = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(20)]
    assert await viewer.read_for(1.0) > 100_000  # the viewer never noticed any of this
    for _, w in idle:
        w.close()
    assert metric(proxy.url, "acefleet_proxy_rejections_total", 'reason="malformed"') == 1
    assert metric(proxy.url, "acefleet_proxy_rejections_total", 'reason="header_size"') == 1
    assert metric(proxy.url, "acefleet_proxy_rejections_total", 'reason="header_timeout"') == 1
    viewer.close()


async def test_max_connections_refuses_extra_connections(
    sim: Service, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(endpoint(sim), args=("--max-connections", "3"))
    held = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(3)]
    extra = await request(proxy.url, "/livez")
    assert extra.status == 503
    assert extra.json()["error"]["code"] == "max_connections"
    for _, w in held:
        w.close()
