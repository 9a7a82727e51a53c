"""Typed errors: every non-2xx answer (and an error line ending an NDJSON
stream) raises a :class:`SiloError`, of the subclass named by the body's
stable ``code``. Branch on the class (or ``code``), never on ``message``."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx

__all__ = [
    "SiloError",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "RequestTimeout",
    "Conflict",
    "LimitExceeded",
    "Busy",
    "ConnectorFailed",
    "DatasourceFailed",
    "Internal",
]


class SiloError(Exception):
    """An error answer from Silo.

    Attributes:
        status: the HTTP status. For an error that ended an NDJSON stream
            (the response itself was 200) it is the status the server gives
            that code elsewhere, and ``streamed`` is true.
        code: the stable code (``not_found``, ``busy``, ...), or ``None`` when
            the body was not a Silo error (a proxy's page, say).
        message: what went wrong, safe to show.
        retry_after: seconds to wait before retrying (``Retry-After``), if sent.
        streamed: the error arrived as the last line of an NDJSON stream.
    """

    #: The stable code this class stands for (``None``: any other).
    code_name: str | None = None
    #: The status the server answers this code with.
    default_status: int = 500

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        retry_after: float | None = None,
        *,
        streamed: bool = False,
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.streamed = streamed

    def __str__(self) -> str:
        where = " (in stream)" if self.streamed else ""
        return f"{self.code or 'error'} ({self.status}{where}): {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, retry_after={self.retry_after!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (type(self), self.status, self.code, self.message, self.retry_after, self.streamed),
        )


def _rebuild(cls: type[SiloError], *args: Any) -> SiloError:
    status, code, message, retry_after, streamed = args
    return cls(status, code, message, retry_after, streamed=streamed)


class InvalidRequest(SiloError):
    """``invalid_request``: malformed, or names something invalid (400)."""

    code_name = "invalid_request"
    default_status = 400


class Unauthorized(SiloError):
    """``unauthorized``: no credential, or one unknown, revoked, expired or badly signed (401)."""

    code_name = "unauthorized"
    default_status = 401


class Forbidden(SiloError):
    """``forbidden``: the policy refused the operation (403)."""

    code_name = "forbidden"
    default_status = 403


class NotFound(SiloError):
    """``not_found``: not there, or not visible to this caller (404)."""

    code_name = "not_found"
    default_status = 404


class RequestTimeout(SiloError):
    """``request_timeout``: the request did not finish in time (408)."""

    code_name = "request_timeout"
    default_status = 408


class Conflict(SiloError):
    """``conflict``: conflicts with the current state, e.g. a name in use (409)."""

    code_name = "conflict"
    default_status = 409


class LimitExceeded(SiloError):
    """``limit_exceeded``: a size, row, time or memory limit was reached (413, 422)."""

    code_name = "limit_exceeded"
    default_status = 422


class Busy(SiloError):
    """``busy``: capacity is in use; retry after ``retry_after`` seconds (503)."""

    code_name = "busy"
    default_status = 503


class ConnectorFailed(SiloError):
    """``connector_failed``: the connector failed or misbehaved (502)."""

    code_name = "connector_failed"
    default_status = 502


class DatasourceFailed(SiloError):
    """``datasource_failed``: the datasource failed: unreachable, timeout, query error (502)."""

    code_name = "datasource_failed"
    default_status = 502


class Internal(SiloError):
    """``internal``: a host bug; details are in the host's log only (500)."""

    code_name = "internal"
    default_status = 500


_BY_CODE: dict[str, type[SiloError]] = {
    cls.code_name: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        RequestTimeout,
        Conflict,
        LimitExceeded,
        Busy,
        ConnectorFailed,
        DatasourceFailed,
        Internal,
    )
    if cls.code_name is not None
}

# Longest text of a non-Silo error body carried into a message.
_MAX_FOREIGN = 200


def error_class(code: str | None) -> type[SiloError]:
    """The class for a stable code; :class:`SiloError` for an unknown one."""
    return _BY_CODE.get(code or "", SiloError)


def error_detail(body: Any) -> tuple[str, str] | None:
    """``(code, message)`` of a ``{"error": {"code", "message"}}`` body, else ``None``."""
    if not isinstance(body, dict) or set(body) != {"error"}:
        return None
    detail = body["error"]
    if not isinstance(detail, dict):
        return None
    code, message = detail.get("code"), detail.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    return code, message


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_response(response: httpx.Response) -> SiloError:
    """The error a non-2xx response stands for (its body must have been read)."""
    retry_after = _retry_after(response.headers.get("retry-after"))
    try:
        detail = error_detail(json.loads(response.content))
    except ValueError:
        detail = None
    if detail is None:
        text = response.content[:_MAX_FOREIGN].decode("utf-8", "replace").strip()
        message = text or response.reason_phrase or "no message"
        return SiloError(response.status_code, None, message, retry_after)
    code, message = detail
    return error_class(code)(response.status_code, code, message, retry_after)


def from_stream_line(code: str, message: str) -> SiloError:
    """The error an NDJSON stream ended with (after a 200 status)."""
    cls = error_class(code)
    return cls(cls.default_status, code, message, streamed=True)
