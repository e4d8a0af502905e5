"""The listener (``server/runtime/listener.py``) keeps tornado's promises at less cost:
TCP_NODELAY stays on for every request, and a connection that waits for headers
past the idle timeout is closed — an idle keep-alive one or a half-sent header
block — while one whose request is being handled is not."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import tornado.netutil
import tornado.web

from server.runtime.listener import Listener
from tests.support import until

IDLE_S = 0.4  # the sweep then looks every 0.1 s


class _NoDelay(tornado.web.RequestHandler):
    """Answers whether its connection has TCP_NODELAY on while it is handled."""

    def get(self) -> None:
        stream = self.request.connection.stream  # type: ignore[union-attr]
        self.write(str(stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))


class _Slow(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(IDLE_S * 3)
        self.write("done")


@contextlib.asynccontextmanager
async def _connected() -> AsyncIterator[tuple[Listener, asyncio.StreamReader,
                                              asyncio.StreamWriter]]:
    """A listener (idle timeout ``IDLE_S``) and one client connection to it; both
    closed after."""
    server = Listener(tornado.web.Application([("/nodelay", _NoDelay), ("/slow", _Slow)]),
                      idle_connection_timeout=IDLE_S)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    reader, writer = await asyncio.open_connection("127.0.0.1", sockets[0].getsockname()[1])
    try:
        yield server, reader, writer
    finally:
        writer.close()
        server.stop()
        await server.close_all_connections()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               path: str) -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def _closed_by_server(reader: asyncio.StreamReader) -> float:
    """Seconds until the server closes the connection (EOF), waiting at most 5 s."""
    start = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    return time.monotonic() - start


async def test_tcp_nodelay_stays_on_for_every_request_of_a_connection() -> None:
    async with _connected() as (_, reader, writer):
        # Tornado would turn it off again after each answer: the second would see 0.
        assert [await _get(reader, writer, "/nodelay") for _ in range(3)] == [b"1"] * 3


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    async with _connected() as (_, reader, writer):
        assert await _get(reader, writer, "/nodelay") == b"1"
        waited = await _closed_by_server(reader)
        assert IDLE_S * 0.9 <= waited <= IDLE_S * 1.25 + 0.5, waited


async def test_a_header_block_that_never_completes_is_closed_after_the_idle_timeout() -> None:
    async with _connected() as (_, reader, writer):
        writer.write(b"GET /nodelay HTTP/1.1\r\nHost: x\r\n")  # no blank line: never complete
        await writer.drain()
        waited = await _closed_by_server(reader)
        assert IDLE_S * 0.9 <= waited <= IDLE_S * 1.25 + 0.5, waited


async def test_a_connection_whose_request_is_handled_past_the_timeout_is_kept() -> None:
    async with _connected() as (server, reader, writer):
        assert await _get(reader, writer, "/slow") == b"done"  # 3× the idle timeout
        # And it is idle again after: closed in its turn.
        await _closed_by_server(reader)
        await until(lambda: not server._connections, "the listener forgot the connection",
                    timeout_s=5)
