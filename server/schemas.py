"""The request and response shapes, once: the limits the validators enforce and the
JSON Schemas ``/openapi.json`` publishes are built from the same constants.

The validators (``server/points.py``, the handlers) do not run these schemas —
the per-point check is hand-written for speed — but they read every field name,
bound and pattern from here, so the document cannot drift from what is enforced.
Limits that depend on the settings (``POINTS_MAX_BATCH``, body sizes) are
parameters of the functions that build their schemas.

Patterns are written once as strings that Python's ``re`` and JSON Schema's
ECMA-262 regular expressions read alike; Python matches them with ``fullmatch``,
JSON Schema anchors them with ``^…$``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

INT64_MAX = 2**63 - 1
# JSON Schema counts 2.0 as the integer 2.  A JSON number is read as a float when
# written with a fraction or an exponent, and a float names one integer exactly up
# to 2^53 only: such a number is taken as an integer up to there, refused beyond.
WHOLE_FLOAT_MAX = 2**53

# --- a point -----------------------------------------------------------------

POINT_ID_MAX_CHARS = 64
# Scores are bounded so that no sum of them can overflow a standing's float8
# total (which PostgreSQL would refuse long after the points were accepted).
POINT_VALUE_MAX_ABS = 1e15
RECORDED_AT_MAX_FUTURE_S = 5 * 60
# Years every client and driver can represent (psycopg2 cannot read back a year
# past 9999 or before 1 once converted to UTC): [earliest, latest).
TIMESTAMP_YEARS = (1900, 2200)
# RFC 3339 with an explicit offset (a space for the 'T' is allowed, as RFC 3339 notes),
# its fields in range, years within TIMESTAMP_YEARS as written, and a real day of the
# calendar (no 30 February; 29 February of leap years only): exactly what the parser
# takes, so a document reader generates no date the server refuses.
_YEARS = r"(19[0-9]{2}|2[01][0-9]{2})"  # TIMESTAMP_YEARS (tests/test_openapi.py checks)
# The leap years among them: multiples of 4, but 1900 and 2100 (2000 is one).
_LEAP_YEARS = r"(19(0[48]|[2468][048]|[13579][26])|20([02468][048]|[13579][26])" \
              r"|21(0[48]|[2468][048]|[13579][26]))"
_DAYS = (r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"  # 31 days
         r"|(0[469]|11)-(0[1-9]|[12][0-9]|30)"  # 30 days
         r"|02-(0[1-9]|1[0-9]|2[0-8]))")  # February, 29 aside
RFC3339_PATTERN = (f"({_YEARS}-{_DAYS}|{_LEAP_YEARS}-02-29)"
                   r"[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
                   r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
CONTROL_CHARS = r"\x00-\x1f\x7f"  # the body of a character class: no id may hold these
# Whitespace as Python's str.isspace has it, spelled out so that Python's re and
# ECMA-262 read the class alike (their \s differ).
BLANK_CHARS = (r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f"
               r"\u205f\u3000")
# A name or reference: not blank (one character that is not whitespace), and no NUL
# (PostgreSQL's text cannot hold one).  Its length is bounded apart (maxLength).
TEXT_PATTERN = rf"[^\x00]*[^\x00{BLANK_CHARS}][^\x00]*"
IDEMPOTENCY_KEY_PATTERN = r"[\x21-\x7e]{1,200}"

# --- competitions and participants ------------------------------------------

SLUG_MAX_CHARS = 100
SLUG_PATTERN = r"[a-z0-9][a-z0-9_-]{0,99}"
NAME_MAX_CHARS = 200
EXTERNAL_REF_MAX_CHARS = 200
DISPLAY_NAME_MAX_CHARS = 200
PARTICIPANTS_MAX_PER_REQUEST = 10_000

# --- the dead-letter queue ----------------------------------------------------

DLQ_IDS_MAX = 10_000
DLQ_KEY_MAX_CHARS = 128  # "<competition>:<point id>[:<digest>]", or "chunk:<chunk id>"


class IntQuery(NamedTuple):
    """An integer query parameter: name, default when absent, inclusive bounds."""

    name: str
    default: int
    low: int
    high: int


COMPETITIONS_LIMIT = IntQuery("limit", 50, 1, 500)
COMPETITIONS_CURSOR = IntQuery("cursor", 0, 0, INT64_MAX)
LEADERBOARD_LIMIT = IntQuery("limit", 100, 1, 1000)
LEADERBOARD_OFFSET = IntQuery("offset", 0, 0, 10_000_000)
DLQ_LIMIT = IntQuery("limit", 100, 1, 1000)
DLQ_CURSOR = IntQuery("cursor", 0, 0, 2**31)
ACK_MODES = ("queued", "committed")
MAX_REPORTED = 100  # problems named in one error (and bulk errors listed in a 202)


# --- JSON Schema building blocks ---------------------------------------------


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: tuple[str, ...] | list[str] = (), *,
         closed: bool = True, description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


ID64 = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
ID64_IN = {**ID64, "description": f"written as an integer; `7.0` or `7e0` is taken up to "
                                  f"2^53 ({WHOLE_FLOAT_MAX}), beyond which no such "
                                  "spelling names one integer exactly"}
COUNT = {"type": "integer", "minimum": 0}
TIMESTAMP = {"type": "string", "format": "date-time"}
TIMESTAMP_IN = {"type": "string", "format": "date-time", "pattern": f"^{RFC3339_PATTERN}$",
                "description": f"RFC 3339 with an offset, years {TIMESTAMP_YEARS[0]} to "
                               f"{TIMESTAMP_YEARS[1] - 1}"}
POINT_ID = {"type": "string", "minLength": 1, "maxLength": POINT_ID_MAX_CHARS,
            "pattern": f"^[^{CONTROL_CHARS}]*$"}


def _text(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_chars,
            "pattern": f"^{TEXT_PATTERN}$", "description": "not blank, no NUL characters"}


# --- request bodies -----------------------------------------------------------

POINT = _obj({
    "id": _nullable({**POINT_ID, "description": "the client's idempotency key; the "
                                                "server assigns a sortable id when absent"}),
    "competition_id": ID64_IN,
    "participant_id": ID64_IN,
    "value": {"type": "number", "minimum": -POINT_VALUE_MAX_ABS,
              "maximum": POINT_VALUE_MAX_ABS, "description": "finite"},
    "recorded_at": _nullable({**TIMESTAMP_IN, "description":
                              TIMESTAMP_IN["description"] + f"; at most "
                              f"{RECORDED_AT_MAX_FUTURE_S // 60} minutes in the future "
                              "by the server's clock (which JSON Schema cannot state); "
                              "default: the receive time"}),
}, ("competition_id", "participant_id", "value"))
POINT["examples"] = [{"id": "judge-7", "competition_id": 1, "participant_id": 2, "value": 8.5,
                      "recorded_at": "2026-01-31T12:00:00Z"}]
POINT_FIELDS = tuple(POINT["properties"])
POINT_REQUIRED = tuple(POINT["required"])


def point_batch(max_points: int) -> dict[str, Any]:
    """``{"points": [...]}`` within ``POINTS_MAX_BATCH``."""
    batch = _obj({"points": {"type": "array", "items": ref("Point"), "minItems": 1,
                             "maxItems": max_points}}, ("points",))
    batch["examples"] = [{"points": POINT["examples"]}]
    return batch


COMPETITION_CREATE = _obj({
    "slug": {"type": "string", "pattern": f"^{SLUG_PATTERN}$", "maxLength": SLUG_MAX_CHARS},
    "name": _text(NAME_MAX_CHARS),
    "starts_at": _nullable(TIMESTAMP_IN),
    "ends_at": _nullable({**TIMESTAMP_IN, "description": "not before `starts_at` (a rule "
                                                         "between two fields, which JSON "
                                                         "Schema cannot state)"}),
}, ("slug", "name"))
COMPETITION_CREATE["examples"] = [{"slug": "cup", "name": "The Cup",
                                   "starts_at": "2026-01-31T09:00:00Z"}]
COMPETITION_FIELDS = tuple(COMPETITION_CREATE["properties"])

PARTICIPANT_CREATE = _obj({"external_ref": _text(EXTERNAL_REF_MAX_CHARS),
                           "display_name": _text(DISPLAY_NAME_MAX_CHARS)},
                          ("external_ref", "display_name"))
PARTICIPANT_FIELDS = tuple(PARTICIPANT_CREATE["properties"])
PARTICIPANTS_CREATE = _obj({"participants": {
    "type": "array", "items": ref("ParticipantCreate"), "minItems": 1,
    "maxItems": PARTICIPANTS_MAX_PER_REQUEST}}, ("participants",))
PARTICIPANTS_CREATE["examples"] = [{"participants": [
    {"external_ref": "p1", "display_name": "Player 1"}]}]

DLQ_SELECTION = {"oneOf": [
    _obj({"ids": {"type": "array", "minItems": 1, "maxItems": DLQ_IDS_MAX,
                  "items": {"type": "string", "minLength": 1,
                            "maxLength": DLQ_KEY_MAX_CHARS},
                  "description": "dead letters' `key`s"}}, ("ids",)),
    _obj({"all": {"const": True}}, ("all",)),
], "examples": [{"ids": ["1:judge-7"]}]}

# --- errors ---------------------------------------------------------------------

# Every error answer is one type, ``Error`` (``{"error": ErrorObject}``), so that a
# generated client has one error model: the members only some operations send
# (POINTS_ERROR's, BULK_ERROR's) are optional members of ErrorObject, each saying
# who sends it.  The codes each status carries are listed by its response.
ERROR_DETAIL = _obj({"message": {"type": "string"}, "index": COUNT, "line": COUNT,
                     "field": {"type": "string"}}, ("message",))
_ERROR_MEMBERS = {"code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                           "description": "one of the codes its status lists "
                                          "(`x-error-codes` of the response)"},
                  "message": {"type": "string"},
                  "details": {"type": "array", "items": ref("ErrorDetail")}}
ERROR = _obj(_ERROR_MEMBERS, ("code", "message", "details"))
# POST /v1/points, once its points are validated: what was (or may have been) taken.
POINTS_ERROR = _obj({
    **_ERROR_MEMBERS,
    "ids": {"type": "array", "items": {"type": "string"},
            "description": "every id of the request, server-assigned ones included"},
    "accepted_ids": {"type": "array", "items": {"type": "string"},
                     "description": "surely accepted"},
    "unknown_ids": {"type": "array", "items": {"type": "string"},
                    "description": "may have been accepted (a store's reply was lost)"},
}, ("code", "message", "details"))
# POST /v1/points/bulk: every error says how far the upload got.
BULK_ERROR = _obj({
    **_ERROR_MEMBERS,
    "accepted": COUNT,
    "rejected": COUNT,
    "errors": {"type": "array", "items": ref("LineError"), "maxItems": MAX_REPORTED},
    "accepted_through_line": {**COUNT, "description": "every line up to here was handled"},
    "unknown_through_line": {**COUNT, "description": "lines up to here may have been "
                                                     "accepted"},
}, ("code", "message", "details", "accepted", "rejected", "errors", "accepted_through_line"))
LINE_ERROR = _obj({"line": COUNT, "message": {"type": "string"}}, ("line", "message"))


def _error_object(base: dict[str, Any], own: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``base`` with the members of each operation's own error shape (``own``:
    operation -> shape) added as optional ones that name their operation."""
    properties = dict(base["properties"])
    for operation, shape in own.items():
        for name, member in shape["properties"].items():
            if name not in properties:
                text = f"{operation} errors only"
                if "description" in member:
                    text += ": " + member["description"]
                properties[name] = {**member, "description": text}
    return _obj(properties, base["required"])


