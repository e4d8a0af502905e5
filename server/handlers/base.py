"""Handler base classes: dependencies, auth, JSON in and out, the one error renderer.

Every handler gets its dependencies through ``initialize(deps=...)`` from the
route table (no module globals).  ``write_error`` is the only place an error
body is shaped, from ``handlers/errors.py``'s table; anything that is neither a
domain error nor an ``HttpError`` is a bug and answers a bare ``internal_error``
without details, logged with its traceback.

Bodies: handlers that take JSON stream their body (``stream_request_body``) so
that an oversized body is refused with 413 from its Content-Length, or as soon
as it crosses the limit, without being buffered first.  What bodies hold in
memory at once is bounded per process (``HTTP_BODIES_MAX_BYTES``: a body that
would pass it is answered 503 ``overloaded`` with ``Retry-After``), and a body
that stops arriving for ``HTTP_BODY_IDLE_S`` is cut (408 ``body_idle``, and the
connection closed): a slow or stalled client cannot hold the process's memory.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
import tornado
import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, format_timestamp, responses

from server import schemas
from server.errors import PartiallyAccepted, ServiceError, StoreUnavailable
from server.handlers.errors import (
    BadParameter,
    BodyIdle,
    HttpError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
    http_error_for,
    rate_limit_headers,
)
from server.metrics import UNMATCHED
from server.ops import error_reports
from server.ops.logs import REQUEST_ID, request_id_from
from server.points import IDEMPOTENCY_KEY, KeyedIds

if TYPE_CHECKING:
    from server.access.auth import Identity
    from server.deps import Deps
    from server.ingest.idempotency import Begun, KeyHold

log = logging.getLogger(__name__)
_INT64_MAX = schemas.INT64_MAX


_SERVER = f"TornadoServer/{tornado.version}"
_NEWLINE = orjson.OPT_APPEND_NEWLINE


def json_body(obj: Any) -> bytes:
    """A JSON answer's bytes, ending with a newline (so that ``curl`` leaves the prompt
    on a line of its own, and a stream of answers splits into lines).

    ``obj`` is a JSON-ready value, or JSON already encoded (a cached page, the
    OpenAPI document): encoded bytes get the newline when they lack it, so bytes
    stored by a version before this one answer alike.
    """
    if isinstance(obj, bytes):
        return obj if obj.endswith(b"\n") else obj + b"\n"
    return orjson.dumps(obj, option=_NEWLINE)


_UNREAD = object()
_date = (0, "")  # (second, its HTTP date): formatted once a second, not per request


def _http_date() -> str:
    global _date
    second = int(time.time())
    if second != _date[0]:
        _date = (second, format_timestamp(second))
    return _date[1]


def _code_for(status: int) -> str:
    return responses.get(status, "error").lower().replace(" ", "_").replace("-", "_")


class BaseHandler(tornado.web.RequestHandler):
    """Public by default; set ``role`` to require a token with at least that role."""

    role: str | None = None
    request_id: str
    _idempotency_key: str | object | None = _UNREAD  # the header, once read

    def initialize(self, deps: Deps, route: str = UNMATCHED) -> None:
        self.deps = deps
        self.route = route  # the route's template, for the access log and metrics

    async def prepare(self) -> None:
        # Every line logged from here on in this request's task carries its id.
        REQUEST_ID.set(self.request_id)
        self.deps.serving.inflight += 1
        self._counted = True
        self.identity: Identity | None = None
        if self.role is not None:
            self.identity = await self.deps.auth.require(
                self.request.headers.get("Authorization"), self.role,
                address=self.request.remote_ip)
            if self.deps.limiter is not None:  # per token; public routes are never limited
                quota = await self.deps.limiter.admit(self.identity.token_hash)
                for name, value in rate_limit_headers(quota.limit, quota.remaining,
                                                      quota.reset_s).items():
                    self.set_header(name, value)

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            self.deps.serving.inflight -= 1
            self._counted = False

    def on_connection_close(self) -> None:
        self.on_finish()
        super().on_connection_close()

    def clear(self) -> None:
        """Tornado's ``clear()`` — the same headers and state — at less cost per request:
        the Date header formatted once a second (tornado formats it per request), no
        text/html Content-Type set only to be replaced, and the default headers
        stored without the per-value check of ``set_header`` (their values are ours,
        or a request id already checked printable ASCII).  A test holds it to
        tornado's own (``tests/handlers/test_headers.py``)."""
        headers = HTTPHeaders()
        headers["Server"] = _SERVER
        headers["Date"] = _http_date()
        self._headers = headers
        self.set_default_headers()
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    def set_default_headers(self) -> None:
        # Runs before initialize() and again when an error answer clears the headers.
        if not hasattr(self, "request_id"):
            self.request_id = request_id_from(self.request.headers.get("X-Request-ID"))
        headers = self._headers
        headers["X-Request-ID"] = self.request_id
        headers["Content-Type"] = "application/json; charset=UTF-8"
        headers["Cache-Control"] = "no-store"

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json_body(obj))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        error = http_error_for(exc) if exc is not None else None
        if error is not None:
            self.set_status(error.status)
            for name, value in error.headers.items():
                self.set_header(name, value)
            body = error.body()
        elif isinstance(exc, tornado.web.HTTPError) or exc is None:
            status = exc.status_code if exc is not None else status_code
            self.set_status(status)
            message = (exc.log_message if exc is not None and exc.log_message
                       else responses.get(status, "error"))
            body = {"error": {"code": _code_for(status), "message": message, "details": []}}
        else:
            self.set_status(500)
            body = {"error": {"code": "internal_error",
                              "message": "internal error; it has been logged", "details": []}}
        for name, value in self.error_extra().items():
            body["error"].setdefault(name, value)
        self.finish(json_body(body))

    def error_extra(self) -> dict[str, Any]:
        """Further members of every error object this handler answers (none by default)."""
        return {}

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Each failed request is logged at most once: an outage as one WARNING line, a
        bug (the 500s) at ERROR with its traceback, and reported when SENTRY_DSN is set.

        The request id is passed explicitly: a streamed body's errors are raised
        outside the request's task, where the context variable is not set.
        """
        extra = {"request_id": self.request_id, "route": self.route}
        if isinstance(value, PartiallyAccepted):  # logged as what caused it (a bug too)
            typ, value, tb = type(value.cause), value.cause, value.cause.__traceback__
        if isinstance(value, StoreUnavailable):
            log.warning("%s %s: %s", self.request.method, self.request.path, value,
                        extra=extra)
            return
        if isinstance(value, ServiceError | HttpError):
            return  # a client error, answered in full; not worth a log line
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
            return
        log.error("uncaught exception in %s %s", self.request.method, self.request.path,
                  exc_info=(typ, value, tb), extra=extra)
        error_reports.capture((typ, value, tb), self.request_id)

    # --- request helpers ------------------------------------------------------

    @staticmethod
    def path_id(text: str) -> int:
        """A positive 64-bit id from the URL; anything else is simply not found."""
        value = int(text) if text.isdigit() and len(text) <= 19 else 0
        if not 0 < value <= _INT64_MAX:
            raise NotFound("no such resource")
        return value

    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header, checked; None when absent (read once)."""
        key = self._idempotency_key
        if key is not _UNREAD:
            return key  # type: ignore[return-value]
        key = self.request.headers.get("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise BadParameter("header 'Idempotency-Key' must be 1 to 200 printable ASCII "
                               "characters", details=[{"field": "Idempotency-Key",
                                                       "message": "1..200 of [!-~]"}])
        self._idempotency_key = key
        return key

    def idempotency_ids(self, kind: str) -> KeyedIds | None:
        """Deterministic ids from the ``Idempotency-Key`` header (scoped to the token)."""
        key = self.idempotency_key()
        if key is None:
            return None
        assert self.identity is not None
        return KeyedIds(key, self.identity.token_hash, kind)

    async def hold_key(self, head: str, digest: str = "") -> tuple[Begun, KeyHold] | None:
        """Bind the ``Idempotency-Key`` (if any) to this request's fingerprint: ``head``
        (method, path and what else changes its meaning) and the body's ``digest``
        ('' while a streamed body is still unread).  See ``ingest/idempotency.py``."""
        key = self.idempotency_key()
        if key is None:
            return None
        assert self.identity is not None
        return await self.deps.idempotency.begin(self.identity.token_hash, key, head, digest)

    def write_replay(self, status: int, answer: Any) -> None:
        """Answer what the key's first request answered."""
        self.set_header("Idempotent-Replayed", "true")
        self.write_json(answer, status)

    def query_int(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not low <= int(raw) <= high:
            raise BadParameter(f"query parameter {name!r} must be an integer from {low} to "
                               f"{high}", details=[{"field": name,
                                                    "message": f"must be {low}..{high}"}])
        return int(raw)


@tornado.web.stream_request_body
class BodyHandler(BaseHandler):
    """Streams the request body into memory up to ``max_body_bytes``; 413 beyond.

    Subclasses set ``content_types`` and read ``self.body`` in their verb method.
    """

    content_types: tuple[str, ...] = ("application/json",)
    buffers_body = True  # holds the whole body until the verb method (bulk: a piece at a time)

    def max_body_bytes(self) -> int:
        return self.deps.settings.json_body_max_bytes

    async def prepare(self) -> None:
        self._before_body = True  # an answer now comes before the body was read
        limit = self.max_body_bytes()
        # Never let tornado answer an oversize body with its own bare 400.
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)  # tornado's server speaks HTTP/1.x
        connection.set_max_body_size(max(limit, 1) + 1)
        # The server's whole-body timeout is for bodies read whole; a streamed one may
        # take long (a large upload) and is cut only when idle (``_idle_due``).
        connection.set_body_timeout(None)  # type: ignore[arg-type]  # tornado reads None as "none"
        self._chunks: list[bytes] = []
        self._size = 0
        self._held = 0  # bytes of the process's body budget this request holds
        self._declared = False  # the whole Content-Length is held already
        self._watched = False  # among the process's open bodies (``idle_bodies.py``)
        self._busy_body = False  # a piece is being handled (not the client's idle time)
        await super().prepare()
        if self.request.method not in ("POST", "PUT", "PATCH", "DELETE"):
            self._before_body = False
            return
        media_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if self.request.method != "DELETE" or media_type:
            if media_type not in self.content_types:
                raise UnsupportedMediaType(
                    f"Content-Type must be {' or '.join(self.content_types)}",
                    details=[{"field": "Content-Type", "message": media_type or "missing"}])
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit}")
        if self.buffers_body and length is not None and length.isascii() and length.isdigit():
            self.hold_body(int(length))
            self._declared = True
        self._before_body = False
        self._last_byte = time.monotonic()
        self.deps.bodies.add(self)  # cut if idle HTTP_BODY_IDLE_S
        self._watched = True

    # --- the process's body budget and the idle cut -------------------------------

    def hold_body(self, size: int) -> None:
        """Count ``size`` bytes against the process's body budget; Overloaded past it."""
        serving, limit = self.deps.serving, self.deps.settings.http_bodies_max_bytes
        if serving.body_bytes + size > limit:
            raise Overloaded("the server holds as many request bodies as it may; retry "
                             "shortly", headers={"Retry-After": "1"})
        serving.body_bytes += size
        self._held += size

    def release_body(self, size: int | None = None) -> None:
        """Give back ``size`` held bytes (all of them when None)."""
        size = self._held if size is None else min(size, self._held)
        self.deps.serving.body_bytes -= size
        self._held -= size

    def cut_if_idle(self, now: float, idle_s: float) -> bool:
        """The idle sweep's question (``idle_bodies.py``): cut this body if no byte of
        it came for ``idle_s``; True once it is done with."""
        if self._finished or self.request.connection is None:
            return True
        if self._busy_body or now - self._last_byte < idle_s:
            return False
        self.refuse(BodyIdle(f"no byte of the body arrived for {idle_s:g} s; the "
                             f"connection is closed"))
        return True

    def _body_done(self) -> None:
        if self._watched:
            self._watched = False
            self.deps.bodies.discard(self)

    def on_finish(self) -> None:
        if hasattr(self, "_held"):
            self._body_done()
            self.release_body()
        super().on_finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Answered before the body was read (refused in prepare or mid-stream),
        # tornado closes the connection once the answer is sent; say so, or a
        # keep-alive client would send its next request into a closing socket.
        if getattr(self, "_before_body", False):
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    def count_body(self, chunk: bytes) -> None:
        """Add ``chunk`` to the body size; PayloadTooLarge once past the limit."""
        self._last_byte = time.monotonic()
        self._size += len(chunk)
        if self._size > self.max_body_bytes():
            raise PayloadTooLarge(f"body exceeds the limit of {self.max_body_bytes()} bytes")

    def data_received(self, chunk: bytes) -> Any:
        if self._finished:
            return None
        try:
            self.count_body(chunk)
            if not self._declared:  # no Content-Length (chunked): held as it arrives
                self.hold_body(len(chunk))
        except (PayloadTooLarge, Overloaded) as exc:
            self.refuse(exc)
            return None
        self._chunks.append(chunk)
        return None

    def refuse(self, exc: BaseException) -> None:
        """Answer now, mid-body; the verb method will then see the request finished.

        ``exc`` is mapped like any other error (domain, HTTP, or a bug).
        """
        self._chunks.clear()
        self._before_body = True  # the rest of it will not be read
        self.log_exception(type(exc), exc, exc.__traceback__)
        self.send_error(500, exc_info=(type(exc), exc, exc.__traceback__))

    async def post(self, *args: str) -> None:
        self._body_done()
        if not self._finished:
            await self.post_body(*args)

    async def delete(self, *args: str) -> None:
        self._body_done()
        if not self._finished:
            await self.delete_body(*args)

    # ``*args: Any, **kwargs: Any``: a subclass takes what its route captures, as a
    # tornado verb method does (the type checker lets any signature override this one).
    async def post_body(self, *args: Any, **kwargs: Any) -> None:
        raise tornado.web.HTTPError(405)

    async def delete_body(self, *args: Any, **kwargs: Any) -> None:
        raise tornado.web.HTTPError(405)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)


class NotFoundHandler(BaseHandler):
    """Every unrouted path: a 404 in the error shape."""

    def prepare(self) -> None:  # type: ignore[override]  # tornado's prepare may be sync
        raise NotFound(f"no route for {self.request.path}")
