"""Background tasks that die are seen: logged once with a traceback, counted, restarted."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.queue import keys
from server.runtime.lifecycle import Service
from server.supervisor import Supervisor
from tests.support import Api


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
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not supervisor.ok  # down, waiting for its restart
        for _ in range(100):
            if runs == 2:
                break
            await asyncio.sleep(0.01)
    assert runs == 2 and supervisor.ok
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
    cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor.start("stubborn", stubborn)
    await asyncio.sleep(0)
    await supervisor.stop(0.05)
    assert cancelled.is_set() and not supervisor.has("stubborn")


async def plant_chunk(service: Service, payload: bytes,
                      chunk_id: str = "00000000000000000000000000000000-1") -> None:
    """Put a chunk in the queue as a buggy (or older) producer might have."""
    redis = service.deps.redis
    await redis.hset(keys.ITEMS, chunk_id, payload)
    await redis.rpush(keys.READY, chunk_id)
    await redis.hincrby(keys.STATS, "ready", 1)


async def test_ready_reports_workers_not_ok_while_a_dead_worker_waits_to_restart(
        api: Api, service: Service) -> None:
    workers = service.deps.workers
    workers.supervisor.restart_base_s = 30.0  # keep it down long enough to look
    # A chunk whose point has too few fields (no producer of ours writes one): the
    # worker that writes it fails in a way the code does not expect, and dies.
    await plant_chunk(service, b'{"a":0,"p":[["short",1]],"f":null,"e":null}')
    workers.start(1)
    for _ in range(200):
        if workers.supervisor.restarts_total:
            break
        await asyncio.sleep(0.01)
    assert workers.supervisor.restarts_total == 1
    status, body = await api.get("/ready", token=None)
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
    for _ in range(100):
        if runs == 2:
            break
        await asyncio.sleep(0.01)
    assert runs == 2 and supervisor.restarts_total == 1 and supervisor.ok
    release.set()
    await supervisor.stop(1.0)