ERROR_OBJECT = _error_object(ERROR, {"POST /v1/points": POINTS_ERROR,
                                     "POST /v1/points/bulk": BULK_ERROR})
ERROR_BODY = _obj({"error": ref("ErrorObject")}, ("error",),
                  description="Every error answer of every operation")


# --- response bodies -----------------------------------------------------------

COMPETITION = _obj({"id": ID64, "slug": {"type": "string"}, "name": {"type": "string"},
                    "starts_at": _nullable(TIMESTAMP), "ends_at": _nullable(TIMESTAMP),
                    "created_at": TIMESTAMP},
                   ("id", "slug", "name", "starts_at", "ends_at", "created_at"))
COMPETITION_PAGE = _obj({
    "items": {"type": "array", "items": ref("Competition")},
    "next_cursor": {"type": ["string", "null"], "description": "the `cursor` of the next "
                                                               "page; null on the last"},
}, ("items", "next_cursor"))
_PARTICIPANT_MEMBERS = {"id": ID64, "competition_id": ID64,
                        "external_ref": {"type": "string"}, "display_name": {"type": "string"},
                        "created_at": TIMESTAMP}
PARTICIPANT = _obj(_PARTICIPANT_MEMBERS, tuple(_PARTICIPANT_MEMBERS))
PARTICIPANTS_CREATED = _obj({"participants": {"type": "array", "items": ref("Participant")}},
                            ("participants",))
