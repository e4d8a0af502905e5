"""POST /v1/points/bulk: a streamed CSV or NDJSON upload, enqueued in chunks.

The body is never held whole: each arriving piece is split into lines, valid
points collect into a buffer of ``BULK_CHUNK_POINTS`` (5,000) that is enqueued (and
awaited, which pushes back on the client through TCP) as soon as it fills.
Invalid lines are counted and the first ``MAX_REPORTED`` are described.
Unlike ``POST /v1/points`` a bulk upload is not all-or-nothing: valid lines are
accepted.  A bad CSV header is a 400 before anything is enqueued.

Resuming.  Every error reply (413 mid-stream, 503, a bug) says how far the
upload got: ``accepted`` points, and ``accepted_through_line`` — every line up
to it was handled (accepted, or rejected and reported); when a failure left the
fate of some lines unknown, ``unknown_through_line`` says up to where.  With an
``Idempotency-Key`` a point's id is derived from the key and its line number, so
re-sending the whole file with the same key after any failure — a reply, a
dropped connection, a timeout — never doubles a point.  Without one, re-send
the lines after ``accepted_through_line`` (and only when nothing is unknown).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import tornado.web

from server.errors import MalformedInput, PartiallyAccepted
from server.handlers.base import BodyHandler
from server.ingest.bulk import CsvLines, LineSplitter, NdjsonLines, point_from_line
from server.points import MAX_REPORTED, KeyedIds, now_us, with_ids

SLICE_LINES = 250  # lines parsed and validated per slice of the event loop (~1 ms here)


@tornado.web.stream_request_body
class BulkHandler(BodyHandler):
    role = "ingest"
    content_types = ("text/csv", "application/x-ndjson")
    buffers_body = False  # a piece at a time: held while it is handled, not the whole upload

    def max_body_bytes(self) -> int:
        return self.deps.settings.bulk_max_bytes

    async def prepare(self) -> None:
        self._accepted = 0
        self._rejected = 0
        self._errors: list[dict[str, Any]] = []
        self._buffer: list[tuple] = []  # points without ids yet
        self._buffer_lines: list[int] = []  # the line of each
        self._accepted_through = 0  # every line up to here is handled
        self._unknown_through: int | None = None
        self._lines = LineSplitter()
        self._received_us = now_us()
        self._keyed: KeyedIds | None = None
        await super().prepare()
        csv = self.request.headers.get("Content-Type", "").lower().startswith("text/csv")
        self._parser = CsvLines() if csv else NdjsonLines()
        self._keyed = self.idempotency_ids("l")

    def error_extra(self) -> dict[str, Any]:
        """Every error reply says how much of the upload was accepted before it."""
        extra: dict[str, Any] = {"accepted": self._accepted, "rejected": self._rejected,
                                 "errors": self._errors,
                                 "accepted_through_line": self._accepted_through}
        if self._unknown_through is not None:
            extra["unknown_through_line"] = self._unknown_through
        return extra

    async def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        try:
            self.count_body(chunk)
            self.hold_body(len(chunk))  # while this piece is parsed and enqueued
            self._busy_body = True  # a slow enqueue is not the client idling
            try:
                await self._consume(self._lines.feed(chunk))
            finally:
                self._busy_body = False
                self._last_byte = time.monotonic()
                self.release_body(len(chunk))
        except Exception as exc:  # the request's boundary: answer, never drop the link
            self.refuse(exc)

    async def _consume(self, lines: Any) -> None:
        for count, (line_no, raw) in enumerate(lines, 1):
            if not count % SLICE_LINES:  # a 64 KiB piece is ~2,000 lines: let go between
                await asyncio.sleep(0)
            point, error = point_from_line(self._parser, raw, line_no, self._received_us)
            if error is not None:
                self._rejected += 1
                if len(self._errors) < MAX_REPORTED:
                    self._errors.append({"line": line_no, "message": error})
            elif point is not None:
                self._buffer.append(point)
                self._buffer_lines.append(line_no)
                if len(self._buffer) >= self.deps.settings.bulk_chunk_points:
                    await self._flush(line_no)
            if not self._buffer:  # nothing pending: this line is handled
                self._accepted_through = line_no

    async def _flush(self, through_line: int) -> None:
        """Enqueue the buffer; on success every line through ``through_line`` is handled."""
        if not self._buffer:
            return
        lines = self._buffer_lines
        points = with_ids(self._buffer, lines, self._keyed)
        self._buffer, self._buffer_lines = [], []
        try:
            await self.deps.ingest.accept(points)
        except PartiallyAccepted as exc:
            done, unknown = len(exc.accepted_ids), len(exc.unknown_ids)
            self._accepted += done
            if done:
                self._accepted_through = lines[done - 1]
            if unknown:
                self._unknown_through = lines[done + unknown - 1]
            # The reply says how far the upload got by line, not by id.
            raise exc.cause from exc
        self._accepted += len(points)
        self._accepted_through = through_line

    async def post_body(self) -> None:
        await self._consume(self._lines.close())
        await self._flush(self._lines.line_no)
        self._accepted_through = self._lines.line_no
        if isinstance(self._parser, CsvLines) and self._parser.header is None:
            raise MalformedInput("empty CSV upload: a header row is required",
                                 code="malformed_csv")
        self.write_json({"accepted": self._accepted, "rejected": self._rejected,
                         "errors": self._errors}, 202)
