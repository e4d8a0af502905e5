"""Where errors become HTTP: the one table from domain errors to status and headers.

Below the handlers, errors are domain errors (``server/errors.py``) that know no
status codes.  Handlers raise ``HttpError`` for conditions that exist only in
HTTP (no route, wrong method, body too large, wrong content type, a bad query
parameter).  ``http_error_for`` turns either into the one thing
``BaseHandler.write_error`` renders::

    {"error": {"code": "snake_case", "message": "...", "details": [...]}}

Anything else that escapes a handler is a bug: a logged 500 without internals.

``ERROR_CODES`` is derived from the same table, the HTTP-only errors and
tornado's own answers: every code an error answer can carry, by status.  The
OpenAPI document publishes it as is.
"""

from __future__ import annotations

import math
from typing import Any

from server import errors


class HttpError(Exception):
    """A status, an error body and headers, ready to render."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.code = code or self.code
        self.headers = headers or {}
        self.extra = extra or {}  # further members of the error object (e.g. a resume point)
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message,
                          "details": self.details, **self.extra}}


class NotFound(HttpError):
    status = 404
    code = "not_found"


class PayloadTooLarge(HttpError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HttpError):
    status = 415
    code = "unsupported_media_type"


class Overloaded(HttpError):
    """The process holds as many request-body bytes as it may (HTTP_BODIES_MAX_BYTES)."""

    status = 503
    code = "overloaded"


class BodyIdle(HttpError):
    """The client stopped sending its body (no byte for HTTP_BODY_IDLE_S)."""

    status = 408
    code = "body_idle"


class BadParameter(HttpError):
    """A query parameter or path value that cannot be used."""

    status = 422
    code = "invalid_fields"


def _retry_after(exc: Any) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(exc.retry_after_s)))}


def rate_limit_headers(limit: int, remaining: int, reset_s: float) -> dict[str, str]:
    """The IETF draft's ``RateLimit-*`` fields, sent on every answer of a limited route.

    ``Limit``: the burst (requests that pass at once from rest); ``Remaining``: how
    many more would pass now; ``Reset``: whole seconds (rounded up) until the whole
    burst is available again, not until the next request passes (that is a 429's
    ``Retry-After``).
    """
    return {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(math.ceil(reset_s))}


def _rate_limited(exc: Any) -> dict[str, str]:
    # Rounded up: a client that waits Retry-After seconds is then admitted.
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s))),
            **rate_limit_headers(exc.limit, exc.remaining, exc.reset_s)}


# Domain error type -> (status, code or None for the error's own, headers).  Most
# specific first: the first entry the error is an instance of wins.  Every store
# outage is one code, ``unavailable``, whichever store and however it failed.
# (``EnqueueInterrupted`` never reaches a handler: ingest turns it into
# ``PartiallyAccepted``, which is rendered as its cause.)
_TABLE: list[tuple[type[errors.ServiceError], int, str | None, Any]] = [
    (errors.StoreUnavailable, 503, "unavailable", _retry_after),
    (errors.QueueFull, 503, None, _retry_after),
    (errors.UnknownReferences, 503, None, _retry_after),
    (errors.NotAuthenticated, 401, None, lambda exc: {"WWW-Authenticate": "Bearer"}),
    (errors.NotPermitted, 403, None, None),
    (errors.RateLimited, 429, None, _rate_limited),
    (errors.SlugTaken, 409, None, None),
    (errors.IdConflict, 409, None, None),
    (errors.IdempotencyKeyInFlight, 409, None, _retry_after),
    (errors.IdempotencyKeyReused, 422, None, None),
    (errors.MalformedInput, 400, None, None),
    (errors.InvalidInput, 422, None, None),
    # Input that passed validation but PostgreSQL still refused (a direct write
    # while Redis is down): the client's data, so a 4xx, never a 500.
    (errors.DataRejected, 422, None, None),
]
_HTTP_ONLY: tuple[type[HttpError], ...] = (NotFound, PayloadTooLarge, UnsupportedMediaType,
                                           BadParameter, Overloaded, BodyIdle)
# Tornado answers these itself, through ``write_error``: a path or query that is
# not UTF-8 (400), a method the route's handler does not define (405).
_TORNADO = {400: "bad_request", 405: "method_not_allowed"}


def _error_codes() -> dict[int, tuple[str, ...]]:
    found: dict[int, list[str]] = {}
    for kind, status, code, _ in _TABLE:
        found.setdefault(status, []).extend(
            [code] if code else list(kind.codes or (kind.code,)))
    for http in _HTTP_ONLY:
        found.setdefault(http.status, []).append(http.code)
    for status, code in _TORNADO.items():
        found.setdefault(status, []).append(code)
    return {status: tuple(dict.fromkeys(codes)) for status, codes in sorted(found.items())}


ERROR_CODES = _error_codes()


def http_error_for(exc: BaseException) -> HttpError | None:
    """The HTTP rendering of ``exc``, or None when it is a bug (a 500)."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, errors.PartiallyAccepted):
        rendered = http_error_for(exc.cause)
        if rendered is not None:
            rendered.message = exc.message
            rendered.extra.update(accepted_ids=exc.accepted_ids, unknown_ids=exc.unknown_ids)
        return rendered
    if not isinstance(exc, errors.ServiceError):
        return None
    for kind, status, code, headers in _TABLE:
        if isinstance(exc, kind):
            return HttpError(exc.message, details=exc.details, status=status,
                             code=code or exc.code, headers=headers(exc) if headers else None)
    return None
