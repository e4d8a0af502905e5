"""Logs operators can use: one JSON object per line, a request id on every line of a
request, an access line per request, rotating files.

- **Where.** Always stderr; with ``LOG_DIR`` also ``app.log`` (everything at
  ``LOG_LEVEL`` and above) and ``error.log`` (ERROR and above), each rotated at
  ``LOG_MAX_BYTES`` keeping ``LOG_BACKUPS`` old files.  With ``--processes N``
  each process writes its own pair (``app-1.log``, ``error-1.log``, …): one
  file rotated by several processes loses lines, since each renames it under
  the others.
- **How.** ``LOG_FORMAT=auto`` (the default) writes readable text when stderr is
  a terminal and JSON lines otherwise; ``json`` / ``text`` force one.  Files are
  always JSON lines, for machines.
- **Request id.** ``X-Request-ID`` is taken from the request when it is sane
  (1–128 printable ASCII characters) or made (32 hex digits), echoed in the
  response, and added to every line logged while that request is handled
  (a context variable, so it follows the request's task and nothing else).
  Work shared by many requests — a coalesced enqueue, the workers — has none.
- **Access log.** One INFO line per request on ``points.access``: method, route
  template, path, status, duration, request id (``ACCESS_LOG=false`` turns it
  off, and so does a ``LOG_LEVEL`` above INFO).  Not through ``logging``: a
  preformatted line, buffered and written by a thread to the same outputs
  (``access_log.py``: why, and what a crash can lose); the lifecycle runs its
  flush task and drains it at the stop (``access_log_flushing``).  Tornado's
  own access logger is kept quiet: it would write a second line.
- **Errors.** A 5xx that is a bug is logged once, at ERROR, with its traceback;
  a 503 because a store is away is one WARNING line without one (it is an
  outage, not a bug: the traceback says nothing new, thousands of times).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import logging.handlers
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import orjson

from server.config import Settings
from server.ops import access_log
from server.ops.access_log import AccessLog

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_access: AccessLog | None = None  # this process's, set by configure_logging
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


def _new_prefix() -> None:
    global _prefix, _made
    _prefix, _made = secrets.token_hex(8), itertools.count()


_prefix, _made = "", itertools.count()
_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)  # forked processes never share ids


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a new one: 32 hex digits,
    a random prefix per process and a counter (no system call per request, as
    ``secrets`` would make: this runs on every request)."""
    if header and len(header) <= 128 and header.isascii() and header.isprintable():
        return header
    return f"{_prefix}{next(_made):016x}"


class RequestIdFilter(logging.Filter):
    """Adds the current request's id to every record logged while it is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname,
                                 "logger": record.name, "msg": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a person at a terminal: time, level, logger, message, [request id]."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{request_id}]{newline}{rest}"


def _text_on_stderr(settings: Settings) -> bool:
    return settings.log_format == "text" or (
        settings.log_format == "auto" and sys.stderr.isatty())


def configure_logging(settings: Settings, process: int | None = None) -> None:
    """Logging for this process; ``process`` (1..N) names its files under ``--processes``."""
    global _access
    close_access_log()  # its lines go to the handlers closed below
    text = _text_on_stderr(settings)
    stderr = logging.StreamHandler()
    stderr.setFormatter(TextFormatter() if text else JsonFormatter())
    handlers: list[logging.StreamHandler[Any]] = [stderr]
    if settings.log_dir is not None:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        suffix = f"-{process}" if process is not None else ""
        for name, level in (("app", logging.NOTSET), ("error", logging.ERROR)):
            file_handler = logging.handlers.RotatingFileHandler(
                settings.log_dir / f"{name}{suffix}.log", maxBytes=settings.log_max_bytes,
                backupCount=settings.log_backups, encoding="utf-8")
            file_handler.setLevel(level)
            file_handler.setFormatter(JsonFormatter())
            handlers.append(file_handler)
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers.clear()
    for handler in handlers:
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)  # ours is points.access
    if settings.access_log and root.isEnabledFor(logging.INFO):
        app_log = handlers[1:2]  # app.log takes every line; error.log no INFO one
        _access = AccessLog(json_to=app_log if text else [stderr, *app_log],
                            text_to=[stderr] if text else [])


def close_access_log(timeout_s: float = 5.0) -> bool:
    """Write every buffered access line and stop writing them (at exit, or before
    logging is configured again); False when the writes did not end in time."""
    global _access
    access, _access = _access, None
    return access.close(timeout_s) if access is not None else True


atexit.register(close_access_log)  # a process that ends without the lifecycle's stop


def log_request(handler: Any) -> None:
    """Tornado's ``log_function``: the access line of one finished request."""
    access = _access
    if access is not None:
        access.record(handler)


@contextlib.asynccontextmanager
async def access_log_flushing() -> AsyncIterator[None]:
    """The lifecycle's flush task: hands the buffered access lines to their writer
    every ``access_log.FLUSH_INTERVAL_S`` (the last ones: ``drain_access_log``, in
    the stop)."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(access_log.FLUSH_INTERVAL_S)
            access = _access
            if access is not None:
                access.flush()

    task = asyncio.create_task(tick(), name="access-log-flush")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drain_access_log(timeout_s: float) -> None:
    """Every access line buffered so far, written (at most ``timeout_s``, off the loop)."""
    access = _access
    if access is not None:
        written = access.handed_over()  # on the loop: the only thread that appends
        if not await asyncio.to_thread(written.wait, timeout_s):
            logging.getLogger(__name__).warning("access lines not written within %.1fs",
                                                timeout_s)
