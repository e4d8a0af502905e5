"""Work around an aiopg bug that breaks the event loop under uvloop after a failed connect.

When a connection attempt fails while aiopg is waiting for the socket to be
writable (PostgreSQL down: "connection refused"), ``Connection._ready`` forgets
the file descriptor without removing its *writer* from the loop.  libpq has
already closed the socket, so the next socket to get that fd number — an
accepted HTTP connection, say — finds uvloop's stale, closed poll handle and
fails with "unable to perform operation on <UVPoll closed=True>".  The asyncio
selector loop tolerates this; uvloop does not.  We remove the stale writer
right after aiopg gives up on the fd.  Applied once, at import.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiopg.connection import Connection

_original_ready = Connection._ready


def _ready(weak_self: Any) -> None:
    self = weak_self()
    if self is None:
        return
    fileno, writing = self._fileno, self._writing
    _original_ready(weak_self)
    if writing and fileno is not None and self._fileno is None:
        with contextlib.suppress(Exception):
            self._loop.remove_writer(fileno)


if not getattr(Connection._ready, "_points_patched", False):
    _ready._points_patched = True  # type: ignore[attr-defined]  # a mark: patch once
    Connection._ready = staticmethod(_ready)  # type: ignore[method-assign]  # the patch itself
