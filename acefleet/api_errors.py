"""The exception handlers of the FastAPI services (agent, central): every error, whatever raised
it, leaves as the one error shape of :mod:`acefleet.errors`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from acefleet import logs
from acefleet.errors import ServiceError, error_body, error_headers, http_code

log = logs.get(__name__)

_MAX_VALIDATION_PARTS = 10


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after_s: float | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, retry_after_s).model_dump(exclude_none=True)
    return JSONResponse(
        body, status_code=status, headers=error_headers(status, retry_after_s, headers)
    )


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _on_service_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(
        exc.status, exc.code, exc.message, retry_after_s=exc.retry_after_s, headers=exc.headers
    )


async def _on_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()[:_MAX_VALIDATION_PARTS]
    parts = [f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors]
    return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")


async def _on_http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(
        exc.status_code,
        http_code(exc.status_code),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )


async def _on_crash(request: Request, exc: Exception) -> Response:
    # The client learns that it was not its fault; the details go to the log, not the wire.
    log.exception("unhandled error", path=request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; the service log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_crash)
