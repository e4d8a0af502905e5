"""Streaming parsers for bulk uploads: CSV (with a header row) and NDJSON.

Bytes arrive in arbitrary pieces; ``LineSplitter`` yields complete lines and
keeps only the unfinished tail, so memory stays bounded by the longest line
(``MAX_LINE_BYTES``) whatever the upload's size.  Each line becomes a point or an
error naming the line.  CSV fields may be quoted but may not span lines.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import orjson

from server.errors import MalformedInput
from server.points import FIELDS, REQUIRED, validate_point

MAX_LINE_BYTES = 64 * 1024


class LineError(Exception):
    pass


_BOM = b"\xef\xbb\xbf"


def _without_bom(line_no: int, line: bytes) -> bytes:
    """Spreadsheets' "CSV UTF-8" exports start with a byte order mark: not data."""
    return line[3:] if line_no == 1 and line.startswith(_BOM) else line


class LineSplitter:
    """Turns a byte stream into (line number, line bytes) pairs."""

    def __init__(self) -> None:
        self._tail = b""
        self.line_no = 0
        self._skipping = False  # inside an over-long line

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes | None]]:
        """Yield complete lines; ``None`` stands for a line that was too long."""
        buffer = self._tail + data if self._tail else data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self.line_no += 1
            if self._skipping:
                self._skipping = False
                yield self.line_no, None
            else:
                yield self.line_no, _without_bom(self.line_no, buffer[start:end])
            start = end + 1
        self._tail = buffer[start:]
        if len(self._tail) > MAX_LINE_BYTES:
            self._tail = b""
            self._skipping = True

    def close(self) -> Iterator[tuple[int, bytes | None]]:
        if self._skipping:
            self.line_no += 1
            yield self.line_no, None
        elif self._tail:
            self.line_no += 1
            yield self.line_no, _without_bom(self.line_no, self._tail)
        self._tail = b""


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise LineError(f"not valid UTF-8 (byte {exc.start})") from None


class CsvLines:
    """The first line is the header: a subset of the point fields, required ones included."""

    def __init__(self) -> None:
        self.header: list[str] | None = None

    def parse(self, raw: bytes) -> dict[str, Any] | None:
        """A point-like dict for one data line; None for the header or a blank line."""
        text = _text(raw)
        if self.header is None:
            self.header = self._read_header(text)
            return None
        if not text.strip():
            return None
        try:
            (values,) = list(csv.reader([text], strict=True))
        except (csv.Error, ValueError) as exc:
            raise LineError(f"malformed CSV: {exc}") from None
        if len(values) != len(self.header):
            raise LineError(f"expected {len(self.header)} fields, found {len(values)}")
        obj: dict[str, Any] = {}
        for name, value in zip(self.header, values):
            if value == "" and name in ("id", "recorded_at"):
                continue
            obj[name] = _csv_value(name, value.strip())
        return obj

    @staticmethod
    def _read_header(text: str) -> list[str]:
        try:
            header = [name.strip().lower() for name in next(csv.reader([text]), [])]
        except csv.Error as exc:
            raise MalformedInput(f"malformed CSV header: {exc}", code="malformed_csv") from None
        problems = [(name, "unknown column") for name in dict.fromkeys(header)
                    if name not in FIELDS]
        problems += [(name, "missing column") for name in REQUIRED if name not in header]
        problems += [(name, "repeated column") for name in dict.fromkeys(header)
                     if header.count(name) > 1]
        if problems:
            raise MalformedInput(
                "CSV header must name the point fields ("
                + ", ".join(FIELDS) + "): "
                + "; ".join(f"{message} {name!r}" for name, message in problems),
                code="malformed_csv",
                details=[{"line": 1, "field": name, "message": message}
                         for name, message in problems],
            )
        return header


def _csv_value(name: str, value: str) -> Any:
    """CSV is untyped: ids are integers, value a finite number, the rest text."""
    if name in ("competition_id", "participant_id"):
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            raise LineError(f"{name}: must be a positive integer")
        return int(value)
    if name == "value":
        try:
            number = float(value)
        except ValueError:
            raise LineError("value: must be a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise LineError("value: must be a finite number")
        return number
    return value


class NdjsonLines:
    def parse(self, raw: bytes) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            _text(raw)  # a clearer message for non-UTF-8 lines
            raise LineError(f"malformed JSON: {exc}") from None


def point_from_line(parser: CsvLines | NdjsonLines, raw: bytes | None, line_no: int,
                    received_us: int) -> tuple[tuple | None, str | None]:
    """(point without id or None, error message or None); (None, None) = nothing here."""
    if raw is None:
        return None, f"line longer than {MAX_LINE_BYTES} bytes"
    try:
        obj = parser.parse(raw)
    except LineError as exc:
        return None, str(exc)
    if obj is None:
        return None, None
    errors: list[dict[str, Any]] = []
    point = validate_point(obj, {"line": line_no}, received_us, errors)
    if errors:
        return None, "; ".join(
            f"{e['field']}: {e['message']}" if "field" in e else e["message"] for e in errors
        )
    return point, None
