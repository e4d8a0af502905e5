"""The OpenAPI 3.1 document (``GET /openapi.json``), built from the application's routes.

``build`` walks the *application's* route table and describes each route from
its catalogue entry (``handlers/catalogue.py``), so a route without an entry is
an error (``UndocumentedRoute``), never a silent gap, and an entry whose route
is not served is left out.  The statuses an operation can answer are derived
from what it does — a token (401, 403 above ``read``, 429, 503 while the token
store is down), a body (400, 413, 415, 422), query or header parameters (422),
a path id (404); a body may also be cut when idle (408) or refused while the
process holds as many bodies as it may (503) — plus those it lists itself; the
codes each status can carry are the handlers' error table's (``ERROR_CODES``),
listed by the status's one shared response (``components/responses/Error{status}``,
``x-error-codes``), whose body is the one ``Error`` schema.  Limits that depend
on the settings (``POINTS_MAX_BATCH``, body sizes, the rate limit) come from the
``Settings`` the document is built with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
import tornado.web

from server import schemas
from server.config import Settings
from server.handlers.catalogue import (
    ERROR_CODE_TEXT,
    ERROR_TEXT,
    JSON,
    PARAMETERS,
    PATH_PARAMETERS,
    PATHS,
    READ,
    Operation,
    request_bodies,
)
from server.handlers.errors import ERROR_CODES
from server.schemas import ref

OPENAPI_VERSION = "3.1.0"


class UndocumentedRoute(LookupError):
    """A route of the application has no entry in the catalogue's ``PATHS``."""


class UndocumentedErrorCode(LookupError):
    """An error code of the handlers' table has no words in ``ERROR_CODE_TEXT`` (or
    its status none in ``ERROR_TEXT``)."""

# --- building ---------------------------------------------------------------------


def routes_of(app: tornado.web.Application) -> list[tuple[str, type]]:
    """(pattern as written in the route table, handler class) for every route."""
    # Each rule is a URLSpec: its matcher, a PathMatches, has the regex (a Matcher has not).
    return [(rule.matcher.regex.pattern.removesuffix("$"),  # type: ignore[attr-defined]  # URLSpec
             rule.target)
            for rule in app.wildcard_router.rules]


