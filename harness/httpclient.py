"""A minimal keep-alive HTTP/1.1 client on asyncio protocols, built for load generation.

Why not tornado's or another general client: the generator must not be the
bottleneck, and a general client spends more CPU per request than the server
under test spends answering ``/health``.  This one sends pre-built request bytes
and parses only what the server sends (status line, ``Content-Length``), which is
all a load test needs.  Measured against ``wrk`` in the README.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from urllib.parse import urlsplit

REQUEST_TIMEOUT_S = 120.0  # a request unanswered this long is a failure (599)


class HttpError(Exception):
    pass


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP connection's transport writes, but is typed BaseTransport; uvloop's is no
        # asyncio.Transport subclass, so an isinstance check would refuse it.
        self.transport = transport  # type: ignore[assignment]  # TCP's: writable

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()  # never leave a writer waiting on a dead connection
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._try_complete()

    def _try_complete(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        status_code = int(head[9:12])
        if length is None:
            if status_code in (204, 304) or 100 <= status_code < 200:
                length = 0
            else:
                # Chunked or close-delimited bodies are not expected from the server
                # under test; refuse rather than misread the next response.
                waiter.set_exception(HttpError("response without Content-Length"))
                if self.transport is not None:
                    self.transport.close()
                return
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = status_code
        body = bytes(self.buffer[end + 4:total])
        del self.buffer[:total]
        close = b"connection: close" in head.lower()
        waiter.set_result((status, body, close))


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.proto: _Protocol | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.proto is not None and self.proto.buffer:
            self.close()  # bytes nobody asked for: never hand them to this request
        if self.proto is None or self.proto.closed:
            loop = asyncio.get_running_loop()
            _, proto = await loop.create_connection(_Protocol, self.host, self.port)
            self.proto = proto
        proto = self.proto
        proto.waiter = asyncio.get_running_loop().create_future()
        assert proto.transport is not None
        proto.transport.write(data)
        try:
            status, body, close = await asyncio.wait_for(proto.waiter, REQUEST_TIMEOUT_S)
        except (HttpError, TimeoutError) as exc:
            self.close()
            raise HttpError(str(exc) or "request timed out") from None
        if close:
            self.close()
        return status, body

    async def stream(self, head: bytes, pieces: Iterable[bytes]) -> tuple[int, bytes]:
        """Send ``head`` then each piece (chunked encoding), awaiting the response."""
        if self.proto is None or self.proto.closed:
            loop = asyncio.get_running_loop()
            _, self.proto = await loop.create_connection(_Protocol, self.host, self.port)
        proto = self.proto
        proto.waiter = asyncio.get_running_loop().create_future()
        assert proto.transport is not None
        proto.transport.write(head)
        for piece in pieces:
            if proto.waiter.done():
                break  # the server answered early (e.g. 413)
            proto.transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            # Back-pressure: the transport pauses us while the server reads slower
            # than we generate (asyncio's pause_writing/resume_writing).
            await proto.writable.wait()
        else:
            proto.transport.write(b"0\r\n\r\n")
        try:
            status, body, _ = await asyncio.wait_for(proto.waiter, REQUEST_TIMEOUT_S)
        except TimeoutError:
            self.close()
            raise HttpError("request timed out") from None
        return status, body

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()
        self.proto = None


def build_request(method: str, url: str, *, token: str | None = None,
                  body: bytes | None = None, content_type: str = "application/json") -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def build_stream_head(url: str, token: str, content_type: str) -> bytes:
    parts = urlsplit(url)
    return (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
