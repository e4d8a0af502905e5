"""The access line: one preformatted line per request, buffered, written off the loop.

Why not ``logging``: a line through it built a ``LogRecord``, ran the filters and
the formatter, took the handler's lock and wrote, once per request on the event
loop — 27 µs of CPU with stderr alone, 66 µs with ``LOG_DIR`` too, measured by
``docs/profiles/access_line.py``.  Here a finished request costs one string
(the JSON line, or the text line for a terminal) appended to a list; the list
is handed whole to one writer thread every ``FLUSH_INTERVAL_S`` (the
lifecycle's flush task) or when it passes ``FLUSH_BYTES``, and the thread
writes it with one ``write`` per output.  The loop never waits on a write.

The lines keep the fields and format the ``logging`` path wrote (``logs.py``):
JSON ``ts``, ``level``, ``logger`` (``points.access``), ``msg``, ``method``,
``route``, ``path``, ``status``, ``duration_ms``, ``request_id``, ``remote``;
text ``<local time>,<ms> INFO points.access: GET /path 200 1.2ms [id]``.

One writer per file: the thread writes through the ``logging`` handlers that
own stderr and ``app.log``, under each handler's own lock, and rolls ``app.log``
over with that handler's rotation (at ``LOG_MAX_BYTES``, between whole lines),
so the other log lines and these never write one file from two places.

What can be lost: nothing at a clean stop (the lifecycle drains the buffer and
waits for the thread, SIGTERM included); at a crash (SIGKILL, a power cut) the
lines of at most the last flush interval; and while an output takes nothing
(``MAX_PENDING``), the lines beyond a bounded backlog, counted and reported.
Access lines reach the outputs in batches up to ``FLUSH_INTERVAL_S`` late, so
other lines can sit between them out of order: their ``ts`` says when each
happened.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from typing import Any

import orjson

FLUSH_INTERVAL_S = 0.1
FLUSH_BYTES = 64 * 1024
# Batches handed over and not yet written, at most: an output that stops taking
# lines (a full pipe nobody reads) costs at most this many buffers of memory; the
# lines beyond are dropped, counted, and reported once the output moves again
# (through ``logging`` it blocked the event loop instead, and with it the service).
MAX_PENDING = 64
_Batch = tuple[list[str], list[str]]  # (JSON lines, text lines), each ending "\n"


class AccessLog:
    """The access lines of one process: ``record`` on the loop, written by a thread.

    ``json_to`` and ``text_to`` are the handlers whose streams get each form
    (stderr in one of them; ``app.log``'s always takes JSON).  Only the loop
    thread calls ``record``, ``flush`` and ``handed_over`` while it serves.
    """

    def __init__(self, json_to: list[logging.StreamHandler[Any]],
                 text_to: list[logging.StreamHandler[Any]],
                 flush_bytes: int = FLUSH_BYTES) -> None:
        self._json_to, self._text_to = json_to, text_to
        self._flush_bytes = flush_bytes
        self._json: list[str] = []
        self._text: list[str] = []
        self._size = 0
        self._second = -1
        self._utc_prefix = self._local_prefix = ""
        self._queue: queue.SimpleQueue[_Batch | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()  # a fork's copy writes nothing: the lines are the parent's
        self._closed = False
        self.write_errors = 0
        self.dropped = 0  # lines dropped while the outputs were stuck
        self._reported = 0

    def record(self, handler: Any) -> None:
        """Buffer the access line of one finished tornado request (the hot path)."""
        request = handler.request
        status = handler.get_status()
        duration_ms = request.request_time() * 1000
        method, path = request.method, request.path
        request_id = getattr(handler, "request_id", None)
        now = time.time()
        second = int(now)
        if second != self._second:
            self._new_second(second)
        millis = int((now - second) * 1000)
        # Integer arithmetic rather than float formatting and round(): ~1 µs less a line.
        tenths = int(duration_ms * 10 + 0.5)
        message = f"{method} {path} {status} {tenths // 10}.{tenths % 10}ms"
        size = 0
        if self._json_to:
            line = orjson.dumps({
                "ts": f"{self._utc_prefix}.{millis:03d}Z", "level": "INFO",
                "logger": "points.access", "msg": message, "method": method,
                "route": getattr(handler, "route", None) or path, "path": path,
                "status": status, "duration_ms": int(duration_ms * 100 + 0.5) / 100,
                "request_id": request_id, "remote": request.remote_ip},
                option=orjson.OPT_APPEND_NEWLINE).decode()
            self._json.append(line)
            size = len(line)
        if self._text_to:
            tail = "\n" if request_id is None else f" [{request_id}]\n"
            text = f"{self._local_prefix},{millis:03d} INFO points.access: {message}{tail}"
            self._text.append(text)
            size += len(text)
        self._size += size
        if self._size >= self._flush_bytes:
            self.flush()

    def _new_second(self, second: int) -> None:
        self._second = second
        self._utc_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._local_prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))

    def flush(self) -> None:
        """Hand what is buffered to the writer thread; never waits for the write."""
        if not self._size or self._closed or os.getpid() != self._pid:
            return
        batch = (self._json, self._text)
        self._json, self._text, self._size = [], [], 0
        if self._queue.qsize() >= MAX_PENDING:
            self.dropped += len(batch[0]) or len(batch[1])
            return
        if self._thread is None:  # started on first use: never before a fork
            self._thread = threading.Thread(target=self._write_batches,
                                            name="access-log-writer", daemon=True)
            self._thread.start()
        self._queue.put(batch)

    def handed_over(self) -> threading.Event:
        """Flush; the event is set once every line handed over so far is written."""
        self.flush()
        written = threading.Event()
        if self._thread is None or os.getpid() != self._pid:
            written.set()
        else:
            self._queue.put(written)
        return written

    def drain(self, timeout_s: float) -> bool:
        """Every line so far written, waiting at most ``timeout_s`` (False when the wait
        ran out).  Blocks: at exit only; the loop waits on ``handed_over()`` off it."""
        return self.handed_over().wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Drain, then stop the writer thread; later lines are dropped."""
        done = self.drain(timeout_s)
        self._closed = True
        if self._thread is not None and os.getpid() == self._pid:
            self._queue.put(None)
            self._thread.join(timeout_s)
        return done

    def _write_batches(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            json_lines, text_lines = item
            for handlers, lines in ((self._json_to, json_lines), (self._text_to, text_lines)):
                if lines:
                    chunk = "".join(lines)
                    for handler in handlers:
                        self._write(handler, chunk)
            if self.dropped != self._reported:
                self._reported = dropped = self.dropped
                logging.getLogger("points.access").warning(
                    "%d access lines dropped in all: the log outputs did not keep up", dropped)

    def _write(self, handler: logging.StreamHandler[Any], chunk: str) -> None:
        handler.acquire()  # the lock its other lines are written under
        try:
            if isinstance(handler, logging.handlers.RotatingFileHandler):
                _write_rotating(handler, chunk)
            else:
                handler.stream.write(chunk)
                handler.stream.flush()
        except Exception as exc:  # a full disk must not end the thread
            self.write_errors += 1
            if self.write_errors == 1:
                print(f"access log: cannot write to {handler}: {exc!r}", file=sys.__stderr__)
        finally:
            handler.release()


def _write_rotating(handler: logging.handlers.RotatingFileHandler, chunk: str) -> None:
    """Write whole lines, rolling the file over as the handler would: a file is rolled
    before it would reach ``maxBytes`` (a line longer than that gets a file alone)."""
    while chunk:
        if handler.stream is None:
            handler.stream = handler._open()
        if handler.maxBytes <= 0:
            handler.stream.write(chunk)
            break
        handler.stream.seek(0, 2)
        size = handler.stream.tell()
        room = handler.maxBytes - size
        cut = len(chunk) if len(chunk) < room else chunk.rfind("\n", 0, room - 1) + 1
        if cut == 0:
            if size > 0:
                handler.doRollover()
                continue
            cut = chunk.find("\n") + 1 or len(chunk)
        handler.stream.write(chunk[:cut])
        chunk = chunk[cut:]
    if handler.stream is not None:
        handler.stream.flush()
