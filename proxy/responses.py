"""Every HTTP response the proxy writes, as bytes: the stream head, small bodies and errors.

Errors have the one acefleet shape (``acefleet.errors``): a JSON body ``{"error": {"code",
"message", "retry_after_s"?}}`` plus ``Retry-After`` when a retry hint exists. Any
:class:`~acefleet.errors.ServiceError` (a refusal, a bad request, a failed upstream) is rendered
by :func:`service_error_response`, so every error looks the same whoever raised it.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from acefleet.errors import ServiceError, error_headers, error_json

# The head of every stream response; the body is close-delimited MPEG-TS.
STREAM_HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nCache-Control: no-store\r\n"
    b"Connection: close\r\n\r\n"
)

# RFC 9110 renamed these; Python 3.11's HTTPStatus still has the RFC 7231 phrases. The proxy has
# always sent the RFC 9110 ones, so it keeps doing so.
_RFC9110_PHRASES = {413: "Content Too Large", 422: "Unprocessable Content"}


def reason(status: int) -> str:
    """The reason phrase of ``status`` (``Status`` for a code HTTP does not define)."""
    if status in _RFC9110_PHRASES:
        return _RFC9110_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def response(
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
    *,
    keep_alive: bool,
    head: bool = False,
) -> bytes:
    """A complete response with a ``Content-Length`` body (only the head for ``HEAD``)."""
    out = response_head(status, len(body), content_type, headers, keep_alive=keep_alive)
    return out if head else out + body


def response_head(
    status: int,
    length: int,
    content_type: str,
    headers: Mapping[str, str] | None = None,
    *,
    keep_alive: bool,
) -> bytes:
    """Status line and headers of a response whose body of ``length`` bytes is written apart
    (a 2 MB HLS segment is not copied into a new bytes object for every player)."""
    lines = [
        f"HTTP/1.1 {status} {reason(status)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        "Connection: " + ("keep-alive" if keep_alive else "close"),
    ]
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after_s: float | None = None,
    keep_alive: bool = False,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """An error in the acefleet shape (JSON body, ``Retry-After`` when a hint exists)."""
    return response(
        status,
        error_json(code, message, retry_after_s),
        "application/json",
        error_headers(status, retry_after_s, extra),
        keep_alive=keep_alive,
    )


def service_error_response(exc: ServiceError, *, keep_alive: bool = False) -> bytes:
    """Any :class:`ServiceError` as the client receives it."""
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        retry_after_s=exc.retry_after_s,
        keep_alive=keep_alive,
        extra=exc.headers,
    )
