"""The one error envelope `{"error": {"type", "message", "request_id"}}` and the mapping from exceptions to it.

Engine errors (engines/errors.py) carry their own `http_status` and `type`; the server adds its own below. Any
other exception is a server fault: it is logged with its traceback and answered as a bare 500 "internal_error"
whose message reveals nothing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from engines.errors import (
    BadRequest,
    Cancelled,
    MediaError,
    Overloaded,
    Timeout,
    TooLarge,
    XemoError,
)
from xemo.schemas import ErrorBody, ErrorEnvelope, ErrorEvent

log = logging.getLogger("xemo.server")


class Unauthorized(XemoError):
    type = "unauthorized"
    http_status = 401


class RateLimited(XemoError):
    type = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Draining(Overloaded):
    type = "draining"


class NotReady(Overloaded):
    type = "not_ready"


class InvalidField(XemoError):
    """A form field or option with a bad value (FastAPI's 422 convention)."""

    type = "invalid_request"
    http_status = 422


class UploadTimeout(XemoError):
    """The body did not arrive within the request's time budget (a slow or stalled client)."""

    type = "upload_timeout"
    http_status = 408


class IdempotencyConflict(XemoError):
    """An Idempotency-Key sent again with a different request."""

    type = "idempotency_conflict"
    http_status = 409


class UnsupportedContentType(XemoError):
    type = "unsupported_content_type"
    http_status = 415


@dataclass
class ApiError:
    status: int
    type: str
    message: str
    outcome: str
    retry_after_s: float | None = None

    def body(self, request_id: str) -> dict:
        """The error envelope (HTTP bodies)."""
        return ErrorEnvelope(error=ErrorBody(type=self.type, message=self.message, request_id=request_id)).model_dump()

    def event(self, request_id: str) -> dict:
        """The same as a stream's error event (SSE and WebSocket)."""
        return ErrorEvent(error=ErrorBody(type=self.type, message=self.message, request_id=request_id)).model_dump()

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


def to_api_error(exc: BaseException) -> ApiError:
    """Status, type, user-facing message and metrics outcome for any exception."""
    if isinstance(exc, XemoError):
        status = exc.http_status
        retry = getattr(exc, "retry_after_s", None)
        if status >= 500 and status not in (503, 504):
            log.error("server error %s", exc.type, exc_info=exc)
        return ApiError(status, exc.type, exc.message, _outcome(exc), retry)
    if isinstance(exc, TimeoutError):
        return ApiError(504, "timeout", "the request did not finish within the server's time budget", "timeout")
    log.error("unhandled server error", exc_info=exc)
    return ApiError(500, "internal_error", "internal server error; the request id identifies it in the logs", "error")


def _outcome(exc: XemoError) -> str:
    if isinstance(exc, TooLarge):
        return "too_large"
    if isinstance(exc, MediaError | UnsupportedContentType):
        return "bad_media"
    if isinstance(exc, Overloaded):
        return "rejected_overload"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, Unauthorized):
        return "unauthorized"
    if isinstance(exc, Timeout | UploadTimeout):
        return "timeout"
    if isinstance(exc, Cancelled):
        return "cancelled"
    if isinstance(exc, BadRequest | InvalidField) or 400 <= exc.http_status < 500:
        return "bad_request"
    return "error"


def http_error(status: int, message: str) -> ApiError:
    """Starlette/FastAPI's own errors (404, 405, validation) in the envelope."""
    names = {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        415: "unsupported_content_type",
        422: "invalid_request",
    }
    return ApiError(status, names.get(status, "http_error"), message, "bad_request")