PARTICIPANT_STANDING = _obj({**_PARTICIPANT_MEMBERS, "total": {"type": "number"},
                             "points": COUNT}, (*_PARTICIPANT_MEMBERS, "total", "points"))
POINTS_ACCEPTED = _obj({
    "accepted": {"type": "integer", "minimum": 1},
    "ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "committed": {"type": "boolean", "description": "with ?ack=committed, or when the "
                                                    "points were written to PostgreSQL "
                                                    "directly"},
}, ("accepted", "ids"))
BULK_ACCEPTED = _obj({"accepted": COUNT, "rejected": COUNT,
                      "errors": {"type": "array", "items": ref("LineError"),
                                 "maxItems": MAX_REPORTED}},
                     ("accepted", "rejected", "errors"))
_STORED_POINT_MEMBERS = {"id": POINT_ID, "competition_id": ID64, "participant_id": ID64,
                         "value": {"type": "number"}, "recorded_at": TIMESTAMP,
                         "received_at": TIMESTAMP}
STORED_POINT = _obj({**_STORED_POINT_MEMBERS, "committed_at": TIMESTAMP},
                    (*_STORED_POINT_MEMBERS, "committed_at"))
LEADERBOARD = _obj({
    "competition_id": ID64,
    "as_of": TIMESTAMP,
    "entries": {"type": "array", "items": _obj({
        "rank": {"type": "integer", "minimum": 1}, "participant_id": ID64,
        "display_name": {"type": "string"}, "total": {"type": "number"}, "points": COUNT},
        ("rank", "participant_id", "display_name", "total", "points"))},
}, ("competition_id", "as_of", "entries"))
STATS = _obj({"competition_id": ID64, "points": COUNT, "participants": COUNT,
              "total_value": {"type": "number"}, "last_point_at": _nullable(TIMESTAMP),
              "points_per_minute": {**COUNT, "description": "recorded in the last minute"},
              "as_of": TIMESTAMP},
             ("competition_id", "points", "participants", "total_value", "last_point_at",
              "points_per_minute", "as_of"))
