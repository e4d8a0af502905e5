"""Every answer's headers: tornado's (Server, Date), then ours (the request id,
JSON, no-store) — set by ``BaseHandler.clear``, a cheaper copy of tornado's that
must stay equal to it, for answers and for error answers alike."""

from __future__ import annotations

import email.utils
import time

import tornado.web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from server.handlers.base import BaseHandler
from tests.support import Api


def _cleared(clear: object) -> tuple[set[str], dict[str, str]]:
    """The attributes and headers a bare BaseHandler has after ``clear(handler)``."""
    handler = BaseHandler.__new__(BaseHandler)
    handler.request = HTTPServerRequest(
        start_line=RequestStartLine("GET", "/", "HTTP/1.1"), headers=HTTPHeaders({"Host": "x"}))
    clear(handler)  # type: ignore[operator]
    return set(vars(handler)), dict(handler._headers.get_all())


def test_clear_leaves_what_tornados_clear_leaves() -> None:
    ours_attributes, ours = _cleared(BaseHandler.clear)
    # Tornado's own clear() on the same class: it then calls our set_default_headers.
    their_attributes, theirs = _cleared(tornado.web.RequestHandler.clear)
    assert ours_attributes == their_attributes
    assert ours.keys() == theirs.keys()
    assert {k: v for k, v in ours.items() if k not in ("Date", "X-Request-Id")} == \
        {k: v for k, v in theirs.items() if k not in ("Date", "X-Request-Id")}
    assert (_cleared(BaseHandler.clear)[1]["Date"]  # the same format, the same second
            in (theirs["Date"], email.utils.formatdate(time.time(), usegmt=True)))


async def test_answers_and_error_answers_carry_the_date_of_now_and_our_headers(
        api: Api) -> None:
    for path, status in (("/health", 200), ("/v1/nowhere", 404)):
        before = time.time()
        response = await api.response("GET", path, headers={"X-Request-ID": "req-7"})
        assert response.code == status
        headers = response.headers
        sent = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
        assert int(before) <= sent <= time.time() + 1
        assert headers["Server"].startswith("TornadoServer/")
        assert headers["X-Request-ID"] == "req-7"
        assert headers["Content-Type"] == "application/json; charset=UTF-8"
        assert headers["Cache-Control"] == "no-store"
