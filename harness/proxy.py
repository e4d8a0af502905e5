"""A loopback TCP proxy that can silently black-hole the connections it carries.

``blackhole()`` makes every connection open at that moment go silent in both
directions — bytes are read and dropped, nothing is closed, no FIN and no RST —
as when a NAT entry or a firewall state is lost mid-flow; ``blackhole(replies_only=True)``
silences only the server's replies (a call runs, its caller never hears of it).  Connections opened
afterwards are carried normally, unless ``hold=True``: then every connection
accepted until ``release()`` is silent from its first byte too (a partition
that lasts, not one instant's loss: a client that reconnects meets the same
silence).  ``release()`` ends the fault: it closes every silenced flow on both
sides (their peers see them end, as when the state that swallowed them is
finally dropped) and carries new connections normally again.

``BlackHoleProxy`` lives on the caller's event loop (the test suite's async
tests).  ``ThreadedProxy`` runs one on an event loop of its own in a daemon
thread, for a synchronous caller (the chaos stack and its nemesis thread): every
method blocks until the loop has done it.  Only 127.0.0.1; closed by its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
_READ = 65536


class _Flow:
    """One carried connection: its two writers and whether (and how) it is silenced."""

    __slots__ = ("silent", "writers")

    def __init__(self, writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
                 silent: bool | str = False) -> None:
        self.writers = writers
        self.silent: bool | str = silent  # False, True (both ways) or "replies"

    def closed(self) -> bool:
        return all(writer.is_closing() for writer in self.writers)


class BlackHoleProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self._flows: list[_Flow] = []
        self._tasks: set[asyncio.Task] = set()
        self._hold: bool | str = False  # how a connection accepted now is silenced
        self.blackholed = 0  # connections silenced so far

    async def start(self) -> BlackHoleProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, template: str) -> str:
        """``template`` with ``{port}`` replaced by this proxy's port."""
        return template.format(port=self.port)

    def retarget(self, host: str, port: int) -> None:
        """Carry new connections to ``host:port`` (a store restarted on another port)."""
        self.target = (host, port)

    def blackhole(self, *, replies_only: bool = False, hold: bool = False) -> None:
        """Silence every connection carried now; later ones pass unless ``hold``.

        ``replies_only``: requests still reach the server, its replies are dropped —
        a call that ran, whose caller cannot know it did.  ``hold``: connections
        accepted from now until ``release()`` are silenced the same way.
        """
        how: bool | str = "replies" if replies_only else True
        for flow in self._flows:
            if not flow.silent:
                flow.silent = how
                self.blackholed += 1
        if hold:
            self._hold = how

    def release(self) -> int:
        """End the black hole: close every silenced flow (both sides) and carry new
        connections normally.  Returns how many flows it closed."""
        self._hold = False
        closed = 0
        for flow in self._flows:
            if flow.silent:
                for writer in flow.writers:
                    writer.close()
                closed += 1
        self._prune()
        return closed

    def _prune(self) -> None:
        self._flows = [flow for flow in self._flows if not flow.closed()]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        self._prune()  # a long run opens many connections: keep only the live ones
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        flow = _Flow((writer, up_writer), self._hold)
        if self._hold:
            self.blackholed += 1
        self._flows.append(flow)
        for source, sink, replies in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.ensure_future(self._pump(source, sink, flow, replies))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    flow: _Flow, replies: bool) -> None:
        def silent() -> bool:
            return flow.silent is True or (replies and flow.silent == "replies")

        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(_READ):
                if not silent():
                    sink.write(data)
                    await sink.drain()
        if not flow.silent:  # a real close is passed on; a silenced flow stays open
            sink.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for flow in self._flows:
            for writer in flow.writers:
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class ThreadedProxy:
    """A ``BlackHoleProxy`` on its own event loop in a daemon thread.

    For synchronous callers: ``start()``, ``blackhole()``, ``release()``,
    ``retarget()`` and ``close()`` block until done on the proxy's loop (at most
    ``timeout_s``), so a caller knows the fault is in place when the call returns.
    """

    def __init__(self, target_host: str, target_port: int, *, timeout_s: float = 10) -> None:
        self.proxy = BlackHoleProxy(target_host, target_port)
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"proxy->{target_port}")

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def blackholed(self) -> int:
        return self.proxy.blackholed

    def url(self, template: str) -> str:
        return self.proxy.url(template)

    def start(self) -> ThreadedProxy:
        self._thread.start()
        self._run(self.proxy.start())
        return self

    def blackhole(self, *, replies_only: bool = False, hold: bool = False) -> None:
        self._call(lambda: self.proxy.blackhole(replies_only=replies_only, hold=hold))

    def release(self) -> int:
        return self._call(self.proxy.release)

    def retarget(self, host: str, port: int) -> None:
        self._call(lambda: self.proxy.retarget(host, port))

    def close(self) -> None:
        """Close the proxy and its flows, then stop and close the loop (idempotent)."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(TimeoutError):
                self._run(self.proxy.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.timeout_s)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout_s)

    def _call(self, func: Callable[[], T]) -> T:
        """``func()`` on the proxy's loop; its result (or its exception) here."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(func())
            except BaseException as exc:  # handed to the caller
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(self.timeout_s)
