"""The directory through which ``run.py serve``'s processes share their metrics.

prometheus_client decides once, when it is first imported, whether metric
values live in the process's memory or in per-process files under
``PROMETHEUS_MULTIPROC_DIR`` that any process can merge.  ``serve`` therefore
sets the variable before anything imports the server (which imports
``server/metrics.py``, the one importer of prometheus_client), and the
processes it forks inherit it: whichever of them answers ``/metrics`` reports
them all.

The directory is private to one ``serve``: a fresh temporary directory named
after its pid, removed when ``serve`` exits; one left behind by a ``serve``
killed with -9 is removed by the next ``serve`` to start.  This module must not
import prometheus_client, nor anything that does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "points-metrics-"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[Path | None]:
    """``PROMETHEUS_MULTIPROC_DIR`` set to a fresh private directory for the block.

    Yields None, and sets nothing, when prometheus_client is already imported
    (the server was imported in-process, as by a test): its values stay in
    memory, and each process would report only itself.
    """
    if "prometheus_client" in sys.modules:
        log.warning("prometheus_client was imported before the metrics directory was set "
                    "up: with --processes N, /metrics reports only the process answering")
        yield None
        return
    _remove_orphans()
    previous = os.environ.get(ENV)
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-") as path:
        os.environ[ENV] = path
        try:
            yield Path(path)
        finally:
            if previous is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = previous


def _remove_orphans() -> None:
    """Remove the directories of ``serve`` processes that are gone (killed with -9)."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)  # another user's stays: not ours


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. access denied: it exists
        return True
