"""Typed errors that cross the HTTP boundary, mapped to the SPEC error shape once.

Hierarchy::

    ApiError                      (status, code, message, details)
    ├── BadRequest          400   malformed JSON / CSV, non-UTF-8, nesting
    ├── Unauthorized        401   missing, unknown or revoked token
    ├── Forbidden           403   token lacks the role
    ├── NotFound            404
    ├── MethodNotAllowed    405
    ├── Conflict            409   unique slug taken
    ├── PayloadTooLarge     413
    ├── UnsupportedMediaType 415
    ├── Unprocessable       422   invalid fields; details name index/line + field
    └── Unavailable         503   no store can take the request (Retry-After)

Handlers raise these; ``BaseHandler.write_error`` renders them.  Anything else
that escapes a handler is a bug and becomes a logged 500 without internals.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str = "missing or invalid bearer token") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(ApiError):
    status = 422
    code = "invalid_fields"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
