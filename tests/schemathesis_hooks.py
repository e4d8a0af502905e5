"""Schemathesis hooks for ``tests/test_api_conformance.py`` (``SCHEMATHESIS_HOOKS``).

Uploads.  The document describes the bulk upload bodies as strings of media types
schemathesis can neither generate nor send by itself (``text/csv``,
``application/x-ndjson``, and either as ``application/octet-stream``): these
strategies make the uploads the request body's description allows — a CSV header
naming the point fields, each once, in any order — of mostly good lines
(competition 1 and participants 1..3 exist on the seeded server, 4 does not) with
some garbage lines, which are rejected one by one in a 202.  An upload the server
refuses whole (a bad header: 400) is no valid input, so none is generated here.

Rules JSON Schema cannot state.  Two rules of the request bodies compare a value
with another field or with the clock, and are stated in words only (the schemas'
descriptions): a competition's ``ends_at`` is not before its ``starts_at``; a
point's ``recorded_at`` is at most ``RECORDED_AT_MAX_FUTURE_S`` in the future.
A positive (schema-valid) request that may break one is left out here, so that the
positive-data check holds the server to everything else the document says.  The
filter reads only the dates as written (the pattern makes them real days) with two
days to spare for offsets, not the server's parser.

Idempotency keys.  A key sent again with another request is refused by design
(the IETF draft's 422), whatever the document allows of each request alone: each
valid request's ``Idempotency-Key`` is made its own (a suffix of a counter).
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import schemathesis
from hypothesis import strategies as st

from server import schemas

_SPARE = timedelta(days=2)  # more than any offset (±23:59) can move a date
_KEYS = itertools.count()

_POINT = st.fixed_dictionaries({"competition_id": st.just(1),
                                "participant_id": st.integers(1, 4),
                                "value": st.integers(-100, 100)})
_GARBAGE = st.text(max_size=40).filter(lambda text: "\n" not in text)


def _upload(lines: list[str]) -> bytes:
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def _csv() -> st.SearchStrategy[bytes]:
    """A header of the required columns in any order, rows in that order."""
    def rows(order: tuple[str, ...]) -> st.SearchStrategy[bytes]:
        row = _POINT.map(lambda point: ",".join(str(point[name]) for name in order))
        return st.lists(st.one_of(row, row, _GARBAGE), max_size=20).map(
            lambda lines: _upload([",".join(order), *lines]))
    return st.permutations(schemas.POINT_REQUIRED).flatmap(lambda order: rows(tuple(order)))


def _ndjson(*, first_is_a_point: bool = False) -> st.SearchStrategy[bytes]:
    good = _POINT.map(lambda point: orjson.dumps(point).decode())
    lines = st.lists(st.one_of(good, good, _GARBAGE), max_size=20)
    if first_is_a_point:  # as bytes, an upload is NDJSON by its first line
        lines = st.builds(lambda first, rest: [first, *rest], good, lines)
    return lines.map(_upload)


schemathesis.openapi.media_type("text/csv", _csv())
schemathesis.openapi.media_type("application/x-ndjson", _ndjson())
schemathesis.openapi.media_type("application/octet-stream",
                                st.one_of(_csv(), _ndjson(first_is_a_point=True)))
# Sent as they are: the document's examples (strings) and the bytes above.
schemathesis.serializer.alias("text/csv", "text/plain")
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


def _day(timestamp: str) -> date:
    return date.fromisoformat(timestamp[:10])  # the pattern made it a real day


def _clearly_past(timestamp: Any) -> bool:
    return type(timestamp) is not str or (
        _day(timestamp) <= datetime.now(UTC).date() - _SPARE)


def _clearly_after(end: Any, start: Any) -> bool:
    return type(end) is not str or type(start) is not str or (
        _day(end) - _day(start) >= _SPARE)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """Leave out the positive requests that may break a rule stated in words only."""
    meta, body = case.meta, case.body
    if meta is None or not meta.generation.mode.is_positive or type(body) is not dict:
        return True
    if case.operation.label == "POST /v1/competitions":
        return _clearly_after(body.get("ends_at"), body.get("starts_at"))
    if case.operation.label == "POST /v1/points":
        points = body["points"] if "points" in body else [body]
        return all(_clearly_past(point.get("recorded_at")) for point in points)
    return True


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """A valid request's Idempotency-Key, made its own (still 1..200 of [!-~])."""
    meta, headers = case.meta, case.headers
    if meta is not None and meta.generation.mode.is_positive and headers \
            and type(headers.get("Idempotency-Key")) is str:
        suffix = f"~{next(_KEYS):x}"
        headers["Idempotency-Key"] = headers["Idempotency-Key"][:200 - len(suffix)] + suffix
    return case
