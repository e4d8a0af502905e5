"""The read replica (``DATABASE_READ_URL``), on a real streaming replica of the test's own
PostgreSQL (``tests/support/replica.py``: ``pg_basebackup -R``, a hot standby).

That a read came from the replica is shown by what it cannot know: while the
replica's replay is paused (``pg_wal_replay_pause()``), a point the primary has
committed is missing from a read the replica serves, and appears once replay
resumes.  Writes and token lookups never go there: a token added to the primary
during the pause works at once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import jsonschema_rs
import psycopg2
import pytest

from server import schemas
from server.access.auth import hash_token
from server.embedded.processes import free_port
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from server.storage.database import open_database
from tests.support import Api, make_settings, seed, serving, sql, until
from tests.support.replica import Replica, replica_of

NEW_TOKEN = "pts_" + "n" * 43  # issued on the primary while the replica is paused


@pytest.fixture
def replica(own: Stores, tmp_path: Path) -> Iterator[Replica]:
    with replica_of(own.database_url, tmp_path / "replica") as running:
        yield running


async def _committed(api: Api, cid: int, participant: int, point_id: str, value: float
                     ) -> None:
    status, body = await api.post("/v1/points?ack=committed", {"points": [
        {"id": point_id, "competition_id": cid, "participant_id": participant,
         "value": value}]})
    assert status == 201 and body["committed"], body


async def _point_status(api: Api, cid: int, point_id: str) -> int:
    return (await api.get(f"/v1/competitions/{cid}/points/{point_id}"))[0]


async def _started(service: Service, api: Api, replica: Replica, own: Stores
                   ) -> tuple[int, list[int]]:
    """A competition with one committed, folded point, replayed on the replica, and
    reads going there."""
    cid, parts = await seed(api, participants=2)
    await _committed(api, cid, parts[0], "first", 1)
    await until(lambda: sql(own, "SELECT count(*) FROM standing_deltas") == [(0,)]
                and sql(own, "SELECT count(*) FROM standings") == [(1,)], "first folded")
    await until(lambda: sql(replica.url, "SELECT count(*) FROM standings") == [(1,)],
                "the replica replayed the first point's standing")
    await until(service.deps.reads.serving, "reads going to the replica")
    return cid, parts


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match[1])


async def _metrics(api: Api) -> str:
    response = await api.response("GET", "/metrics", token=None)
    return response.body.decode()


async def _leaderboard_totals(service: Service, api: Api, cid: int) -> list[float]:
    """The leaderboard as read once its 1 s cache entry is gone (a fresh query)."""
    await until(lambda: _gone(service, f"lb:{cid}:p0"), "the leaderboard's cache expired")
    status, body = await api.get(f"/v1/competitions/{cid}/leaderboard")
    assert status == 200, body
    return [entry["total"] for entry in body["entries"]]


async def _gone(service: Service, key: str) -> bool:
    return not await service.deps.redis.exists(key)


async def test_reads_come_from_the_replica_and_writes_and_tokens_from_the_primary(
        own: Stores, replica: Replica) -> None:
    settings = make_settings(queue_workers=1, database_read_url=replica.url,
                             database_read_max_lag_s=60.0)
    async with serving(settings, own.database_url, own.redis_url) as (service, api):
        cid, parts = await _started(service, api, replica, own)
        assert await _leaderboard_totals(service, api, cid) == [1.0]

        sql(replica.url, "SELECT pg_wal_replay_pause()")
        await _committed(api, cid, parts[1], "second", 5)  # ingest: the primary
        await until(lambda: sql(own, "SELECT count(*) FROM standings") == [(2,)],
                    "second folded on the primary")
        sql(own, "INSERT INTO api_tokens (token_hash, role, name) VALUES (%s, 'read', 'n')",
            hash_token(NEW_TOKEN))
        # The paused replica has neither: reads that miss them came from it.
        assert service.deps.reads.serving()
        assert await _point_status(api, cid, "second") == 404
        assert await _point_status(api, cid, "first") == 200
        assert await _leaderboard_totals(service, api, cid) == [1.0]
        # Token lookups go to the primary: the token it just got works.
        assert (await api.get(f"/v1/competitions/{cid}", token=NEW_TOKEN))[0] == 200

        sql(replica.url, "SELECT pg_wal_replay_resume()")
        await until(lambda: _found(api, cid, "second"),
                    "the second point read from the resumed replica")
        await until(lambda: _totals_are([5.0, 1.0], service, api, cid),
                    "the resumed replica's leaderboard")
        assert service.deps.reads.serving()


async def _totals_are(expected: list[float], service: Service, api: Api, cid: int) -> bool:
    return await _leaderboard_totals(service, api, cid) == expected


async def _found(api: Api, cid: int, point_id: str) -> bool:
    return await _point_status(api, cid, point_id) == 200


async def test_with_the_replica_stopped_reads_answer_from_the_primary(
        own: Stores, replica: Replica) -> None:
    settings = make_settings(queue_workers=1, database_read_url=replica.url)
    async with serving(settings, own.database_url, own.redis_url) as (service, api):
        cid, parts = await _started(service, api, replica, own)
        reads = service.deps.reads
        # The lag checks stop after the next one: the first read after the replica
        # stops finds it down by itself, and reads again from the primary.
        reads.check_interval_s = 3600.0
        last = reads.checked_at
        await until(lambda: reads.checked_at != last, "one more lag check")
        replica.stop()
        await _committed(api, cid, parts[1], "second", 5)
        assert reads.serving()  # as far as the last check knows
        assert await _point_status(api, cid, "second") == 200
        assert not reads.serving() and reads.error
        assert await _point_status(api, cid, "first") == 200
        await until(lambda: sql(own, "SELECT count(*) FROM standings") == [(2,)],
                    "second folded")
        assert await _leaderboard_totals(service, api, cid) == [5.0, 1.0]
        status, body = await api.get(f"/v1/competitions/{cid}/stats")
        assert status == 200 and body["points"] == 2, body


async def test_a_replica_further_behind_than_the_bound_leaves_reads_to_the_primary(
        own: Stores, replica: Replica) -> None:
    settings = make_settings(queue_workers=1, database_read_url=replica.url,
                             database_read_max_lag_s=1.0)
    async with serving(settings, own.database_url, own.redis_url) as (service, api):
        service.deps.exporter.cache_s = 0.0
        service.deps.readiness.cache_s = 0.0
        cid, parts = await _started(service, api, replica, own)
        # An idle primary is no lag, though the last replayed commit grows old.
        await until(lambda: sql(replica.url, "SELECT now() - pg_last_xact_replay_timestamp()"
                                " > interval '1.5 s'")[0][0], "the last commit 1.5 s old")
        assert service.deps.reads.serving()
        metrics = await _metrics(api)
        assert _metric(metrics, "points_replica_serving_reads") == 1
        assert _metric(metrics, "points_replica_lag_seconds") <= 1.0
        status, ready = await api.get("/ready")
        assert ready["status"] == "ready" and ready["checks"]["replica"]["ok"], ready

        sql(replica.url, "SELECT pg_wal_replay_pause()")
        await _committed(api, cid, parts[1], "second", 5)
        metrics = await until(_lagging(api), "the lag past 1 s in /metrics")
        assert _metric(metrics, "points_replica_serving_reads") == 0
        # Past the bound, reads see what the primary has.
        assert await _point_status(api, cid, "second") == 200
        status, ready = await api.get("/ready")
        replica_check = ready["checks"]["replica"]
        assert status == 200 and ready["status"] == "degraded", ready
        assert replica_check["lag_s"] > 1.0 and not replica_check["serving_reads"], ready
        assert "DATABASE_READ_MAX_LAG_S" in replica_check["error"]
        jsonschema_rs.validate(schemas.READY, ready)  # as /openapi.json describes it
        assert (await api.get("/ready", token=None))[1] == {"status": "degraded",
                                                            "failed": ["replica"]}

        sql(replica.url, "SELECT pg_wal_replay_resume()")
        await until(service.deps.reads.serving, "reads back on the caught-up replica")
        assert _metric(await _metrics(api), "points_replica_lag_seconds") <= 1.0
        assert (await api.get("/ready"))[1]["status"] == "ready"


def _lagging(api: Api) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        text = await _metrics(api)
        return text if _metric(text, "points_replica_lag_seconds") > 1.0 else None
    return check


async def test_a_replica_down_at_start_stops_nothing_and_reads_use_the_primary(
        clean: Stores) -> None:
    settings = make_settings(database_read_url=f"postgresql://postgres:x@127.0.0.1:"
                                               f"{free_port()}/postgres")
    async with serving(settings, clean.database_url, clean.redis_url) as (service, api):
        service.deps.readiness.cache_s = 0.0
        cid, _ = await seed(api, participants=1)
        assert (await api.get(f"/v1/competitions/{cid}/stats"))[0] == 200
        await until(lambda: service.deps.reads.checked_at, "a lag check")
        status, ready = await api.get("/ready")
        check = ready["checks"]["replica"]
        assert status == 200 and ready["status"] == "degraded", ready
        assert not check["up"] and check["lag_s"] is None and check["error"], check


async def test_the_replica_s_connections_refuse_writes_whatever_the_url_points_at(
        clean: Stores, io_loop: object) -> None:
    db = await open_database(make_settings(), clean.database_url, read_only=True)
    try:
        async with db.cursor() as cur:
            with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
                await cur.execute("INSERT INTO competitions (slug, name) VALUES ('x', 'X')")
    finally:
        await db.close()
    assert sql(clean, "SELECT count(*) FROM competitions") == [(0,)]
