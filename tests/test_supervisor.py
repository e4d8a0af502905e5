"""Background tasks that die are seen: logged once with a traceback, counted, restarted."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.runtime.lifecycle import Service
from server.supervisor import Supervisor
from tests.support import Api, plant_chunk, until


async def test_a_task_that_raises_is_logged_once_counted_and_restarted(
        caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(restart_base_s=0.05)
    runs = 0
    release = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("first run breaks")
        await release.wait()

    with caplog.at_level(logging.ERROR, logger="server.supervisor"):
        supervisor.start("flaky", flaky)
        await until(lambda: not supervisor.ok, "the task down, waiting for its restart")
        assert runs == 1
        await until(lambda: runs == 2, "the task restarted")
    assert supervisor.ok
    (task,) = supervisor.describe()
    assert (task["running"], task["restarts"]) == (True, 1)
    assert task["last_error"] == "ValueError: first run breaks"
    deaths = [r for r in caplog.records if "flaky died" in r.getMessage()]
    assert len(deaths) == 1 and deaths[0].exc_info is not None  # once, with its traceback
    release.set()
    await supervisor.stop(1.0)
    assert supervisor.restarts_total == 1


async def test_stop_cancels_a_task_that_does_not_finish_in_time() -> None:
    supervisor = Supervisor()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor.start("stubborn", stubborn)
    await asyncio.wait_for(started.wait(), 5)  # running, so the cancel lands in its sleep
    await supervisor.stop(0.05)
    assert cancelled.is_set() and not supervisor.has("stubborn")


async def test_ready_reports_workers_not_ok_while_a_dead_worker_waits_to_restart(
        api: Api, service: Service) -> None:
    workers = service.deps.workers
    workers.supervisor.restart_base_s = 30.0  # keep it down long enough to look
    # A chunk whose point has too few fields (no producer of ours writes one): the
    # worker that writes it fails in a way the code does not expect, and dies.
    await plant_chunk(service, b'{"a":0,"p":[["short",1]],"f":null,"e":null}')
    workers.start(1)
    await until(lambda: workers.supervisor.restarts_total, "the worker's death seen")
    assert workers.supervisor.restarts_total == 1
    status, body = await api.get("/ready")  # the details: admin
    assert body["checks"]["workers"]["ok"] is False
    assert body["checks"]["workers"]["down"] == ["worker-0"]
    assert (status, body["status"]) == (200, "degraded")


async def test_a_stray_cancellation_from_below_is_a_failure_not_a_stop() -> None:
    supervisor = Supervisor(restart_base_s=0.01)
    runs = 0
    release = asyncio.Event()

    async def cancelled_from_below() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError()  # as aiopg raises when a statement times out
        await release.wait()

    supervisor.start("stray", cancelled_from_below)
    await until(lambda: runs == 2, "the task restarted after the stray cancellation")
    assert supervisor.restarts_total == 1 and supervisor.ok
    release.set()
    await supervisor.stop(1.0)
