"""What a point is: validation of client input into the internal tuple, and its ids.

Internally a point is a plain tuple (a list, once it has been through the
queue's JSON), its fields read by the position constants below::

    (id, competition_id, participant_id, value, recorded_us, received_us)
     ID  COMPETITION_ID  PARTICIPANT_ID  VALUE  RECORDED_US  RECEIVED_US

where ``*_us`` are integer microseconds since the Unix epoch (UTC).  Not a
``NamedTuple``: building one costs 15× a plain tuple (0.8 µs against 0.05 µs,
measured; a burst builds 240,000 a second) and orjson cannot write one.

Validation is strict and total: every problem of every point is reported (up to
``MAX_REPORTED``) with the index or line and the field, and nothing is accepted
from a request that has any problem.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from server import schemas
from server.errors import InvalidInput

# A point's fields by position; a ``Point`` as the tuple type.
# Final, so that the type checker reads ``point[ID]`` as the id's type, not any field's.
ID: Final = 0
COMPETITION_ID: Final = 1
PARTICIPANT_ID: Final = 2
VALUE: Final = 3
RECORDED_US: Final = 4
RECEIVED_US: Final = 5
Point = tuple[str, int, int, float, int, int]
# Validated, before it has an id (None when the client sent none).
PartialPoint = tuple[str | None, int, int, float, int, int]

# The names, bounds and patterns of a point are those /openapi.json publishes
# (server/schemas.py); module-level here so that the hot path reads plain globals.
FIELDS = schemas.POINT_FIELDS
REQUIRED = schemas.POINT_REQUIRED
_ALLOWED = frozenset(FIELDS)
MAX_ID_CHARS = schemas.POINT_ID_MAX_CHARS
MAX_FUTURE_US = schemas.RECORDED_AT_MAX_FUTURE_S * 1_000_000
MAX_REPORTED = schemas.MAX_REPORTED
MAX_ABS_VALUE = schemas.POINT_VALUE_MAX_ABS
_INT64_MAX = schemas.INT64_MAX
_RFC3339 = re.compile(schemas.RFC3339_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CONTROL = re.compile(f"[{schemas.CONTROL_CHARS}]")


class NonFinite:
    """Stands in for NaN/Infinity literals so they can be refused by field, not by body."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def now_us() -> int:
    return time.time_ns() // 1000


# --- ids ---------------------------------------------------------------------