# Admin and probe views are diagnostics: their core members are fixed, more may come.
QUEUE_STATE = _obj({
    "depth": COUNT, "inflight": COUNT, "retry_scheduled": COUNT, "dead": COUNT,
    "oldest_age_s": {"type": "number", "minimum": 0}, "paused": {"type": "boolean"},
    "path": {"enum": ["naive", "pipelined"]},
    "throughput": _obj({"committed_per_s_10s": {"type": "number"}, "enqueued": COUNT,
                        "committed": COUNT, "retried": COUNT, "reclaimed": COUNT,
                        "dead_lettered": COUNT,
                        "dlq_dropped": {**COUNT, "description": "dead letters the DLQ's "
                                                                "bound removed"}},
                       ("committed_per_s_10s",), closed=False),
    "workers": {"type": "array", "items": _obj({
        "name": {"type": "string"}, "running": {"type": "boolean"}, "restarts": COUNT,
        "down_s": {"type": ["number", "null"]}, "last_error": {"type": ["string", "null"]},
        "busy_s": {"type": ["number", "null"]}}, ("name", "running"), closed=False)},
    "worker_counters": {"type": "object", "additionalProperties": COUNT},
}, ("depth", "inflight", "retry_scheduled", "dead", "oldest_age_s", "paused", "path",
    "throughput", "workers"), closed=False)
