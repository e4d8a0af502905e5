"""POST /v1/points/bulk: a streamed CSV or NDJSON upload, enqueued in chunks.

The body is never held whole: each arriving piece is split into lines, valid
points collect into a buffer of ``BULK_CHUNK_POINTS`` that is enqueued (and
awaited, which pushes back on the client through TCP) as soon as it fills.
Invalid lines are counted and the first ``MAX_REPORTED`` are described.
Unlike ``POST /v1/points`` a bulk upload is not all-or-nothing: valid lines are
accepted.  A bad CSV header is a 400 before anything is enqueued.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from server.bulk import CsvLines, LineSplitter, NdjsonLines, point_from_line
from server.errors import MalformedInput
from server.handlers.base import BodyHandler
from server.points import MAX_REPORTED, now_us, with_ids

BULK_CHUNK_POINTS = 5000


@tornado.web.stream_request_body
class BulkHandler(BodyHandler):
    role = "ingest"
    content_types = ("text/csv", "application/x-ndjson")

    def max_body_bytes(self) -> int:
        return self.deps.settings.bulk_max_bytes

    async def prepare(self) -> None:
        self._accepted = 0
        self._rejected = 0
        self._errors: list[dict[str, Any]] = []
        self._buffer: list[tuple] = []
        self._lines = LineSplitter()
        self._received_us = now_us()
        await super().prepare()
        csv = self.request.headers.get("Content-Type", "").lower().startswith("text/csv")
        self._parser = CsvLines() if csv else NdjsonLines()

    async def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        if self._finished:
            return
        try:
            self.count_body(chunk)
            await self._consume(self._lines.feed(chunk))
        except Exception as exc:  # the request's boundary: answer, never drop the link
            self.refuse(exc)

    def error_extra(self) -> dict[str, Any]:
        """Every error reply says how much of the upload was accepted before it."""
        return {"accepted": self._accepted}

    async def _consume(self, lines: Any) -> None:
        for line_no, raw in lines:
            point, error = point_from_line(self._parser, raw, line_no, self._received_us)
            if error is not None:
                self._rejected += 1
                if len(self._errors) < MAX_REPORTED:
                    self._errors.append({"line": line_no, "message": error})
            elif point is not None:
                self._buffer.append(point)
                if len(self._buffer) >= BULK_CHUNK_POINTS:
                    await self._flush()

    async def _flush(self) -> None:
        if self._buffer:
            points, self._buffer = with_ids(self._buffer), []
            await self.deps.ingest.accept(points)
            self._accepted += len(points)

    async def post_body(self) -> None:
        await self._consume(self._lines.close())
        await self._flush()
        if isinstance(self._parser, CsvLines) and self._parser.header is None:
            raise MalformedInput("empty CSV upload: a header row is required",
                                 code="malformed_csv")
        self.write_json({"accepted": self._accepted, "rejected": self._rejected,
                         "errors": self._errors}, 202)
