"""The HTTP listener: tornado's ``HTTPServer`` at less cost per request.

Two things tornado does on every request are done here once per connection, or
once per sweep, instead — together about 6% of a one-point POST's CPU here:

* **TCP_NODELAY, set once.**  Tornado turns Nagle's algorithm off before each
  response's last write and on again once it is sent (``HTTP1Connection.finish``
  and ``_finish_request``): two ``setsockopt`` calls per request.  Every answer
  of this service is written whole when its handler finishes (none streams), so
  Nagle never has small writes to gather: a connection keeps ``TCP_NODELAY`` on
  from its first byte, as most servers do, and the per-request toggles are skipped.
* **The idle-connection timeout, swept.**  Tornado bounds the wait for each
  request's headers (``idle_connection_timeout``) with a timer per request
  (``gen.with_timeout``).  Here each connection's current request and the
  start of its wait are stamped on it (``start_request``, where tornado starts
  that wait), and one timer per listener closes the connections still waiting
  for headers past the timeout (tornado has parsed none yet for the request):
  an idle keep-alive connection, or one whose headers never complete, is
  closed between ``idle_connection_timeout`` and that plus a quarter of it (at
  most 5 s) — never one whose request has begun (its body is
  ``HTTP_BODY_IDLE_S``'s).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import tornado.httpserver
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.iostream import IOStream

# A stream's attribute: (its current request's HTTP1Connection, when it began waiting).
_WAIT = "_points_waiting"


def _kept(value: bool) -> None:
    """A connection's ``set_nodelay``: it was set on for good when it opened."""


class Listener(tornado.httpserver.HTTPServer):
    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        # Tornado's header timeout: idle_connection_timeout (an hour when not given).
        idle_s = self.conn_params.header_timeout
        assert idle_s is not None
        self.conn_params.header_timeout = None  # kept by the sweep instead
        self.idle_s = idle_s
        self.sweep_s = min(5.0, idle_s / 4)
        self._sweeper: asyncio.TimerHandle | None = None

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        stream.set_nodelay(True)
        stream.set_nodelay = _kept  # type: ignore[method-assign]
        super().handle_stream(stream, address)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.sweep_s, self._sweep)

    def start_request(self, server_conn: object,
                      request_conn: Any) -> Any:  # tornado's HTTPMessageDelegate
        if isinstance(request_conn, HTTP1Connection):
            setattr(request_conn.stream, _WAIT, (request_conn, time.monotonic()))
        return super().start_request(server_conn, request_conn)

    def _sweep(self) -> None:
        self._sweeper = None
        if not self._connections:
            return  # the next connection starts the timer again
        now = time.monotonic()
        for connection in list(self._connections):
            assert isinstance(connection, HTTP1ServerConnection)
            waiting = getattr(connection.stream, _WAIT, None)
            if waiting is None:
                continue
            request, since = waiting
            # No start line parsed yet: still waiting for this request's headers.
            if request._request_start_line is None and now - since >= self.idle_s:
                connection.stream.close()  # tornado's own end for a header timeout
        self._sweeper = asyncio.get_running_loop().call_later(self.sweep_s, self._sweep)

    async def close_all_connections(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().close_all_connections()