DLQ_POINT = _obj(_STORED_POINT_MEMBERS, tuple(_STORED_POINT_MEMBERS))
DEAD_LETTER = _obj({
    "key": {"type": "string", "description": "what requeue and purge select it by: "
                                            "`<competition_id>:<point id>` (an id_conflict "
                                            "adds `:<content digest>`), or `chunk:<chunk id>`"},
    "point": {"oneOf": [ref("DeadPoint"), {"type": "null"}],
              "description": "null for a chunk that could not be split into points"},
    "reason": {"type": "string", "description": "unknown_participant, unknown_competition, "
                                                "data_error, invalid_value, id_conflict, "
                                                "unexpected_error, undecodable, "
                                                "crashed_holder"},
    "attempts": COUNT, "first_failed_at": TIMESTAMP, "last_failed_at": TIMESTAMP,
    "last_error": {"type": "string"},
    "chunk_id": {"type": "string"}, "payload_base64": {"type": "string"},
}, ("point", "reason"), closed=False)
DLQ_PAGE = _obj({"items": {"type": "array", "items": ref("DeadLetter")},
                 "next_cursor": {"type": ["string", "null"]}}, ("items", "next_cursor"))
PAUSED = _obj({"paused": {"type": "boolean"}}, ("paused",))
REQUEUED = _obj({"requeued": COUNT, "refused_queue_full": COUNT, "not_requeueable": COUNT},
               ("requeued",))
PURGED = _obj({"purged": COUNT}, ("purged",))
HEALTH = _obj({"status": {"enum": ["ok", "draining"]}}, ("status",))
_CHECK = _obj({"ok": {"type": "boolean"}, "latency_ms": {"type": "number"},
               "error": {"type": "string"}}, ("ok", "latency_ms"), closed=False)
READY = _obj({
    "status": {"enum": ["ready", "degraded", "saturated", "unavailable"]},
    "failed": {"type": "array", "items": {"enum": ["postgres", "redis", "queue", "workers",
                                                   "replica"]},
               "description": "the checks that failed, by name"},
    "checks": _obj({"postgres": _CHECK, "redis": _CHECK, "queue": _CHECK,
                    "workers": _obj({"ok": {"type": "boolean"}}, ("ok",), closed=False),
                    "replica": _obj({
                        "ok": {"type": "boolean"}, "up": {"type": "boolean"},
                        "serving_reads": {"type": "boolean"},
                        "lag_s": {"type": ["number", "null"]}, "max_lag_s": {"type": "number"},
                        "error": {"type": "string"}},
                        ("ok", "up", "serving_reads", "lag_s", "max_lag_s"), closed=False,
                        description="with DATABASE_READ_URL only: the read replica")},
                   ("postgres", "redis", "queue", "workers"), closed=False,
                   description="each check's details: with an admin token only"),
}, ("status", "failed"))

