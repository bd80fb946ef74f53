"""Service API: liveness, readiness, network status, access rules on api_version."""

from __future__ import annotations

import httpx

from tests.support.procs import Service


def test_get_version(engine: Service) -> None:
    r = httpx.get(engine.url + "/webui/api/service?method=get_version")
    assert r.status_code == 200
    assert r.json() == {
        "result": {"code": 3017000, "platform": "linux", "version": "3.1.70"},
        "error": None,
    }


def test_get_status_needs_api_version(engine: Service) -> None:
    ok = httpx.get(engine.url + "/server/api?api_version=3&method=get_status").json()
    assert ok["error"] is None
    assert ok["result"]["playlist_loaded"] is True
    assert ok["result"]["version"]["version"] == "3.1.70"
    denied = httpx.get(engine.url + "/server/api?method=get_status")
    assert denied.status_code == 200
    assert denied.json() == {"result": None, "error": "access denied"}


def test_network_connection_status(engine: Service) -> None:
    r = httpx.get(engine.url + "/server/api?api_version=3&method=get_network_connection_status")
    assert r.json()["result"] == {"connected": True}


def test_unknown_method_and_path(engine: Service) -> None:
    assert httpx.get(engine.url + "/server/api?api_version=3&method=nope").json() == {
        "result": None,
        "error": "unknown method",
    }
    assert httpx.get(engine.url + "/nowhere").status_code == 404


def test_malformed_request_gets_400_and_server_keeps_serving(engine: Service) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", engine.port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        head = s.recv(200)
    assert head.startswith(b"HTTP/1.1 400")
    assert httpx.get(engine.url + "/webui/api/service?method=get_version").status_code == 200


def test_keep_alive_serves_several_requests_on_one_connection(engine: Service) -> None:
    import socket

    req = b"GET /webui/api/service?method=get_version HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", engine.port), timeout=5) as s:
        for _ in range(3):
            s.sendall(req)
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"Connection: keep-alive" in head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += s.recv(4096)
            assert b"3.1.70" in body
