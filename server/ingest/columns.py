"""The fast path of bulk uploads: a block of lines parsed and validated as columns.

Why: parsed line by line (``bulk.point_from_line``: decode, split, a converter per
field, a dict, ``validate_point``) an upload cost ~5 µs a point in Python, where a
JSON batch of the same points costs ~1.2 µs (profiled: parsing and validation were
56% of the server's samples during an upload).  Here a block of lines is decoded
once, split once into fields, and each column is checked and converted by a few
calls that run in C over the whole column (``str.isdigit`` on the column joined,
``map(int, …)``, ``min``/``max``, ``zip``).

Exactness: this path only accepts a block it can prove is *plain* — every line a
valid point written in the simplest form (no quotes, no blank line, no stray
``\\r``, digits only in the id columns, ids without spaces or control characters…).
Anything else returns None and the caller parses that block line by line with
the reference parser (``bulk.point_from_line``), which writes every error
message.  So each line gives the same point as the reference parser gives it, and
no error is ever worded here (tests/ingest/test_columns.py compares both).
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import Any

import orjson

from server.ingest.bulk import CsvLines, NdjsonLines, SniffedLines
from server.points import (
    MAX_ABS_VALUE,
    MAX_ID_CHARS,
    PartialPoint,
    parse_timestamp_us,
    validate_point,
)

_INT64_MAX = 2**63 - 1
_INTEGER_DIGITS = 19  # the reference parser's bound on an id column's length


_NOT_SEPARATORS = bytes(byte for byte in range(256) if byte not in b",\n")


def _rows_pattern(width: int, count: int) -> bytes:
    """The separators of ``count`` rows of ``width`` fields: ",,,\n,,,\n,,," (width 4)."""
    return (b"," * (width - 1) + b"\n") * (count - 1) + b"," * (width - 1)


def needs_line_by_line(parser: CsvLines | NdjsonLines | SniffedLines) -> bool:
    """The parser still has to read its first line (a header, or the format to sniff)."""
    if isinstance(parser, SniffedLines):
        return parser.format is None or needs_line_by_line(parser.format)
    return isinstance(parser, CsvLines) and parser.header is None


def parse_block(parser: CsvLines | NdjsonLines | SniffedLines, lines: list[bytes | None],
                received_us: int) -> list[PartialPoint] | None:
    """One point per line, in order, when every line of ``lines`` is a plain valid
    point; else None (then nothing was consumed: parse the block line by line)."""
    if isinstance(parser, SniffedLines):
        if parser.format is None:
            return None
        parser = parser.format
    if not lines or None in lines:  # None: a line too long, reported by the reference
        return None
    if isinstance(parser, NdjsonLines):
        return _ndjson(lines, received_us)  # type: ignore[arg-type]  # no None, checked
    if parser.header is None:
        return None
    return _csv(parser.header, lines, received_us)  # type: ignore[arg-type]  # no None


def _ndjson(lines: list[bytes], received_us: int) -> list[PartialPoint] | None:
    try:  # one object per line: a line that is not one JSON value raises
        items = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    errors: list[dict[str, Any]] = []
    points = []
    for obj in items:  # the JSON batch path's own validation, at its own cost
        point = validate_point(obj, ("line", 0), received_us, errors)
        if point is None:
            return None
        points.append(point)
    return points


def _csv(header: list[str], lines: list[bytes], received_us: int) -> list[PartialPoint] | None:
    data = b"\n".join(lines)
    count, width = len(lines), len(header)  # the header names the 3 required: width >= 3
    # Every line has exactly width - 1 commas (a blank line has none), so the flat
    # list of fields is the rows one after another.  Checked on the separators
    # alone (no UTF-8 sequence holds a byte of "," or "\n"): one C pass, one compare.
    if data.translate(None, _NOT_SEPARATORS) != _rows_pattern(width, count):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if '"' in text:  # quoted fields: the csv module's rules, line by line
        return None
    if "\r" in text:  # CRLF line ends; any other \r (or several) line by line
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):
            text = text[:-1]
        if "\r" in text:
            return None
    fields = text.replace("\n", ",").split(",")
    columns = {name: fields[index::width] for index, name in enumerate(header)}
    ids = _ids(columns.get("id"), count)
    competitions = _refs(columns["competition_id"])
    participants = _refs(columns["participant_id"])
    values = _values(columns["value"])
    if ids is None or competitions is None or participants is None or values is None:
        return None
    recorded = _times(columns.get("recorded_at"), count, received_us)
    if recorded is None:
        return None
    return list(zip(ids, competitions, participants, values, recorded,
                    repeat(received_us, count)))


def _ids(column: list[str] | None, count: int) -> list[str | None] | Any | None:
    if column is None:
        return repeat(None, count)
    joined = "".join(column)
    # ASCII and printable, no space: nothing for the reference's strip() to remove
    # and nothing for check_point_id to refuse.
    if not (joined.isascii() and joined.isprintable()) or " " in joined:
        return None
    lengths = list(map(len, column))
    if max(lengths) > MAX_ID_CHARS:
        return None
    if min(lengths) == 0:  # an empty id is an absent one
        return [value or None for value in column]
    return column


def _refs(column: list[str]) -> list[int] | None:
    joined = "".join(column)
    if not (joined.isascii() and joined.isdigit()):  # no sign, space or other digits
        return None
    try:  # digits only: as JSON numbers they read as int() reads them, ~4× faster;
        # without leading zeros more than 19 digits exceed 2^63-1, refused below.
        numbers = orjson.loads("[" + ",".join(column) + "]")
    except orjson.JSONDecodeError:  # an empty field, or leading zeros (JSON has none)
        lengths = list(map(len, column))
        if min(lengths) == 0 or max(lengths) > _INTEGER_DIGITS:
            return None
        numbers = list(map(int, column))
    if min(numbers) < 1 or max(numbers) > _INT64_MAX:
        return None
    return numbers


def _values(column: list[str]) -> list[float] | None:
    try:
        numbers = list(map(float, column))  # as the reference converts each field
    except ValueError:
        return None
    # Finite values bounded by ±10^15 cannot sum to an infinity: a finite sum
    # means no NaN and no infinity among them.
    if not math.isfinite(sum(numbers)):
        return None
    if min(numbers) < -MAX_ABS_VALUE or max(numbers) > MAX_ABS_VALUE:
        return None
    return numbers


def _times(column: list[str] | None, count: int, received_us: int) -> Any:
    if column is None:
        return repeat(received_us, count)
    times = []
    for value in column:
        if value == "":  # absent: the receive time
            times.append(received_us)
            continue
        us, error = parse_timestamp_us(value.strip(), received_us)
        if error is not None or us is None:
            return None
        times.append(us)
    return times
