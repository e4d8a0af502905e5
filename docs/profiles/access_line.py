"""What one access line costs: the request-finished hook's logging part, called N times
on a fake finished request, in this process alone (no server, no client).

Why outside the server: on a shared 2-core machine a wrk run's figure drifts by more
than the ~10 µs at stake; one process calling ``log_request`` N times and reading its
own CPU clock (every thread: a writer thread's work counts too) does not.  The lines
go where a default ``serve`` sends them — stderr (redirect it: ``2>/dev/null`` or
``2>file``) and, with ``--log-dir``, ``app.log`` too — and every line is written
before the clock stops (the access log is flushed and closed first).

Usage (from the repository root, or with PYTHONPATH at another checkout to measure
its code the same way):

    python docs/profiles/access_line.py [-n 200000] [--log-dir DIR] 2>/dev/null

Prints ``µs/request cpu=… wall=…`` on stdout.  Interleave before and after
(A B A B …) to compare them on a busy machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from server.config import Settings
from server.ops import logs


class _Request:
    method = "POST"
    path = "/v1/points"
    remote_ip = "127.0.0.1"

    def request_time(self) -> float:
        return 0.000731


class _Handler:
    """What the hook reads of a finished tornado handler."""

    route = "/v1/points"
    request = _Request()

    def __init__(self, n: int) -> None:
        self.request_id = f"5f0c6a1e9b2d4c7a{n:016x}"

    def get_status(self) -> int:
        return 202


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--log-dir", type=Path)
    args = parser.parse_args()
    logs.configure_logging(Settings(log_dir=args.log_dir, log_format="json"))
    handlers = [_Handler(n) for n in range(1000)]
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(args.n):
        logs.log_request(handlers[n % 1000])
    close = getattr(logs, "close_access_log", None)  # the buffered access log
    if close is not None:
        close()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"µs/request cpu={cpu / args.n * 1e6:.2f} wall={wall / args.n * 1e6:.2f}")


if __name__ == "__main__":
    main()
