"""The bare stack's own ceiling, measured in every run: what this machine allows today.

These machines drift (the same bare handler has answered 8.1k and 3.3k POST/s
on different days), so absolute rates from two days do not compare.  Every
bench run therefore first measures a bare tornado + uvloop handler — it reads
a small JSON body and answers 202 with a small JSON body, nothing else — at 100
keep-alive connections with the same generator the scenario uses, and records
its POST/s.  Thresholds can be written against it (``> 0.75 × baseline``), and
figures from two days compare as fractions of it.

The bare server runs in its own process (``python -m harness.baseline PORT``),
started and stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

from harness.httpclient import Connection, HttpError, build_request
from server.embedded import free_port

CONNECTIONS = 100
SECONDS = 3.0
BODY = b'{"competition_id":1,"participant_id":1,"value":1.5}'


def _serve(port: int) -> None:
    import tornado.web
    import uvloop

    class Bare(tornado.web.RequestHandler):
        def post(self) -> None:
            if not self.request.body:
                raise tornado.web.HTTPError(400)
            self.set_status(202)
            self.set_header("Content-Type", "application/json")
            self.finish(b'{"accepted":1}')

    async def main() -> None:
        app = tornado.web.Application([(r"/bare", Bare)])
        app.listen(port, "127.0.0.1", backlog=4096)
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


async def post_rate(url: str, connections: int = CONNECTIONS, seconds: float = SECONDS,
                    body: bytes = BODY, token: str | None = None) -> float:
    """POSTs per second answered 2xx, closed loop on ``connections`` connections."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request = build_request("POST", url, body=body, token=token)
    end = time.perf_counter() + seconds
    count = 0

    async def client() -> None:
        nonlocal count
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        with contextlib.suppress(HttpError, OSError):
            while time.perf_counter() < end:
                status, _ = await conn.request(request)
                count += 200 <= status < 300
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return count / (time.perf_counter() - started)


def measure(seconds: float = SECONDS) -> float:
    """Start the bare server, measure its POST/s, stop it; returns POST/s."""
    import uvloop

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harness.baseline", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the bare baseline server did not start")
        url = f"http://127.0.0.1:{port}/bare"
        uvloop.run(post_rate(url, seconds=0.5))  # warm-up: connections, caches
        return uvloop.run(post_rate(url, seconds=seconds))
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
