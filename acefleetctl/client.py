"""Central's API over a sync httpx client: JSON in and out, and every failure turned into a
:class:`~acefleetctl.errors.CliError` with the exit code for its kind."""

from __future__ import annotations

import math
import ssl
from typing import Any

import httpx

from acefleet.tls import client_context
from acefleetctl.config import KEY_ENV, Target
from acefleetctl.errors import CliError, Exit

API_KEY_HEADER = "X-API-Key"
_KEY_HINT = f" (the key comes from --api-key, {KEY_ENV} or api_key in the config file)"


def verify(target: Target) -> ssl.SSLContext | bool:
    """How an https central is verified: against the fleet's CA file when one is given, else
    the system's trust store (httpx also honours SSL_CERT_FILE then). Never switched off."""
    return client_context(target.ca_file) if target.ca_file else True


class Central:
    """One connection pool to central for the duration of a command."""

    def __init__(self, target: Target, timeout: float = 10.0) -> None:
        headers = {"Accept": "application/json", "User-Agent": "acefleet-cli"}
        if target.api_key:
            headers[API_KEY_HEADER] = target.api_key
        self.target = target
        self.http = httpx.Client(
            base_url=target.url, headers=headers, timeout=timeout, verify=verify(target)
        )

    def __enter__(self) -> Central:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        return self._call("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, json=body)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("PUT", path, json=body)

    def delete(self, path: str) -> None:
        self._call("DELETE", path)

    def send(
        self,
        method: str,
        path: str,
        content: bytes,
        content_type: str,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """A file's bytes as the body, and central's answer whatever its status (the caller
        reads an error body that is more than the usual error, e.g. an import's bad lines)."""
        return self.request(
            method, path, content=content, headers={"Content-Type": content_type}, params=params
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; only a transport failure is an error here."""
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.target.url, exc) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return answer(response, method, path)


def answer(response: httpx.Response, method: str, path: str) -> Any:
    """Central's JSON body of a success (None for 204), or the CliError of its refusal."""
    if response.is_error:
        raise refused(response)
    if response.status_code == 204:
        return None
    try:
        return response.json()
    except ValueError:
        raise CliError(
            Exit.other, f"central answered {method} {path} with a body that is not JSON"
        ) from None


def unreachable(url: str, exc: Exception) -> CliError:
    reason = str(exc) or type(exc).__name__
    return CliError(Exit.unreachable, f"central unreachable at {url}: {reason}")


def refused(response: httpx.Response) -> CliError:
    """The one-line message and exit code for central's error answer (its JSON error body
    ``{"error": {"code", "message", "retry_after_s"}}`` when it has one)."""
    status = response.status_code
    code, message, retry = _error_fields(response)
    return refusal(status, code, message, retry)


def refusal(status: int, code: str, message: str, retry_after_s: float | None) -> CliError:
    """Shared by HTTP answers and the WebSocket handshake."""
    text = f"central refused ({status} {code}): {message}"
    if status == 429:
        wait = max(1, math.ceil(retry_after_s)) if retry_after_s is not None else None
        text += f"; retry in {wait} s" if wait is not None else "; retry later"
        return CliError(Exit.rate_limited, text)
    if status in (401, 403):
        return CliError(Exit.auth, text + (_KEY_HINT if status == 401 else ""))
    return CliError(Exit.other, text)


def _error_fields(response: httpx.Response) -> tuple[str, str, float | None]:
    header_retry = _retry_after(response.headers.get("retry-after"))
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
        retry = detail.get("retry_after_s")
        return code, message, float(retry) if retry is not None else header_retry
    except (ValueError, KeyError, TypeError):
        # Not central's error shape (a proxy in front of it, a crash page): show a short excerpt.
        excerpt = " ".join(response.text.split())[:200] or response.reason_phrase
        return f"http_{response.status_code}", excerpt, header_retry


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