def build(settings: Settings, routes: Iterable[tuple[str, Any]],
          error_codes: dict[int, tuple[str, ...]] = ERROR_CODES) -> dict[str, Any]:
    """The document for the application whose route table is ``routes`` (and whose
    error answers carry ``error_codes``, by status)."""
    paths: dict[str, Any] = {}
    error_responses: dict[str, int] = {}
    for pattern, handler in routes:
        entry = PATHS.get(pattern)
        if entry is None:
            name = getattr(handler, "__name__", handler)
            raise UndocumentedRoute(f"route {pattern!r} ({name}) has no entry in "
                                    "server/handlers/catalogue.py PATHS")
        paths[entry.template] = {method: _operation(entry.template, op, error_responses)
                                 for method, op in entry.operations.items()}
    components = {**schemas.COMPONENTS,
                  "PointBatch": schemas.point_batch(settings.points_max_batch)}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Points server", "version": "1",
                 "description": "Scored events in, standings out.  JSON bodies are "
                                "UTF-8; every error is `{\"error\": {\"code\", \"message\", "
                                "\"details\"}}`.  Nothing a client sends answers a 500."},
        "tags": [{"name": name} for name in
                 ("points", "competitions", "reads", "admin", "dashboard", "operations")],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {name: _error_response(status, error_codes[status], settings)
                          for name, status in sorted(error_responses.items())},
            "headers": _rate_limit_headers(required=False),
            "requestBodies": request_bodies(settings),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer <token>`.  Roles: `read` (every GET), "
                               "`ingest` (read + POST points, competitions, participants), "
                               "`admin` (everything); each operation names the least role "
                               "it needs.  Tokens come from `run.py token create`."}},
        },
    }


def document_bytes(settings: Settings, routes: Iterable[tuple[str, Any]]) -> bytes:
    """The document as answered: JSON ending with a newline, as every JSON answer."""
    return orjson.dumps(build(settings, routes), option=orjson.OPT_APPEND_NEWLINE)


class CachedDocument:
    """The document's bytes for one application, built on first use."""

    def __init__(self) -> None:
        self._bytes: bytes | None = None

    def render(self, settings: Settings, app: tornado.web.Application) -> bytes:
        if self._bytes is None:
            self._bytes = document_bytes(settings, routes_of(app))
        return self._bytes


def _operation(template: str, op: Operation, error_responses: dict[str, int]
               ) -> dict[str, Any]:
    """The operation object; adds the error responses it refers to to
    ``error_responses`` (name -> status)."""
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": PATH_PARAMETERS[name][0], "example": PATH_PARAMETERS[name][1]}
                  for name in re.findall(r"{(\w+)}", template)]
    statuses = _error_statuses(op, parameters)
    parameters += [PARAMETERS[key] for key in op.params]
    responses: dict[str, Any] = {}
    for status, (description, schema) in op.ok.items():
        content = schema if isinstance(schema, dict) else {JSON: {"schema": ref(schema)}}
        response: dict[str, Any] = {"description": description, "content": content}
        if op.role is not None:
            response["headers"] = {name: {"$ref": f"#/components/headers/{name}"}
                                   for name in _RATE_LIMIT_HEADERS}
        responses[str(status)] = response
    for status in statuses:
        name = f"Error{status}"
        error_responses[name] = status
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    role_text = (f"Needs a token with role `{op.role}` or above." if op.role
                 else "Public: no token.")
    operation: dict[str, Any] = {
        "operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
        "description": f"{op.description} {role_text}".strip(),
        "security": [{"bearer": [op.role]}] if op.role else [],
        "responses": dict(sorted(responses.items())),
    }
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {"$ref": f"#/components/requestBodies/{op.body}"}
    return operation


def _error_statuses(op: Operation, path_parameters: list[dict[str, Any]]) -> list[int]:
    statuses = set(op.errors)
    if op.role is not None:
        statuses |= {401, 429, 503}
        if op.role != READ:  # every token has at least `read`
            statuses.add(403)
    if op.body is not None:
        statuses |= {400, 408, 413, 415, 422, 503}
    if op.params:
        statuses.add(422)  # a value out of bounds
    if any(PARAMETERS[key]["in"] == "query" for key in op.params):
        statuses.add(400)  # a query that is not UTF-8
    if path_parameters:
        statuses.add(404)  # no such resource, or an id no route matches
    if any(p["schema"]["type"] == "string" for p in path_parameters):
        statuses.add(400)  # a path that is not UTF-8
    return sorted(statuses - set(op.ok))


def _error_response(status: int, codes: tuple[str, ...], settings: Settings
                    ) -> dict[str, Any]:
    """A status's one response: the ``Error`` body, its codes listed with their words."""
    missing = [code for code in codes if code not in ERROR_CODE_TEXT]
    if missing or status not in ERROR_TEXT:
        raise UndocumentedErrorCode(
            f"status {status}, codes {', '.join(missing or codes)}: every status needs an "
            "entry in server/handlers/catalogue.py ERROR_TEXT, every code one in "
            "ERROR_CODE_TEXT")
    description = ERROR_TEXT[status]
    if status == 429:
        description += f"  Limit: {settings.rate_limit_per_token:g} requests/s per token"
        description += " (0: off)." if not settings.rate_limit_per_token else "."
    description += "".join(f"  `{code}`: {ERROR_CODE_TEXT[code]}." for code in codes)
    response: dict[str, Any] = {
        "description": description,
        "x-error-codes": list(codes),
        "content": {JSON: {"schema": ref("Error")}}}
    headers: dict[str, Any] = {}
    if status == 401:
        headers["WWW-Authenticate"] = {"required": True, "schema": {"const": "Bearer"}}
    if status in (429, 503):
        headers["Retry-After"] = {"required": True, "description": "seconds",
                                  "schema": {"type": "integer", "minimum": 1}}
    if status == 409:  # with `idempotency_key_in_flight`
        headers["Retry-After"] = {"required": False, "description": "seconds",
                                  "schema": {"type": "integer", "minimum": 1}}
    if status == 429:
        headers.update(_rate_limit_headers(required=True))
    if headers:
        response["headers"] = headers
    return response


_RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def _rate_limit_headers(*, required: bool) -> dict[str, Any]:
    """The IETF draft's RateLimit-* fields: sent on every answer of a token route while
    RATE_LIMIT_PER_TOKEN is on (and on every 429)."""
    return {
        "RateLimit-Limit": {"required": required, "description": "the burst",
                            "schema": {"type": "integer", "minimum": 1}},
        "RateLimit-Remaining": {"required": required,
                                "description": "requests that would pass now",
                                "schema": {"type": "integer", "minimum": 0}},
        "RateLimit-Reset": {"required": required,
                            "description": "seconds until the whole burst is available",
                            "schema": {"type": "integer", "minimum": 0}},
    }
