"""``run.py serve``: the two lifecycle stages run in one process, or in N forked ones.

With ``--processes N`` the parent prepares everything before the fork (stores,
migrations, admin token, the listening sockets: ``lifecycle.prepared``), forks N
children that each run ``lifecycle.running_service`` on their own event loop and
pools, and supervises them (``supervise.py``): a child that dies is replaced,
SIGTERM/SIGINT are forwarded to all; the stores are stopped by the parent,
after the last child.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import traceback
from contextlib import AsyncExitStack

import uvloop

from server.config import Settings
from server.embedded import EmbeddedStores
from server.embedded.control import exit_line
from server.errors import StoreUnavailable
from server.ops import error_reports
from server.ops.logs import configure_logging
from server.runtime.lifecycle import running_service
from server.runtime.prepare import Prepared, StartupError, prepared
from server.runtime.supervise import Supervisor


def serve(settings: Settings) -> int:
    """``run.py serve``: prepare, then serve in one process or fork ``processes``.

    Its last line says what became of the embedded stores: those it stopped, and
    those it leaves running (it reused them) with the command that stops them
    (``embedded/control.py``).  Only the parent says it: a fork never unwinds
    stage 1.
    """

    def say_what_is_left(stores: EmbeddedStores) -> None:
        line = exit_line(stores, settings.data_dir)
        if line is not None:
            with contextlib.suppress(OSError):  # stdout closed (a pipe nobody reads)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    with prepared(settings, on_stop=say_what_is_left) as ready:
        if settings.processes == 1:
            return serve_process(settings, ready)
        return _fork_and_wait(settings, ready)


def serve_process(settings: Settings, ready: Prepared) -> int:
    """Serve until SIGTERM/SIGINT on this process's own event loop."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        redis_url = ready.stores.redis_url
        assert redis_url is not None
        async with AsyncExitStack() as stack:
            try:
                service = await stack.enter_async_context(running_service(
                    settings, ready.stores.database_url, redis_url, sockets=ready.sockets))
            except StoreUnavailable as exc:
                raise StartupError(str(exc)) from exc
            quiet_garbage_collector()
            # One write, newline included: N forked processes share this pipe, and
            # a line split in two writes can be interleaved with another's.
            sys.stdout.write(f"listening on http://{settings.address}:{service.port} "
                             f"(pid {os.getpid()}, ingest path {settings.ingest_path})\n")
            sys.stdout.flush()
            await stop.wait()
        return 0

    # Per process, not before the fork: the SDK's sender is a thread.
    error_reports.init(settings)
    try:
        return uvloop.run(main())
    finally:
        error_reports.close()


def quiet_garbage_collector() -> None:
    """Fewer, shorter pauses of the cyclic garbage collector on the one event loop.

    Measured under a batch burst, collections of the older generations paused the
    loop for 15-57 ms at a time (they traverse every long-lived object: modules,
    classes, pools).  Everything alive once the service is up is frozen out of
    collection (``gc.freeze``), and young collections run after 10,000 net
    allocations instead of 700, so older ones run far less often; reference
    counting still frees almost everything at once.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def _fork_and_wait(settings: Settings, ready: Prepared) -> int:
    """Fork ``processes`` children on the bound sockets and supervise them
    (``runtime/supervise.py``: replaced when they die, all stopped on SIGTERM).

    A child never unwinds stage 1 (``os._exit`` in the supervisor): the stores
    and sockets are the parent's to close.
    """

    def run_child(number: int) -> int:
        try:
            configure_logging(settings, process=number)  # its own log files
            return serve_process(settings, ready)
        except StartupError as exc:
            print(f"error: {exc}", flush=True)
        except BaseException:  # a child's last word before os._exit
            traceback.print_exc()
        return 1

    return Supervisor(settings.processes, run_child,
                      deaths_max=settings.process_deaths_max,
                      deaths_window_s=settings.process_deaths_window_s).run()
