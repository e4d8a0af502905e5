"""The OpenAPI 3.1 document (``GET /openapi.json``), built from the route table.

Nothing here is a hand-kept copy of a shape: request and response bodies,
parameter bounds and patterns come from ``server/schemas.py``, which the
validators read too, and limits that depend on the settings (``POINTS_MAX_BATCH``,
body sizes, the rate limit) from the ``Settings`` the document is built with.

``PATHS`` says, for each route pattern of ``server/app.py``, its OpenAPI path and
its operations.  ``build`` walks the *application's* route table, so a route
without an entry here is an error (``UndocumentedRoute``), never a silent gap,
and an entry whose route is not served is left out.  The statuses an operation
can answer are derived from what it does — a token (401, 403 above ``read``,
429, 503 while the token store is down), a body (400, 413, 415, 422), query or
header parameters (422), a path id (404) — plus those it lists itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import tornado.web

from server import schemas
from server.config import Settings
from server.metrics import CONTENT_TYPE as METRICS_MEDIA_TYPE
from server.schemas import ref

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"


class UndocumentedRoute(LookupError):
    """A route of the application has no entry in ``PATHS``."""


@dataclass(frozen=True)
class Operation:
    """One method of one path, as much as cannot be derived from the rest."""

    operation_id: str
    summary: str
    tag: str
    ok: dict[int, tuple[str, Any]]  # status -> (description, schema name or media map)
    role: str | None = None  # None: public, no token
    body: str | None = None  # a key of _REQUEST_BODIES
    params: tuple[str, ...] = ()  # query and header parameters: keys of _PARAMETERS
    errors: tuple[int, ...] = ()  # statuses beyond the derived ones
    error_schema: str = "Error"  # the shape of this operation's error object
    description: str = ""


@dataclass(frozen=True)
class Path:
    template: str
    operations: dict[str, Operation] = field(default_factory=dict)


_ERROR_CODES = {
    400: ("malformed_json", "malformed_csv", "invalid_encoding", "bad_request"),
    401: ("unauthorized",),
    403: ("forbidden",),
    404: ("not_found",),
    409: ("slug_taken",),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    422: ("invalid_fields", "data_rejected"),
    429: ("rate_limited",),
    503: ("unavailable", "queue_full", "unknown_references"),
}
_ERROR_TEXT = {
    400: "A body that does not parse, is not UTF-8 or is nested too deeply "
         "(`malformed_json`, `malformed_csv`, `invalid_encoding`), or a path or query "
         "that is not UTF-8 (`bad_request`).",
    401: "Missing, malformed, unknown or revoked token (`unauthorized`).",
    403: "The token's role is too low (`forbidden`).",
    404: "No such resource, or no route (`not_found`).",
    409: "A competition with this slug exists (`slug_taken`).",
    413: "Body over the limit: refused from its Content-Length before it is read, or as "
         "soon as a streamed body crosses it (`payload_too_large`).",
    415: "Wrong Content-Type (`unsupported_media_type`).",
    422: "Fields, query parameters or headers that fail validation, each named in "
         "`details` (`invalid_fields`); nothing was accepted.  `data_rejected`: the "
         "points passed validation but PostgreSQL refused them (a direct write while "
         "Redis is down).",
    429: "This token is over `RATE_LIMIT_PER_TOKEN` (`rate_limited`): retry after "
         "`Retry-After` seconds.",
    503: "A store cannot take the request now (`unavailable`), the queue is full "
         "(`queue_full`), or Redis is down and a point names an unknown competition or "
         "participant (`unknown_references`).  Retry after `Retry-After` seconds.",
}

# name -> (schema, example)
_PATH_PARAMETERS = {
    "competition_id": (schemas.ID64, 1),
    "participant_id": (schemas.ID64, 2),
    "point_id": (schemas.POINT_ID, "judge-7"),
}


def _int_query(q: schemas.IntQuery, description: str) -> dict[str, Any]:
    return {"name": q.name, "in": "query", "required": False, "description": description,
            "schema": {"type": "integer", "minimum": q.low, "maximum": q.high,
                       "default": q.default}}


_PARAMETERS: dict[str, dict[str, Any]] = {
    "competitions_limit": _int_query(schemas.COMPETITIONS_LIMIT, "page size"),
    "competitions_cursor": _int_query(schemas.COMPETITIONS_CURSOR,
                                      "the previous page's `next_cursor`"),
    "leaderboard_limit": _int_query(schemas.LEADERBOARD_LIMIT, "entries"),
    "leaderboard_offset": _int_query(schemas.LEADERBOARD_OFFSET, "entries to skip"),
    "dlq_limit": _int_query(schemas.DLQ_LIMIT, "entries"),
    "dlq_cursor": _int_query(schemas.DLQ_CURSOR,
                             "the previous page's `next_cursor` (an offset)"),
    "ack": {"name": "ack", "in": "query", "required": False,
            "description": "`committed`: wait (bounded by ACK_TIMEOUT_S) until the points "
                           "are committed in PostgreSQL",
            "schema": {"enum": list(schemas.ACK_MODES), "default": schemas.ACK_MODES[0]}},
    "idempotency_key": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Makes server-assigned ids deterministic (scoped to the token): "
                       "resending the same request with the same key never doubles a point.",
        "schema": {"type": "string", "pattern": f"^{schemas.IDEMPOTENCY_KEY_PATTERN}$"}},
}


def _request_bodies(settings: Settings) -> dict[str, dict[str, Any]]:
    json_limit = f"At most {settings.json_body_max_bytes} bytes."

    def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"required": True, "description": f"{description} {json_limit}".strip(),
                "content": {JSON: {"schema": schema}}}

    return {
        "points": json_body(
            {"anyOf": [ref("Point"), ref("PointBatch")]},
            f"One point, or `{{\"points\": [...]}}` of up to {settings.points_max_batch} "
            "(POINTS_MAX_BATCH).  All or nothing: any invalid point answers 422 and "
            "nothing is enqueued."),
        "bulk": {"required": True,
                 "description": "Streamed, never held whole; at most "
                                f"{settings.bulk_max_bytes} bytes (BULK_MAX_BYTES).  CSV: "
                                "a header row naming the columns ("
                                + ", ".join(schemas.POINT_FIELDS) + "), then one point a "
                                "line.  NDJSON: one point object a line.  Invalid lines are "
                                "rejected and reported; the others are accepted.",
                 "content": {
                     "text/csv": {"schema": {"type": "string"},
                                  "example": "id,competition_id,participant_id,value\n"
                                             "lap-1,1,2,8.5\nlap-2,1,3,7\n"},
                     "application/x-ndjson": {"schema": {"type": "string"},
                                              "example": _ndjson_example()}}},
        "competition": json_body(ref("CompetitionCreate"), ""),
        "participants": json_body(ref("ParticipantsCreate"),
                                  "Idempotent on `external_ref`: a repeat returns the "
                                  "existing participant unchanged."),
        "dlq_selection": json_body(ref("DeadLetterSelection"),
                                   "Given ids, or every entry."),
    }


def _ndjson_example() -> str:
    return "".join(orjson.dumps(point).decode() + "\n" for point in schemas.POINT["examples"])


_READ, _INGEST, _ADMIN = "read", "ingest", "admin"

PATHS: dict[str, Path] = {
    r"/health": Path("/health", {"get": Operation(
        "health", "Liveness, with no I/O", "operations",
        {200: ("Alive", "Health"), 503: ("Draining: shutting down", "Health")})}),
    r"/ready": Path("/ready", {"get": Operation(
        "ready", "Readiness: bounded store probes, cached ~1 s", "operations",
        {200: ("`ready`, `degraded` or `saturated`", "Ready"),
         503: ("`unavailable`: neither store answers, or shutting down", "Ready")})}),
    r"/metrics": Path("/metrics", {"get": Operation(
        "metrics", "Prometheus metrics", "operations",
        {200: ("Prometheus text exposition format",
               {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}})})}),
    r"/openapi\.json": Path("/openapi.json", {"get": Operation(
        "openapi", "This document", "operations",
        {200: ("OpenAPI 3.1", {JSON: {"schema": {"type": "object"}}})})}),
    r"/v1/competitions": Path("/v1/competitions", {
        "get": Operation("listCompetitions", "Competitions, oldest first (keyset pages)",
                         "competitions", {200: ("A page", "CompetitionPage")}, role=_READ,
                         params=("competitions_limit", "competitions_cursor")),
        "post": Operation("createCompetition", "Create a competition", "competitions",
                          {201: ("Created", "Competition")}, role=_INGEST,
                          body="competition", errors=(409,)),
    }),
    r"/v1/competitions/([0-9]+)": Path("/v1/competitions/{competition_id}", {
        "get": Operation("getCompetition", "One competition", "competitions",
                         {200: ("The competition", "Competition")}, role=_READ)}),
    r"/v1/competitions/([0-9]+)/participants": Path(
        "/v1/competitions/{competition_id}/participants", {"post": Operation(
            "createParticipants", "Register participants", "competitions",
            {201: ("Every participant of the request, in its order", "ParticipantsCreated")},
            role=_INGEST, body="participants")}),
    r"/v1/competitions/([0-9]+)/leaderboard": Path(
        "/v1/competitions/{competition_id}/leaderboard", {"get": Operation(
            "getLeaderboard", "Standings, highest total first (ties share a rank); "
                              "cached 1 s", "reads", {200: ("The leaderboard", "Leaderboard")},
            role=_READ, params=("leaderboard_limit", "leaderboard_offset"))}),
    r"/v1/competitions/([0-9]+)/stats": Path(
        "/v1/competitions/{competition_id}/stats", {"get": Operation(
            "getStats", "A competition's figures; cached 30 s", "reads",
            {200: ("The figures", "Stats")}, role=_READ)}),
    r"/v1/participants/([0-9]+)": Path("/v1/participants/{participant_id}", {"get": Operation(
        "getParticipant", "A participant with its total; cached 60 s", "reads",
        {200: ("The participant", "ParticipantStanding")}, role=_READ)}),
    r"/v1/points": Path("/v1/points", {"post": Operation(
        "postPoints", "Accept points", "points",
        {202: ("Accepted: in the queue (durable in Redis), or with `?ack=committed` not "
               "committed within ACK_TIMEOUT_S (`committed: false`; queued, not lost)",
               "PointsAccepted"),
         201: ("Committed in PostgreSQL (`?ack=committed`)", "PointsAccepted")},
        role=_INGEST, body="points", params=("ack", "idempotency_key"),
        error_schema="PointsError",
        description="Errors after validation carry `ids`, `accepted_ids` and `unknown_ids`: "
                    "resend the points not in `accepted_ids` with those ids, or the same "
                    "request with the same Idempotency-Key.")}),
    r"/v1/points/bulk": Path("/v1/points/bulk", {"post": Operation(
        "postPointsBulk", "Stream an upload of points (CSV or NDJSON)", "points",
        {202: ("Accepted lines enqueued; invalid lines counted, the first "
               f"{schemas.MAX_REPORTED} described", "BulkAccepted")},
        role=_INGEST, body="bulk", params=("idempotency_key",), error_schema="BulkError",
        description="Every error says how far the upload got (`accepted`, "
                    "`accepted_through_line`, `unknown_through_line`).")}),
    r"/v1/points/([^/]{1,64})": Path("/v1/points/{point_id}", {"get": Operation(
        "getPoint", "A committed point", "points", {200: ("The point", "StoredPoint")},
        role=_READ)}),
    r"/v1/admin/queue": Path("/v1/admin/queue", {"get": Operation(
        "getQueue", "The queue's state, throughput and workers", "admin",
        {200: ("The state", "QueueState")}, role=_ADMIN)}),
    r"/v1/admin/queue/pause": Path("/v1/admin/queue/pause", {"post": Operation(
        "pauseQueue", "Stop claiming in every process (ingest goes on); no body",
        "admin", {200: ("Paused", "Paused")}, role=_ADMIN)}),
    r"/v1/admin/queue/resume": Path("/v1/admin/queue/resume", {"post": Operation(
        "resumeQueue", "Restart claiming; no body", "admin", {200: ("Resumed", "Paused")},
        role=_ADMIN)}),
    r"/v1/admin/dlq": Path("/v1/admin/dlq", {
        "get": Operation("listDeadLetters", "Dead letters, oldest failure first", "admin",
                         {200: ("A page", "DeadLetterPage")}, role=_ADMIN,
                         params=("dlq_limit", "dlq_cursor")),
        "delete": Operation("purgeDeadLetters", "Delete dead letters", "admin",
                            {200: ("How many were deleted", "Purged")}, role=_ADMIN,
                            body="dlq_selection"),
    }),
    r"/v1/admin/dlq/requeue": Path("/v1/admin/dlq/requeue", {"post": Operation(
        "requeueDeadLetters", "Send dead letters back to the queue, attempts reset", "admin",
        {200: ("How many went back", "Requeued")}, role=_ADMIN, body="dlq_selection")}),
}


# --- building ---------------------------------------------------------------------


def routes_of(app: tornado.web.Application) -> list[tuple[str, type]]:
    """(pattern as written in the route table, handler class) for every route."""
    return [(rule.matcher.regex.pattern.removesuffix("$"), rule.target)
            for rule in app.wildcard_router.rules]


def build(settings: Settings, routes: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The document for the application whose route table is ``routes``."""
    paths: dict[str, Any] = {}
    error_responses: dict[str, Any] = {}
    for pattern, handler in routes:
        entry = PATHS.get(pattern)
        if entry is None:
            name = getattr(handler, "__name__", handler)
            raise UndocumentedRoute(f"route {pattern!r} ({name}) has no entry in "
                                    "server/openapi.py PATHS")
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
                 ("points", "competitions", "reads", "admin", "operations")],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {name: _error_response(status, shape, settings)
                          for name, (status, shape) in sorted(error_responses.items())},
            "headers": _rate_limit_headers(required=False),
            "requestBodies": _request_bodies(settings),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer <token>`.  Roles: `read` (every GET), "
                               "`ingest` (read + POST points, competitions, participants), "
                               "`admin` (everything); each operation names the least role "
                               "it needs.  Tokens come from `run.py token create`."}},
        },
    }


def document_bytes(settings: Settings, routes: Iterable[tuple[str, Any]]) -> bytes:
    return orjson.dumps(build(settings, routes))


class CachedDocument:
    """The document's bytes for one application, built on first use."""

    def __init__(self) -> None:
        self._bytes: bytes | None = None

    def render(self, settings: Settings, app: tornado.web.Application) -> bytes:
        if self._bytes is None:
            self._bytes = document_bytes(settings, routes_of(app))
        return self._bytes


def _operation(template: str, op: Operation, error_responses: dict[str, Any]
               ) -> dict[str, Any]:
    """The operation object; adds the error responses it refers to to
    ``error_responses`` (name -> (status, error shape))."""
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": _PATH_PARAMETERS[name][0], "example": _PATH_PARAMETERS[name][1]}
                  for name in re.findall(r"{(\w+)}", template)]
    statuses = _error_statuses(op, parameters)
    parameters += [_PARAMETERS[key] for key in op.params]
    responses: dict[str, Any] = {}
    for status, (description, schema) in op.ok.items():
        content = schema if isinstance(schema, dict) else {JSON: {"schema": ref(schema)}}
        response: dict[str, Any] = {"description": description, "content": content}
        if op.role is not None:
            response["headers"] = {name: {"$ref": f"#/components/headers/{name}"}
                                   for name in _RATE_LIMIT_HEADERS}
        responses[str(status)] = response
    for status in statuses:
        name = f"{op.error_schema}{status}"
        error_responses[name] = (status, op.error_schema)
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
        if op.role != _READ:  # every token has at least `read`
            statuses.add(403)
    if op.body is not None:
        statuses |= {400, 413, 415, 422}
    if op.params:
        statuses.add(422)  # a value out of bounds
    if any(_PARAMETERS[key]["in"] == "query" for key in op.params):
        statuses.add(400)  # a query that is not UTF-8
    if path_parameters:
        statuses.add(404)  # no such resource, or an id no route matches
    if any(p["schema"]["type"] == "string" for p in path_parameters):
        statuses.add(400)  # a path that is not UTF-8
    return sorted(statuses - set(op.ok))


def _error_response(status: int, shape: str, settings: Settings) -> dict[str, Any]:
    description = _ERROR_TEXT[status]
    if status == 429:
        description += f"  Limit: {settings.rate_limit_per_token:g} requests/s per token"
        description += " (0: off)." if not settings.rate_limit_per_token else "."
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": schemas.error_body(shape,
                                                        _ERROR_CODES[status])}}}
    headers: dict[str, Any] = {}
    if status == 401:
        headers["WWW-Authenticate"] = {"required": True, "schema": {"const": "Bearer"}}
    if status in (429, 503):
        headers["Retry-After"] = {"required": True, "description": "seconds",
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
