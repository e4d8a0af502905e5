"""The OpenAPI route catalogue: what each route of ``server/app.py`` does, in words.

``PATHS`` says, for each route pattern of the route table, its OpenAPI path
template and its operations: summary, tag, the least role, body, parameters,
the success answers and any error status beyond those the builder derives
(``handlers/openapi.py``).  Shapes are not written here: bodies and parameter
bounds come from ``server/schemas.py``, which the validators read too, and the
error codes from the handlers' error table (``handlers/errors.py``).

Adding a route is one ``PATHS`` entry; adding an error code is one
``ERROR_CODE_TEXT`` entry (what it means), beside its line in the error table.
Every error answer, whatever its operation or status, is the one ``Error``
schema: a generated client has one error type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from server import schemas
from server.config import Settings
from server.metrics import CONTENT_TYPE as METRICS_MEDIA_TYPE
from server.ops import bench_runs
from server.schemas import ref

JSON = "application/json"
# A benchmark run's chart: plain names only (``ops/bench_runs.py`` checks them again).
_NAME = bench_runs.NAME.pattern
RUN_CHART = rf"/v1/dashboard/runs/({_NAME})/({_NAME})/({_NAME})"


@dataclass(frozen=True)
class Operation:
    """One method of one path, as much as cannot be derived from the rest."""

    operation_id: str
    summary: str
    tag: str
    ok: dict[int, tuple[str, Any]]  # status -> (description, schema name or media map)
    role: str | None = None  # None: public, no token
    body: str | None = None  # a key of request_bodies(settings)
    params: tuple[str, ...] = ()  # query and header parameters: keys of PARAMETERS
    errors: tuple[int, ...] = ()  # statuses beyond the derived ones
    description: str = ""


@dataclass(frozen=True)
class PathItem:
    """One OpenAPI path: its template and its operations by method."""

    template: str
    operations: dict[str, Operation] = field(default_factory=dict)


# Each error status's answer in a phrase; the response then lists the codes the
# handlers' error table (ERROR_CODES) has for the status, each with its words from
# ERROR_CODE_TEXT (the document's build fails on a code without them).
ERROR_TEXT = {
    400: "The request cannot be read.",
    401: "No usable token.",
    403: "The token's role is too low.",
    404: "Not found.",
    408: "The body stopped arriving; the connection is closed.",
    409: "The request conflicts with what is stored.",
    413: "The body is over the limit.",
    415: "Wrong Content-Type.",
    422: "The request was read but cannot be taken as it is.",
    429: "Over the rate limit: retry after `Retry-After` seconds.",
    503: "Not now: retry after `Retry-After` seconds.",
}

ERROR_CODE_TEXT = {
    "malformed_json": "a JSON body that does not parse or is nested too deeply",
    "malformed_csv": "a CSV upload without a header row naming the point fields",
    "invalid_encoding": "a body that is not UTF-8",
    "bad_request": "a path or query that is not UTF-8",
    "unauthorized": "missing, malformed, unknown or revoked token",
    "forbidden": "the token's role is below the operation's",
    "not_found": "no such resource, or no route",
    "method_not_allowed": "the route has no such method",
    "slug_taken": "a competition with this slug exists",
    "id_conflict": "a point's id is taken in its competition by a point of other content "
                   "(participant, value or time); each such id is named",
    "idempotency_key_in_flight": "the first request with this `Idempotency-Key` is still "
                                 "being processed: retry after `Retry-After` seconds",
    "idempotency_key_reused": "the `Idempotency-Key` was used for a request with another "
                              "method, path, query, content type or body",
    "payload_too_large": "refused from its Content-Length before it is read, or as soon "
                         "as a streamed body crosses the limit",
    "unsupported_media_type": "a Content-Type the operation does not take",
    "invalid_fields": "fields, query parameters or headers that fail validation, each "
                      "named in `details`; nothing was accepted",
    "data_rejected": "the points passed validation but PostgreSQL refused them (a direct "
                     "write while Redis is down)",
    "rate_limited": "this token is over `RATE_LIMIT_PER_TOKEN`, or this client address "
                    "had more 401s than `RATE_LIMIT_401_PER_ADDRESS` allows",
    "unavailable": "a store cannot take the request now",
    "queue_full": "the queue is full",
    "unknown_references": "Redis is down and a point names an unknown competition or "
                          "participant",
    "body_idle": "no byte of the body for `HTTP_BODY_IDLE_S` seconds",
    "overloaded": "this server process holds as many request bodies as "
                  "`HTTP_BODIES_MAX_BYTES` allows",
}

# name -> (schema, example)
PATH_PARAMETERS = {
    "competition_id": (schemas.ID64, 1),
    "participant_id": (schemas.ID64, 2),
    "point_id": (schemas.POINT_ID, "judge-7"),
    "scenario": ({"type": "string", "pattern": f"^{_NAME}$"}, "smoke"),
    "run": ({"type": "string", "pattern": f"^{_NAME}$"}, "latest"),
    "chart": ({"type": "string", "pattern": f"^{_NAME}$",
               "description": "a `.png` file of the run's folder"}, "throughput.png"),
}


def _int_query(q: schemas.IntQuery, description: str) -> dict[str, Any]:
    return {"name": q.name, "in": "query", "required": False, "description": description,
            "schema": {"type": "integer", "minimum": q.low, "maximum": q.high,
                       "default": q.default}}


PARAMETERS: dict[str, dict[str, Any]] = {
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
        "description": "Binds the request to the key (scoped to the token, kept "
                       "IDEMPOTENCY_TTL_S): server-assigned ids are derived from it, so "
                       "resending the same request never doubles a point; a resend after "
                       "a success answers what the first did (`Idempotent-Replayed: "
                       "true`); another request under the key is 422 "
                       "`idempotency_key_reused`, one while the first runs 409 "
                       "`idempotency_key_in_flight`.",
        "schema": {"type": "string", "pattern": f"^{schemas.IDEMPOTENCY_KEY_PATTERN}$"}},
}


def request_bodies(settings: Settings) -> dict[str, dict[str, Any]]:
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
                 "description": _bulk_text(settings),
                 "content": {
                     "text/csv": {"schema": {"type": "string"},
                                  "example": "id,competition_id,participant_id,value\n"
                                             "lap-1,1,2,8.5\nlap-2,1,3,7\n"},
                     "application/x-ndjson": {"schema": {"type": "string"},
                                              "example": _ndjson_example()},
                     # For clients that send no text bodies: either format, as bytes.
                     "application/octet-stream": {
                         "schema": {"type": "string", "format": "binary"}}}},
        "competition": json_body(ref("CompetitionCreate"), ""),
        "participants": json_body(ref("ParticipantsCreate"),
                                  "Idempotent on `external_ref`: a repeat returns the "
                                  "existing participant unchanged."),
        "dlq_selection": json_body(ref("DeadLetterSelection"),
                                   "Given ids, or every entry."),
    }


def _bulk_text(settings: Settings) -> str:
    optional = [name for name in schemas.POINT_FIELDS if name not in schemas.POINT_REQUIRED]
    return (f"Streamed, never held whole; at most {settings.bulk_max_bytes} bytes "
            "(BULK_MAX_BYTES).  CSV: a header row naming its columns, each once, in any "
            f"order ({', '.join(schemas.POINT_REQUIRED)}; optional: {', '.join(optional)}), "
            "then one point a line.  NDJSON: one point object a line.  Invalid lines are "
            "rejected and reported; the others are accepted.  `application/octet-stream`: "
            "NDJSON when its first line starts with `{`, CSV otherwise.")


def _ndjson_example() -> str:
    return "".join(orjson.dumps(point).decode() + "\n" for point in schemas.POINT["examples"])


READ, INGEST, ADMIN = "read", "ingest", "admin"

PATHS: dict[str, PathItem] = {
    r"/health": PathItem("/health", {"get": Operation(
        "health", "Liveness, with no I/O", "operations",
        {200: ("Alive", "Health"), 503: ("Draining: shutting down", "Health")})}),
    r"/ready": PathItem("/ready", {"get": Operation(
        "ready", "Readiness: bounded store probes, cached ~1 s", "operations",
        {200: ("`ready`, `degraded` or `saturated`", "Ready"),
         503: ("`unavailable`: neither store answers, or shutting down", "Ready")})}),
    r"/metrics": PathItem("/metrics", {"get": Operation(
        "metrics", "Prometheus metrics", "operations",
        {200: ("Prometheus text exposition format",
               {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}})})}),
    r"/openapi\.json": PathItem("/openapi.json", {"get": Operation(
        "openapi", "This document", "operations",
        {200: ("OpenAPI 3.1", {JSON: {"schema": {"type": "object"}}})})}),
    r"/v1/competitions": PathItem("/v1/competitions", {
        "get": Operation("listCompetitions", "Competitions, oldest first (keyset pages)",
                         "competitions", {200: ("A page", "CompetitionPage")}, role=READ,
                         params=("competitions_limit", "competitions_cursor")),
        "post": Operation("createCompetition", "Create a competition", "competitions",
                          {201: ("Created", "Competition")}, role=INGEST,
                          body="competition", errors=(409,)),
    }),
    r"/v1/competitions/([0-9]+)": PathItem("/v1/competitions/{competition_id}", {
        "get": Operation("getCompetition", "One competition", "competitions",
                         {200: ("The competition", "Competition")}, role=READ)}),
    r"/v1/competitions/([0-9]+)/participants": PathItem(
        "/v1/competitions/{competition_id}/participants", {"post": Operation(
            "createParticipants", "Register participants", "competitions",
            {201: ("Every participant of the request, in its order", "ParticipantsCreated")},
            role=INGEST, body="participants")}),
    r"/v1/competitions/([0-9]+)/leaderboard": PathItem(
        "/v1/competitions/{competition_id}/leaderboard", {"get": Operation(
            "getLeaderboard", "Standings, highest total first (ties share a rank); "
                              "cached 1 s", "reads", {200: ("The leaderboard", "Leaderboard")},
            role=READ, params=("leaderboard_limit", "leaderboard_offset"))}),
    r"/v1/competitions/([0-9]+)/stats": PathItem(
        "/v1/competitions/{competition_id}/stats", {"get": Operation(
            "getStats", "A competition's figures; cached 30 s", "reads",
            {200: ("The figures", "Stats")}, role=READ)}),
    r"/v1/competitions/([0-9]+)/points/([^/]{1,64})": PathItem(
        "/v1/competitions/{competition_id}/points/{point_id}", {"get": Operation(
            "getPoint", "A committed point, by its id in its competition (point ids are "
                        "scoped per competition)", "points",
            {200: ("The point", "StoredPoint")}, role=READ)}),
    r"/v1/participants/([0-9]+)": PathItem("/v1/participants/{participant_id}", {"get": Operation(
        "getParticipant", "A participant with its total; cached 60 s", "reads",
        {200: ("The participant", "ParticipantStanding")}, role=READ)}),
    r"/v1/points": PathItem("/v1/points", {"post": Operation(
        "postPoints", "Accept points", "points",
        {202: ("Accepted: in the queue (durable in Redis), or with `?ack=committed` not "
               "committed within ACK_TIMEOUT_S (`committed: false`; queued, not lost)",
               "PointsAccepted"),
         201: ("Committed in PostgreSQL (`?ack=committed`)", "PointsAccepted")},
        role=INGEST, body="points", params=("ack", "idempotency_key"), errors=(409,),
        description="Errors after validation carry `ids`, `accepted_ids` and `unknown_ids`: "
                    "resend the points not in `accepted_ids` with those ids, or the same "
                    "request with the same Idempotency-Key.")}),
    r"/v1/points/bulk": PathItem("/v1/points/bulk", {"post": Operation(
        "postPointsBulk", "Stream an upload of points (CSV or NDJSON)", "points",
        {202: ("Accepted lines enqueued; invalid lines counted, the first "
               f"{schemas.MAX_REPORTED} described", "BulkAccepted")},
        role=INGEST, body="bulk", params=("idempotency_key",), errors=(409,),
        description="Every error says how far the upload got (`accepted`, "
                    "`accepted_through_line`, `unknown_through_line`).")}),
    r"/v1/admin/queue": PathItem("/v1/admin/queue", {"get": Operation(
        "getQueue", "The queue's state, throughput and workers", "admin",
        {200: ("The state", "QueueState")}, role=ADMIN)}),
    r"/v1/admin/queue/pause": PathItem("/v1/admin/queue/pause", {"post": Operation(
        "pauseQueue", "Stop claiming in every process (ingest goes on); no body",
        "admin", {200: ("Paused", "Paused")}, role=ADMIN)}),
    r"/v1/admin/queue/resume": PathItem("/v1/admin/queue/resume", {"post": Operation(
        "resumeQueue", "Restart claiming; no body", "admin", {200: ("Resumed", "Paused")},
        role=ADMIN)}),
    r"/v1/admin/dlq": PathItem("/v1/admin/dlq", {
        "get": Operation("listDeadLetters", "Dead letters, oldest failure first", "admin",
                         {200: ("A page", "DeadLetterPage")}, role=ADMIN,
                         params=("dlq_limit", "dlq_cursor")),
        "delete": Operation("purgeDeadLetters", "Delete dead letters", "admin",
                            {200: ("How many were deleted", "Purged")}, role=ADMIN,
                            body="dlq_selection"),
    }),
    r"/dashboard": PathItem("/dashboard", {"get": Operation(
        "dashboard", "The live dashboard (a web page; it signs in with a token)", "dashboard",
        {200: ("The page", {"text/html": {"schema": {"type": "string"}}})})}),
    r"/dashboard/app\.js": PathItem("/dashboard/app.js", {"get": Operation(
        "dashboardScript", "The dashboard's script", "dashboard",
        {200: ("The file", {"text/javascript": {"schema": {"type": "string"}}})})}),
    r"/dashboard/app\.css": PathItem("/dashboard/app.css", {"get": Operation(
        "dashboardStyle", "The dashboard's style sheet", "dashboard",
        {200: ("The file", {"text/css": {"schema": {"type": "string"}}})})}),
    r"/v1/dashboard/summary": PathItem("/v1/dashboard/summary", {"get": Operation(
        "getDashboardSummary", "Everything the dashboard shows in one answer: queue, "
                               "workers, stores, competitions, benchmark runs; built at most "
                               "once a second per process", "dashboard",
        {200: ("The summary", "DashboardSummary")}, role=READ)}),
    RUN_CHART: PathItem("/v1/dashboard/runs/{scenario}/{run}/{chart}", {"get": Operation(
        "getRunChart", "A chart of a benchmark run under RESULTS_DIR", "dashboard",
        {200: ("The chart", {"image/png": {"schema": {"type": "string",
                                                     "format": "binary"}}})},
        role=READ, errors=(404,))}),
    r"/v1/admin/dlq/requeue": PathItem("/v1/admin/dlq/requeue", {"post": Operation(
        "requeueDeadLetters", "Send dead letters back to the queue, attempts reset", "admin",
        {200: ("How many went back", "Requeued")}, role=ADMIN, body="dlq_selection")}),
}