_NUMBER = {"type": "number"}
DASHBOARD_SUMMARY = _obj({
    "as_of": {**TIMESTAMP, "description": "when this process built the summary (cached "
                                          "1 s, shared by every viewer)"},
    "viewer": _obj({"role": {"enum": ["read", "ingest", "admin"]}}, ("role",)),
    "status": READY["properties"]["status"],
    "unavailable": {"type": "array", "items": {"enum": ["queue", "competitions"]},
                    "description": "parts that could not be read now (their store is "
                                   "down): each is null"},
    "queue": {"oneOf": [_obj({
        "depth": COUNT, "inflight": COUNT, "retry_scheduled": COUNT, "dead": COUNT,
        "oldest_age_s": {"type": "number", "minimum": 0}, "paused": {"type": "boolean"},
        "path": {"enum": ["naive", "pipelined"]}, "committed_per_s_10s": _NUMBER,
        "totals_at": {"type": "number", "description": "Redis's clock (Unix seconds) "
                                                       "when `totals` were read"},
        "totals": {"type": "object", "additionalProperties": COUNT,
                   "description": "counters since the queue began, over every process: "
                                  "a rate is the change between two summaries"}},
        ("depth", "inflight", "retry_scheduled", "dead", "oldest_age_s", "paused", "path",
         "committed_per_s_10s", "totals", "totals_at")), {"type": "null"}]},
    "workers": _obj({
        "tasks": QUEUE_STATE["properties"]["workers"],
        "restarts": COUNT,
        "breakers": {"type": "object", "additionalProperties": _obj(
            {"state": {"enum": ["closed", "open", "half_open"]}}, ("state",), closed=False)},
        "counters": {"type": "object", "additionalProperties": COUNT}},
        ("tasks", "restarts", "breakers", "counters")),
    "stores": _obj({"postgres": _CHECK, "redis": _CHECK,
                    "replica": READY["properties"]["checks"]["properties"]["replica"]},
                   ("postgres", "redis")),
    "pools": {"type": "array", "description": "this process's connection pools",
              "items": _obj({"store": {"enum": ["postgres", "redis"]},
                             "pool": {"type": "string"}, "in_use": COUNT, "idle": COUNT,
                             "waiting": COUNT},
                            ("store", "pool", "in_use", "idle", "waiting"))},
    "loop": _obj({"lag_max_ms_last_s": _NUMBER, "lag_max_ms_60s": _NUMBER},
                 ("lag_max_ms_last_s", "lag_max_ms_60s")),
    "competitions": {"oneOf": [{"type": "array", "items": ref("Competition"),
                                "description": "the newest first, at most 100"},
                               {"type": "null"}]},
    "runs": {"type": "array", "description": "benchmark runs under RESULTS_DIR, newest "
                                             "first, at most 50",
             "items": _obj({
                 "scenario": {"type": "string"}, "run": {"type": "string"},
                 "created": {"type": "string"}, "scale": {"type": ["number", "null"]},
                 "paths": {"type": "array", "items": {"type": "string"}},
                 "headline": {"type": "object", "additionalProperties": {
                     "type": "object", "additionalProperties": _NUMBER}},
                 "thresholds": _obj({"passed": COUNT, "failed": COUNT},
                                    ("passed", "failed")),
                 "charts": {"type": "array", "items": {"type": "string"}}},
                 ("scenario", "run", "created", "scale", "paths", "headline", "thresholds",
                  "charts"))},
}, ("as_of", "viewer", "status", "unavailable", "queue", "workers", "stores", "pools",
    "loop", "competitions", "runs"), description="Error texts (`error`, `last_error`) are shown "
                                         "to an admin token only.")

# Every named schema of the document, as ``ref(name)`` points at it.
COMPONENTS: dict[str, dict[str, Any]] = {
    "Point": POINT,
    "CompetitionCreate": COMPETITION_CREATE,
    "ParticipantCreate": PARTICIPANT_CREATE,
    "ParticipantsCreate": PARTICIPANTS_CREATE,
    "DeadLetterSelection": DLQ_SELECTION,
    "Error": ERROR_BODY,
    "ErrorObject": ERROR_OBJECT,
    "ErrorDetail": ERROR_DETAIL,
    "LineError": LINE_ERROR,
    "Competition": COMPETITION,
    "CompetitionPage": COMPETITION_PAGE,
    "Participant": PARTICIPANT,
    "ParticipantsCreated": PARTICIPANTS_CREATED,
    "ParticipantStanding": PARTICIPANT_STANDING,
    "PointsAccepted": POINTS_ACCEPTED,
    "BulkAccepted": BULK_ACCEPTED,
    "StoredPoint": STORED_POINT,
    "Leaderboard": LEADERBOARD,
    "Stats": STATS,
    "QueueState": QUEUE_STATE,
    "DeadPoint": DLQ_POINT,
    "DeadLetter": DEAD_LETTER,
    "DeadLetterPage": DLQ_PAGE,
    "Paused": PAUSED,
    "Requeued": REQUEUED,
    "Purged": PURGED,
    "Health": HEALTH,
    "Ready": READY,
    "DashboardSummary": DASHBOARD_SUMMARY,
}
