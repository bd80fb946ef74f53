"""The one error shape of every acefleet service.

Every failure a client can see is a :class:`ServiceError`: an HTTP status, a stable
machine-readable ``code``, a ``message`` for a human and, when waiting helps, ``retry_after_s``.
On the wire it is always ``{"error": {"code", "message", "retry_after_s"?}}`` (``wire.ErrorBody``)
with a ``Retry-After`` header when a retry hint exists. Services subclass it only to name where
an error comes from (and to carry extra facts such as ``engine_fault``), never to change the shape.
"""

from __future__ import annotations

from collections.abc import Mapping

from acefleet.wire import ErrorBody, ErrorDetail


class ServiceError(Exception):
    """A failure with the status, code and message the client gets."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> ErrorBody:
        return error_body(self.code, self.message, self.retry_after_s)

    def response_headers(self) -> dict[str, str]:
        return error_headers(self.status, self.retry_after_s, self.headers)


def error_body(code: str, message: str, retry_after_s: float | None = None) -> ErrorBody:
    return ErrorBody(error=ErrorDetail(code=code, message=message, retry_after_s=retry_after_s))


def error_json(code: str, message: str, retry_after_s: float | None = None) -> bytes:
    """The error body as the bytes a client receives."""
    return error_body(code, message, retry_after_s).model_dump_json(exclude_none=True).encode()


def error_headers(
    status: int, retry_after_s: float | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers every error response carries: ``Retry-After`` (whole seconds, at least 1) when
    there is a retry hint, ``WWW-Authenticate`` on 401 (RFC 9110 requires it)."""
    headers = dict(extra or {})
    if retry_after_s is not None and "Retry-After" not in headers:
        headers["Retry-After"] = str(max(1, round(retry_after_s)))
    if status == 401 and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


# Codes for the framework's own HTTP errors (unknown route, wrong method …), the same in every
# service so that clients can switch on them.
HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "content_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def http_code(status: int) -> str:
    return HTTP_CODES.get(status, f"http_{status}")
