"""Hostile input on the VIP: what one attacker may cost is bounded by HAProxy (the haproxy role's
template with its defaults, real haproxy on loopback, see test_haproxy_tls), the servers behind it
never see the attack, and a client from another address is served meanwhile."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest

from tests.ansible.test_haproxy_tls import CENTRAL, EDGES, KEY, STREAM, Vip, vip


def _address(base: str) -> tuple[str, int]:
    host, port = base.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def _read_answer(sock: socket.socket, limit_s: float = 8.0) -> bytes:
    """Everything the server sends until it closes (or ``limit_s`` passes: then what came)."""
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _other_source(lb: Vip, base: str) -> httpx.Client:
    """A client from 127.0.0.2: another address than the attacker's 127.0.0.1."""
    trust = ssl.create_default_context(cafile=str(lb.ca))
    transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=trust)
    return lb.client(base, transport=transport)


def _seen(lb: Vip) -> list[str]:
    return [path for host in lb.hosts.values() for path in host.requests]


@pytest.mark.slow
def test_slow_headers_are_cut_and_others_are_served(tmp_path: Path) -> None:
    with vip(tmp_path, haproxy_timeout_http_request="1s") as lb:
        with socket.create_connection(_address(lb.plain)) as attacker:
            attacker.sendall(b"GET /ace/getstream?id=slow HTTP/1.1\r\nHost: vip\r\n")
            started = time.monotonic()
            answer = b""
            # one header line every 200 ms: each arrives well within any idle timeout
            while time.monotonic() - started < 6 and not answer:
                with lb.client(lb.plain) as client:  # another viewer meanwhile
                    assert client.get(STREAM).text in EDGES
                try:
                    attacker.sendall(b"X-Slow: 1\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
                attacker.settimeout(0.2)
                with contextlib.suppress(TimeoutError):
                    answer = attacker.recv(65536)
            answer += _read_answer(attacker, 2)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert not any("slow" in path for path in _seen(lb))


@pytest.mark.slow
def test_header_floods_answer_400_before_any_server(tmp_path: Path) -> None:
    with vip(tmp_path) as lb, lb.client(lb.plain) as client:
        many = {f"X-Flood-{n}": "1" for n in range(70)}
        answer = client.get("/ace/getstream?id=many", headers=many)
        assert answer.status_code == 400
        huge = client.get("/ace/getstream?id=huge", headers={"X-Huge": "h" * 20000})
        assert huge.status_code == 400
        # a player's usual head still passes
        assert client.get(STREAM, headers={f"X-Ok-{n}": "1" for n in range(30)}).text in EDGES
        assert not any("many" in p or "huge" in p for p in _seen(lb))


@pytest.mark.slow
def test_bodies_on_the_player_ports_are_refused(tmp_path: Path) -> None:
    with vip(tmp_path) as lb:
        for base in (lb.plain, lb.tls):
            with lb.client(base) as client:
                answer = client.post("/ace/getstream?id=body", content=b"x" * 100)
                assert answer.status_code == 413
                assert answer.json()["error"]["code"] == "body_too_large"
                chunked = client.post("/ace/getstream?id=body", content=iter([b"x" * 100]))
                assert chunked.status_code == 413
        assert not any("body" in p for p in _seen(lb))


@pytest.mark.slow
def test_operator_bodies_are_capped_and_must_arrive_in_time(tmp_path: Path) -> None:
    with vip(tmp_path, haproxy_timeout_http_request="1s") as lb:
        with lb.client(lb.control_tls, headers={"X-API-Key": KEY}) as client:
            two_mib = b"x" * (2 * 1024 * 1024)
            refused = client.post("/v1/channels", content=two_mib)
            assert refused.status_code == 413, refused.text
            assert refused.json()["error"]["code"] == "body_too_large"
            # the guide upload may be larger; central checks its own limit
            assert client.put("/v1/guide", content=two_mib).text == str(len(two_mib))
            assert client.post("/v1/channels", content=b"{}").text == "2"
            chunked = client.post("/v1/channels", content=iter([b"{}"]))
            assert chunked.status_code == 411
            assert chunked.json()["error"]["code"] == "length_required"
        assert central_saw(lb) == ["/v1/guide", "/v1/channels"]

        # a slow body: 10 of the 100 bytes announced, then nothing
        with socket.create_connection(_address(lb.control)) as attacker:
            attacker.sendall(
                b"POST /v1/channels HTTP/1.1\r\nHost: vip\r\nContent-Length: 100\r\n\r\n"
                + b"x" * 10
            )
            answer = _read_answer(attacker)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert central_saw(lb) == ["/v1/guide", "/v1/channels"]


def central_saw(lb: Vip) -> list[str]:
    return list(lb.hosts[CENTRAL].requests)


@pytest.mark.slow
def test_key_and_player_url_guessing_is_throttled_per_source(tmp_path: Path) -> None:
    with vip(tmp_path, haproxy_auth_fail_limit=5) as lb:
        with lb.client(lb.control_tls) as guesser:
            answers = [
                guesser.get("/v1/hosts", headers={"X-API-Key": f"guess-{n}"}).status_code
                for n in range(8)
            ]
            assert answers[:6] == [401] * 6, answers
            assert answers[-1] == 429, answers
            throttled = guesser.get("/v1/hosts", headers={"X-API-Key": KEY})
            # even the right key now: the guesser cannot tell a hit from a miss
            assert throttled.status_code == 429
            error = throttled.json()["error"]
            assert error["code"] == "too_many_failures"
            assert error["retry_after_s"] == int(throttled.headers["retry-after"]) > 0
        with _other_source(lb, lb.control_tls) as operator:  # others are unaffected
            assert operator.get("/v1/hosts", headers={"X-API-Key": KEY}).text == CENTRAL
        with _other_source(lb, lb.plain) as operator:  # the source's own failures count
            answers = [
                operator.get(f"/p/{'y' * 43}-{n}/playlist.m3u").status_code for n in range(8)
            ]
            assert answers[0] == 404, answers
            assert answers[-1] == 429, answers


@pytest.mark.slow
def test_connections_per_source_are_capped(tmp_path: Path) -> None:
    with vip(tmp_path, haproxy_max_conn_per_source=5) as lb:
        # five viewers on kept-alive connections, each served once (so HAProxy counted it)
        held = [lb.client(lb.plain) for _ in range(5)]
        try:
            for client in held:
                assert client.get(STREAM).text in EDGES
            with socket.create_connection(_address(lb.plain)) as sixth:
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    sixth.sendall(b"GET /ace/getstream?id=sixth HTTP/1.1\r\nHost: vip\r\n\r\n")
                assert _read_answer(sixth, 5) == b""  # closed without an answer
            with _other_source(lb, lb.plain) as client:
                assert client.get(STREAM).text in EDGES
        finally:
            for client in held:
                client.close()
        with lb.client(lb.plain) as client:  # the source's connections are gone: served again
            assert client.get(STREAM).text in EDGES
        assert not any("sixth" in p for p in _seen(lb))
