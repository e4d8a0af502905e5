"""Streaming parsers for bulk uploads: CSV (with a header row) and NDJSON, or either
one sent as bytes (``application/octet-stream``, for clients that send no text).

Bytes arrive in arbitrary pieces; ``LineSplitter`` yields complete lines (or
hands over a piece's lines at once, for ``ingest/columns.py``) and
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
        self.fed = 0  # bytes fed
        self.line_end = 0  # byte offset just past the last line yielded (its newline)
        self.unterminated = False  # the last line yielded had no newline: the body's end
        self._block: list[bytes | None] = []  # the last ``block``'s lines, for ``reach``
        self._first_len = self._reached = self._reached_end = self._block_end = 0

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes | None]]:
        """Yield complete lines; ``None`` stands for a line that was too long."""
        base = self.fed - len(self._tail)  # the offset of ``buffer`` in the body
        self.fed += len(data)
        buffer = self._tail + data if self._tail else data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self.line_no += 1
            self.line_end = base + end + 1
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

    def block(self, data: bytes) -> list[bytes | None]:
        """Every line ``feed`` would yield for ``data``, at once (the first numbered
        ``line_no - len(result) + 1``); ``line_end`` is left for ``reach`` to set."""
        base = self.fed - len(self._tail)
        self.fed += len(data)
        buffer = self._tail + data if self._tail else data
        lines: list[bytes | None] = buffer.split(b"\n")  # type: ignore[assignment]
        self._tail = lines.pop()  # type: ignore[assignment]  # bytes: split gave it
        # Where each line ends in the body, for ``reach``: from the lengths as received.
        self._block, self._reached, self._reached_end = lines, -1, base
        self._block_end = base + len(buffer) - len(self._tail)
        if lines:
            self._first_len = len(lines[0])  # type: ignore[arg-type]  # bytes yet
            if self._skipping:
                self._skipping = False
                lines[0] = None
            elif self.line_no == 0:
                lines[0] = _without_bom(1, lines[0])  # type: ignore[arg-type]  # bytes
            self.line_no += len(lines)
        if len(self._tail) > MAX_LINE_BYTES:
            self._tail = b""
            self._skipping = True
        return lines

    def reach(self, index: int) -> None:
        """Set ``line_end`` past line ``index`` of the last ``block`` (indexes only grow)."""
        if index == len(self._block) - 1:
            self.line_end = self._block_end
            return
        if self._reached < 0:
            self._reached, self._reached_end = 0, self._reached_end + self._first_len + 1
        if index > self._reached:
            later = self._block[self._reached + 1:index + 1]
            self._reached_end += sum(map(len, later)) + len(later)  # type: ignore[arg-type]
            self._reached = index
        self.line_end = self._reached_end

    def close(self) -> Iterator[tuple[int, bytes | None]]:
        if self._skipping or self._tail:
            self.line_no += 1
            self.line_end = self.fed
            self.unterminated = True
            yield self.line_no, (None if self._skipping
                                 else _without_bom(self.line_no, self._tail))
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
            self._converters = [_CONVERTERS[name] for name in self.header]
            return None
        if not text.strip():
            return None
        if '"' in text:  # quoted fields: the csv module's rules
            try:
                (values,) = list(csv.reader([text], strict=True))
            except (csv.Error, ValueError) as exc:
                raise LineError(f"malformed CSV: {exc}") from None
        else:  # nearly every line: a split reads it the same, at a fraction of the cost
            values = text.split(",")
        if len(values) != len(self.header):
            raise LineError(f"expected {len(self.header)} fields, found {len(values)}")
        obj: dict[str, Any] = {}
        for name, convert, value in zip(self.header, self._converters, values):
            if value == "" and convert is _optional_text:
                continue  # an empty id or recorded_at: absent
            obj[name] = convert(name, value)
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


# CSV is untyped: each column's converter, chosen once from the header.
def _integer(name: str, value: str) -> int:
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise LineError(f"{name}: must be a positive integer")
    return int(value)


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise LineError(f"{name}: must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise LineError(f"{name}: must be a finite number")
    return number


def _optional_text(name: str, value: str) -> str:
    return value.strip()


_CONVERTERS = {"competition_id": _integer, "participant_id": _integer, "value": _number,
               "id": _optional_text, "recorded_at": _optional_text}


class NdjsonLines:
    def parse(self, raw: bytes) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            _text(raw)  # a clearer message for non-UTF-8 lines
            raise LineError(f"malformed JSON: {exc}") from None


class SniffedLines:
    """An upload of either format: NDJSON when its first line starts with ``{``
    (blanks aside), CSV otherwise, decided once, on the first line."""

    def __init__(self) -> None:
        self.format: CsvLines | NdjsonLines | None = None

    def parse(self, raw: bytes) -> dict[str, Any] | None:
        if self.format is None:
            self.format = NdjsonLines() if raw.lstrip().startswith(b"{") else CsvLines()
        return self.format.parse(raw)


def parser_for(media_type: str) -> CsvLines | NdjsonLines | SniffedLines:
    """The parser of an upload sent as ``media_type`` (one the handler takes)."""
    if media_type == "text/csv":
        return CsvLines()
    return NdjsonLines() if media_type == "application/x-ndjson" else SniffedLines()


def without_header(parser: CsvLines | NdjsonLines | SniffedLines) -> bool:
    """A CSV upload (as far as can be told) that ended before its header row."""
    if isinstance(parser, SniffedLines):
        return parser.format is None or without_header(parser.format)
    return isinstance(parser, CsvLines) and parser.header is None


def point_from_line(parser: CsvLines | NdjsonLines | SniffedLines, raw: bytes | None,
                    line_no: int, received_us: int) -> tuple[tuple | None, str | None]:
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
    point = validate_point(obj, ("line", line_no), received_us, errors)
    if errors:
        return None, "; ".join(
            f"{e['field']}: {e['message']}" if "field" in e else e["message"] for e in errors
        )
    return point, None
