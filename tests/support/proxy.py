"""A loopback TCP proxy that can silently black-hole the connections it carries.

``blackhole()`` makes every connection open at that moment go silent in both
directions — bytes are read and dropped, nothing is closed, no FIN and no RST —
as when a NAT entry or a firewall state is lost mid-flow; ``blackhole(replies_only=True)``
silences only the server's replies (a call runs, its caller never hears of it).  Connections opened
afterwards are carried normally.  Only 127.0.0.1; closed by its owner.
"""

from __future__ import annotations

import asyncio
import contextlib


class BlackHoleProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self._flows: list[dict[str, object]] = []
        self._tasks: set[asyncio.Task] = set()
        self.blackholed = 0  # connections silenced so far

    async def start(self) -> BlackHoleProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, template: str) -> str:
        """``template`` with ``{port}`` replaced by this proxy's port."""
        return template.format(port=self.port)

    def blackhole(self, *, replies_only: bool = False) -> None:
        """Silence every connection carried now; later ones pass.

        ``replies_only``: requests still reach the server, its replies are dropped —
        a call that ran, whose caller cannot know it did.
        """
        for flow in self._flows:
            if not flow["silent"]:
                flow["silent"] = "replies" if replies_only else True
                self.blackholed += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        flow: dict[str, object] = {"silent": False, "writers": (writer, up_writer)}
        self._flows.append(flow)
        for source, sink, replies in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.ensure_future(self._pump(source, sink, flow, replies))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    flow: dict[str, object], replies: bool) -> None:
        def silent() -> bool:
            return flow["silent"] is True or (replies and flow["silent"] == "replies")

        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                if not silent():
                    sink.write(data)
                    await sink.drain()
        if not flow["silent"]:  # a real close is passed on; a silenced flow stays open
            sink.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for flow in self._flows:
            for writer in flow["writers"]:  # type: ignore[union-attr]
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