class _IdGenerator:
    """Unguessable ids, sortable by time: a 48-bit millisecond timestamp and 80
    random bits (as ULID and UUIDv7 are built), no counter, no process tag.

    Rendered as 32 lowercase hex characters (12 of time, 20 random), so string
    order is time order to the millisecond (index locality) while nothing in one
    id tells another: a 202 gives no client the next ids.  The random bits come
    from ``os.urandom`` in blocks (one call per ~200 ids, or per batch when larger:
    measured ~190 ns an id in batches of 1,000, against ~550 ns for the counter
    ids before); the unused rest of a block is dropped in a forked child, so no
    two processes share one.  Ids are taken on the event loop's one thread: no lock.
    """

    RANDOM_HEX = 20  # 80 bits
    BLOCK_BYTES = 4096

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._pool = ""
        self._at = 0

    def take(self, n: int) -> list[str]:
        width = self.RANDOM_HEX
        need = width * n
        if self._at + need > len(self._pool):
            self._pool = os.urandom(max(need // 2, self.BLOCK_BYTES)).hex()
            self._at = 0
        at, pool = self._at, self._pool
        self._at = at + need
        prefix = f"{time.time_ns() // 1_000_000:012x}"
        if n == 1:
            return [prefix + pool[at:at + width]]
        return [prefix + pool[i:i + width] for i in range(at, at + need, width)]


new_ids = _IdGenerator().take


# --- validation --------------------------------------------------------------


def _problem(where: dict[str, Any], field: str | None, message: str) -> dict[str, Any]:
    detail = dict(where)
    if field is not None:
        detail["field"] = field
    detail["message"] = message
    return detail


def check_point_id(value: Any) -> str | None:
    if type(value) is not str:
        return "must be a string"
    if not value or len(value) > MAX_ID_CHARS:
        return f"must be 1 to {MAX_ID_CHARS} characters"
    if _CONTROL.search(value):
        return "must not contain control characters"
    return None


def _whole_refs(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj``, or a copy whose ids written as whole floats (``7.0``) are integers.

    JSON Schema's ``integer`` takes 7.0 as 7, and so do we, up to 2^53 (beyond, a
    float names no integer exactly: refused as not an integer)."""
    whole = {key: int(value) for key in ("competition_id", "participant_id")
             if type(value := obj.get(key)) is float and value.is_integer()
             and abs(value) <= schemas.WHOLE_FLOAT_MAX}
    return {**obj, **whole} if whole else obj


def _check_ref(value: Any) -> str | None:
    if type(value) is not int:
        return "must be an integer" + (" (not a boolean)" if type(value) is bool else "")
    if not 0 < value <= _INT64_MAX:
        return "must be between 1 and 2^63-1"
    return None


def _value(value: Any) -> tuple[float | None, str | None]:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            return None, "must be a finite number"
        if abs(value) > MAX_ABS_VALUE:
            return None, _VALUE_RANGE
        return value, None
    if kind is int:
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            return None, "integer out of 64-bit range"
        if abs(value) > MAX_ABS_VALUE:
            return None, _VALUE_RANGE
        return float(value), None
    if kind is bool:
        return None, "must be a number (not a boolean)"
    if kind is NonFinite:
        return None, f"must be a finite number (not {value.literal})"
    return None, "must be a number"


_VALUE_RANGE = f"must be between -{MAX_ABS_VALUE:g} and {MAX_ABS_VALUE:g}"


def parse_rfc3339(value: Any) -> datetime | None:
    """An RFC 3339 date-time with an explicit offset, or None."""
    if type(value) is not str or not _RFC3339.fullmatch(value):
        return None
    text = value.replace("z", "Z").replace("t", "T")
    if "." in text:  # Python keeps microseconds; trim finer digits before parsing.
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = f"{head}.{tail[:digits][:6].ljust(6, '0')}{tail[digits:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # The pattern keeps the years as written to TIMESTAMP_YEARS, which every client and
    # driver can represent whatever the offset: nothing further to check (the
    # document's pattern is the whole rule).  In UTC: RFC 3339 allows offsets up to
    # ±23:59, PostgreSQL only up to ±15:59.
    return moment.astimezone(UTC)


RFC3339_HINT = (f"must be an RFC 3339 timestamp with offset, years "
                f"{schemas.TIMESTAMP_YEARS[0]} to {schemas.TIMESTAMP_YEARS[1] - 1}, "
                "e.g. 2026-01-31T12:00:00Z")


_FUTURE_MINUTES = schemas.RECORDED_AT_MAX_FUTURE_S // 60


def parse_timestamp_us(value: Any, received_us: int) -> tuple[int | None, str | None]:
    """RFC 3339, not more than 5 minutes after ``received_us``; as epoch microseconds."""
    moment = parse_rfc3339(value)
    if moment is None:
        return None, RFC3339_HINT
    us = (moment - _EPOCH) // _MICROSECOND
    if us - received_us > MAX_FUTURE_US:
        return None, f"must not be more than {_FUTURE_MINUTES} minutes in the future"
    return us, None


def validate_point(obj: Any, where: tuple[str, int], received_us: int,
                   errors: list[dict[str, Any]]) -> PartialPoint | None:
    """Turn one decoded JSON object into a point tuple (id None when absent), or add
    errors.

    Most points are plain — three numbers, perhaps an ASCII id, no timestamp — and
    take a fast path of a few type and range checks (validation was the largest
    cost of a batch POST, profiled); anything else, valid or not, takes the full
    path, which names every problem (``where``, e.g. ``("index", 3)``, says where).
    """
    if type(obj) is dict and len(obj) <= 4:
        c, p, v = obj.get("competition_id"), obj.get("participant_id"), obj.get("value")
        point_id = obj.get("id")
        if (type(c) is int and 0 < c <= _INT64_MAX and type(p) is int and 0 < p <= _INT64_MAX
                and (type(v) is float or type(v) is int)
                and -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE
                and (point_id is None
                     or (type(point_id) is str and 0 < len(point_id) <= MAX_ID_CHARS
                         and point_id.isascii() and point_id.isprintable()))
                and len(obj) == 3 + (point_id is not None)):
            return (point_id, c, p, float(v), received_us, received_us)
    return _validate_fully(obj, {where[0]: where[1]}, received_us, errors)


def _validate_fully(obj: Any, where: dict[str, Any], received_us: int,
                    errors: list[dict[str, Any]]) -> PartialPoint | None:
    if type(obj) is not dict:
        errors.append(_problem(where, None, "must be a JSON object"))
        return None
    obj = _whole_refs(obj)
    before = len(errors)
    if not obj.keys() <= _ALLOWED:
        for key in obj.keys() - _ALLOWED:
            errors.append(_problem(where, str(key), "unknown field"))
    for key in REQUIRED:
        if key not in obj:
            errors.append(_problem(where, key, "is required"))
    point_id = obj.get("id")
    if point_id is not None and (msg := check_point_id(point_id)):
        errors.append(_problem(where, "id", msg))
    for key in ("competition_id", "participant_id"):
        if key in obj and (msg := _check_ref(obj[key])):
            errors.append(_problem(where, key, msg))
    value = None
    if "value" in obj:
        value, msg = _value(obj["value"])
        if msg:
            errors.append(_problem(where, "value", msg))
    recorded_us: int | None = received_us
    if obj.get("recorded_at") is not None:
        recorded_us, msg = parse_timestamp_us(obj["recorded_at"], received_us)
        if msg:
            errors.append(_problem(where, "recorded_at", msg))
    # value and recorded_us are None only where a problem was recorded.
    if len(errors) > before or value is None or recorded_us is None:
        return None
    return (point_id, obj["competition_id"], obj["participant_id"], value, recorded_us,
            received_us)


class KeyedIds:
    """Deterministic ids from a client's ``Idempotency-Key``: re-sending the same
    request with the same key gives its points the same ids, so a retry after any
    failure never doubles a point.

    The key is scoped to the caller's token (two clients choosing the same key do
    not collide) and to the kind of position (``i`` = index in a JSON batch,
    ``l`` = line of an upload).  Ids: 24 hex digits of SHA-256(token hash, key),
    ``-``, the kind and the position — at most 46 characters.
    """

    def __init__(self, key: str, scope: bytes, kind: str) -> None:
        digest = hashlib.sha256(scope + b"\0" + key.encode("utf-8")).hexdigest()[:24]
        self.prefix = f"{digest}-{kind}"

    def __call__(self, position: int) -> str:
        return f"{self.prefix}{position}"


IDEMPOTENCY_KEY = re.compile(schemas.IDEMPOTENCY_KEY_PATTERN)


def with_ids(partial: list[PartialPoint], positions: list[int] | None = None,
             keyed: KeyedIds | None = None) -> list[Point]:
    """Give ids to the points that came without one: deterministic from ``keyed`` and
    each point's position (``positions``, default 0, 1, …), else fresh sortable ids."""
    if keyed is not None:
        where = positions if positions is not None else range(len(partial))
        # mypy narrows no tuple by one item; rebuilding every tuple would cost the hot path.
        return [p if p[ID] is not None else (keyed(n), *p[1:])  # type: ignore[misc]  # has id
                for p, n in zip(partial, where)]
    missing = sum(1 for p in partial if p[ID] is None)
    fresh = iter(new_ids(missing)) if missing else iter(())
    return [p if p[ID] is not None else (next(fresh), *p[1:])  # type: ignore[misc]  # has id
            for p in partial]


SLICE_POINTS = 500  # points validated per slice of the event loop (~0.75 ms here)


async def validate_points(items: list[Any], received_us: int,
                          keyed: KeyedIds | None = None) -> list[Point]:
    """All-or-nothing: every point valid (ids assigned), or InvalidInput naming every
    problem (up to ``MAX_REPORTED``) by index and field.

    A large batch is validated in slices of ``SLICE_POINTS`` with the event loop
    let go between them: 10,000 points take ~15 ms here, which in one piece
    would delay every other request (``/health`` included) by as much.
    """
    errors: list[dict[str, Any]] = []
    partial = []
    for index, obj in enumerate(items):
        if index and not index % SLICE_POINTS:
            await asyncio.sleep(0)
        point = validate_point(obj, ("index", index), received_us, errors)
        if point is not None:
            partial.append(point)
    if errors:
        raise InvalidInput(f"{len(errors)} invalid field(s); nothing was accepted",
                           details=errors[:MAX_REPORTED])
    return with_ids(partial, keyed=keyed)
