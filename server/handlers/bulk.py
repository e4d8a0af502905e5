"""POST /v1/points/bulk: a streamed CSV or NDJSON upload, enqueued in chunks.

Sent as ``text/csv``, ``application/x-ndjson``, or ``application/octet-stream``
(either format, told apart by its first line) for clients that send no text.

The body is never held whole: each arriving piece is split into lines, parsed a
slice of lines at a time as columns (``ingest/columns.py``; line by line where a
slice is not all plain valid points); valid points collect into a buffer of
``BULK_CHUNK_POINTS`` (5,000) that is enqueued (and awaited, which pushes back on
the client through TCP) as soon as it fills.
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

With a key the upload is bound to it (``ingest/idempotency.py``): its body's
digest accumulates as it streams and is recorded at each chunk before the chunk
is enqueued; a resend is checked against those records before any line it
could share an id with is enqueued (a different body: 422, stopped where the
bodies part), and a resend after a success is read to its end and answered as
the first was (or 422 if its digest differs).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import tornado.web

from server.errors import IdConflict, MalformedInput, PartiallyAccepted
from server.handlers.base import BodyHandler
from server.ingest.bulk import LineSplitter, parser_for, point_from_line, without_header
from server.ingest.columns import needs_line_by_line, parse_block
from server.ingest.idempotency import DONE, Begun, KeyHold, StreamDigest
from server.points import MAX_REPORTED, KeyedIds, now_us, with_ids

SLICE_LINES = 250  # lines parsed and validated per slice of the event loop (~1 ms here)
BLOCK_LINES = 2000  # plain lines parsed as columns per slice (~1 ms here)
# With a key whose earlier attempt failed, lines wait for the checkpoint that covers
# them; more than this many chunks' worth between two checkpoints is another body.
GATED_MAX_FACTOR = 2


@tornado.web.stream_request_body
class BulkHandler(BodyHandler):
    role = "ingest"
    content_types = ("text/csv", "application/x-ndjson", "application/octet-stream")
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
        self._hold: KeyHold | None = None  # the Idempotency-Key's record, while held
        self._digest: StreamDigest | None = None  # with a key: the body's, as it streams
        self._replay: Begun | None = None  # the key's upload succeeded: answer as it did
        await super().prepare()
        media_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        self._parser = parser_for(media_type)
        self._keyed = self.idempotency_ids("l")
        self._before_body = True  # refused here, the body will not be read
        held = await self.hold_key(f"POST /v1/points/bulk {media_type}")
        self._before_body = False
        if held is not None:
            begun, self._hold = held
            if begun.outcome == DONE:
                self._replay, self._digest = begun, StreamDigest()
            else:
                self._digest = StreamDigest(begun.checkpoints)

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
            if self._digest is not None:
                self._digest.receive(chunk)  # a checkpoint it completes must match
            if self._replay is not None:  # read to the end and compared, nothing enqueued
                self._digest.advance(self._digest.received)  # type: ignore[union-attr]
                self._last_byte = time.monotonic()
                return
            self.hold_body(len(chunk))  # while this piece is parsed and enqueued
            self._busy_body = True  # a slow enqueue is not the client idling
            try:
                await self._consume(self._lines.block(chunk))
            finally:
                self._busy_body = False
                self._last_byte = time.monotonic()
                self.release_body(len(chunk))
            if self._digest is not None:  # hash what is parsed: only the tail stays held
                self._digest.advance(self._lines.line_end)
        except Exception as exc:  # the request's boundary: answer, never drop the link
            await self._let_go()
            self.refuse(exc)

    async def _consume(self, lines: list[bytes | None]) -> None:
        """The lines of the last ``LineSplitter.block``: in slices of at most
        ``BLOCK_LINES``, each parsed as columns (``ingest/columns.py``) or, when a
        slice is not all plain valid points, line by line (the reference parser,
        which words every error).  A slice never crosses a chunk's end, so chunks
        end on the same lines, and ``accepted_through_line`` and the key's
        checkpoints fall where they fall line by line."""
        first = self._lines.line_no - len(lines) + 1
        chunk_points = self.deps.settings.bulk_chunk_points
        at = 0
        while at < len(lines):
            if at:
                await asyncio.sleep(0)  # let go between slices (~1 ms each)
            room = chunk_points - len(self._buffer)  # <= 0: a flush was held back (gated)
            first_line = needs_line_by_line(self._parser)  # a header, or the format
            piece = lines[at:at + (1 if first_line else max(1, min(BLOCK_LINES, room)))]
            points = None if first_line else parse_block(self._parser, piece,
                                                         self._received_us)
            if points is None:
                await self._consume_lines(first + at, piece, at)
            else:
                last = first + at + len(piece) - 1
                self._buffer.extend(points)
                self._buffer_lines.extend(range(first + at, last + 1))
                if len(self._buffer) >= chunk_points:
                    self._lines.reach(at + len(piece) - 1)
                    await self._flush(last)
                if not self._buffer:
                    self._accepted_through = last
            at += len(piece)
        if lines:
            self._lines.reach(len(lines) - 1)

    async def _consume_lines(self, first: int, lines: list[bytes | None],
                             index: int | None) -> None:
        """Line by line: ``lines`` numbered from ``first``; ``index``, their place in
        the last block (None: the splitter already set ``line_end``, at the close)."""
        for count, raw in enumerate(lines):
            if count and not count % SLICE_LINES:
                await asyncio.sleep(0)
            line_no = first + count
            point, error = point_from_line(self._parser, raw, line_no, self._received_us)
            if error is not None:
                self._rejected += 1
                if len(self._errors) < MAX_REPORTED:
                    self._errors.append({"line": line_no, "message": error})
            elif point is not None:
                self._buffer.append(point)
                self._buffer_lines.append(line_no)
                if len(self._buffer) >= self.deps.settings.bulk_chunk_points:
                    if index is not None:
                        self._lines.reach(index + count)
                    await self._flush(line_no)
            if not self._buffer:  # nothing pending: this line is handled
                self._accepted_through = line_no

    async def _flush(self, through_line: int) -> None:
        """Enqueue the buffer; on success every line through ``through_line`` is handled.

        With a key, the body up to the end of ``through_line`` is first recorded (or
        checked against an earlier attempt's record: a flush waits for the checkpoint
        it needs, see ``ingest/idempotency.py``).
        """
        if not self._buffer:
            return
        if self._digest is not None and self._hold is not None:
            end = self._lines.line_end
            if not self._digest.may_enqueue(end):
                # Until the earlier attempt's next checkpoint: the same bytes never
                # hold more than a chunk of points between two.
                if len(self._buffer) < GATED_MAX_FACTOR * self.deps.settings.bulk_chunk_points:
                    return
                raise self._digest.differs()
            if end > self._digest.limit:
                await self._hold.checkpoint(end, self._digest.at(end),
                                            end=self._lines.unterminated)
        lines = self._buffer_lines
        points = with_ids(self._buffer, lines, self._keyed)
        self._buffer, self._buffer_lines = [], []
        try:
            await self.deps.ingest.accept(points)
        except IdConflict as exc:
            _by_line(exc, lines)
            raise
        except PartiallyAccepted as exc:
            done, unknown = len(exc.accepted_ids), len(exc.unknown_ids)
            self._accepted += done
            if done:
                self._accepted_through = lines[done - 1]
            if unknown:
                self._unknown_through = lines[done + unknown - 1]
            # The reply says how far the upload got by line, not by id.
            raise _by_line(exc.cause, lines) from exc
        self._accepted += len(points)
        self._accepted_through = through_line

    async def post_body(self) -> None:
        try:
            await self._finish_upload()
        except BaseException:
            await self._let_go()
            raise

    async def _finish_upload(self) -> None:
        if self._replay is not None:
            assert self._digest is not None
            if self._digest.close() != self._replay.digest:
                raise self._digest.differs()
            self.write_replay(self._replay.status, orjson.loads(self._replay.answer))
            return
        last = list(self._lines.close())  # an unterminated last line (sets line_end)
        if last:
            await self._consume_lines(last[0][0], [raw for _, raw in last], None)
        whole = self._digest.close() if self._digest is not None else ""
        await self._flush(self._lines.line_no)
        self._accepted_through = self._lines.line_no
        if without_header(self._parser):
            raise MalformedInput("empty CSV upload: a header row is required",
                                 code="malformed_csv")
        answer = {"accepted": self._accepted, "rejected": self._rejected,
                  "errors": self._errors}
        if self._hold is not None:
            await self._hold.finish("done", digest=whole, status=202,
                                    answer=orjson.dumps(answer))
        self.write_json(answer, 202)

    async def _let_go(self) -> None:
        """The upload failed: free its key, or leave it bound to this body when some of
        it may have been accepted (the record knows: checkpoints were written)."""
        if self._hold is not None:
            await self._hold.finish("abandon")

    def on_connection_close(self) -> None:
        # The client went away mid-upload: the key is let go (its record still knows
        # what may have been accepted), so that a resend need not wait for the lease.
        self._let_go_soon()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._let_go_soon()  # however the request ended, its hold ends with it
        super().on_finish()

    def _let_go_soon(self) -> None:
        hold = getattr(self, "_hold", None)  # None too when refused before ``prepare``
        if hold is not None:
            hold.finish_soon("abandon")


def _by_line(exc: BaseException, lines: list[int]) -> BaseException:
    """An id conflict's details name the upload's lines, not indexes of one chunk."""
    if isinstance(exc, IdConflict):
        for detail in exc.details:
            if "index" in detail:
                detail["line"] = lines[detail.pop("index")]
    return exc
