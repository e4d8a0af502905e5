"""Writing points: reference checks, the idempotent insert, refusals, data errors."""

from __future__ import annotations

import asyncio

import psycopg2
import pytest

from server.errors import DataRejected
from server.points import now_us
from server.runtime.prepare import Stores
from server.storage import points as sql
from server.storage.database import Database
from tests.support import lock_waiters, register, until
from tests.support import sql as run_sql


def point(point_id: str, competition: int, participant: int, value: float = 1.0) -> tuple:
    now = now_us()
    return (point_id, competition, participant, value, now, now)


async def test_write_inserts_new_points_and_logs_their_deltas(db: Database,
                                                              clean: Stores) -> None:
    cid, (a, b, _) = await register(db)
    async with db.transaction() as cur:
        inserted, refused = await sql.write_points(
            cur, [point("x1", cid, a, 2), point("x2", cid, a, 3), point("x3", cid, b, 4)])
    assert (inserted, refused) == (3, [])
    deltas = run_sql(clean, "SELECT participant_id, total, points FROM standing_deltas "
                            "ORDER BY participant_id")
    assert deltas == [(a, 5.0, 2), (b, 4.0, 1)]  # one row per participant per batch


async def test_a_redelivered_point_is_skipped_and_logs_no_delta(db: Database,
                                                                clean: Stores) -> None:
    cid, (a, *_) = await register(db)
    for _ in range(2):
        async with db.transaction() as cur:
            inserted, _ = await sql.write_points(cur, [point("same", cid, a, 7)])
    assert inserted == 0
    assert run_sql(clean, "SELECT count(*), sum(total) FROM standing_deltas") == [(1, 7.0)]


async def test_unknown_and_mismatched_references_are_refused_by_index(db: Database,
                                                                      clean: Stores) -> None:
    cid, (a, *_) = await register(db)
    _, (z, *_) = await register(db, slug="other")
    batch = [point("ok", cid, a), point("no-comp", 9999, a), point("no-part", cid, 9999),
             point("wrong-comp", cid, z), point("huge", cid, a, 1e300)]
    async with db.transaction() as cur:
        inserted, refused = await sql.write_points(cur, batch)
    assert inserted == 1
    assert [(index, reason) for index, reason, _ in refused] == [
        (1, "unknown_competition"), (2, "unknown_participant"), (3, "unknown_participant"),
        (4, "invalid_value")]
    assert run_sql(clean, "SELECT id FROM points") == [("ok",)]


async def test_rows_postgresql_refuses_raise_data_rejected_and_write_nothing(
        db: Database, clean: Stores) -> None:
    cid, (a, *_) = await register(db)
    with pytest.raises(DataRejected):
        async with db.transaction() as cur:
            await sql.write_points(cur, [point("fine", cid, a), point("bad", cid, 2**63)])
    assert run_sql(clean, "SELECT count(*) FROM points") == [(0,)]


async def test_committed_ids_and_get_point(db: Database) -> None:
    cid, (a, *_) = await register(db)
    async with db.transaction() as cur:
        await sql.write_points(cur, [point("g1", cid, a, 1.5)])
    async with db.cursor() as cur:
        assert await sql.committed_ids(cur, ["g1", "missing"]) == ["g1"]
        row = await sql.get_point(cur, "g1")
        assert (row["id"], row["value"], row["participant_id"]) == ("g1", 1.5, a)
        assert await sql.get_point(cur, "missing") is None


async def test_ids_with_quotes_backslashes_braces_and_commas_are_written_exactly(
        db: Database, clean: Stores) -> None:
    cid, (a, *_) = await register(db)
    odd = ['say "hi"', "back\\slash", "{braces}", "a,b", " spaced ", "déjà-vu", "NULL", "\\\""]
    async with db.cursor() as cur:
        inserted, refused = await sql.write_points(cur, [point(i, cid, a, 0.1) for i in odd])
    assert (inserted, refused) == (len(odd), [])
    assert sorted(row[0] for row in run_sql(clean, "SELECT id FROM points")) == sorted(odd)
    assert run_sql(clean, "SELECT DISTINCT value FROM points") == [(0.1,)]  # exact floats


async def test_of_ids_repeated_in_one_write_the_first_wins(db: Database,
                                                          clean: Stores) -> None:
    cid, (a, b, _) = await register(db)
    async with db.cursor() as cur:
        inserted, _ = await sql.write_points(cur, [point("twice", cid, a, 1),
                                                   point("twice", cid, b, 2)])
    assert inserted == 1
    assert run_sql(clean, "SELECT participant_id, value FROM points") == [(a, 1.0)]


async def test_writers_sharing_ids_in_opposite_orders_wait_but_never_deadlock(
        db: Database, clean: Stores) -> None:
    """Two claims with the same ids (a retried request, duplicates) in opposite order.

    A third transaction holds the first id's insertion lock so that both writers
    queue behind it; when it rolls back, they race.  Inserted in claim order, the
    one that takes ``a`` then waits for ``b`` held by the other, which waits for
    ``a``: a deadlock PostgreSQL breaks by aborting one (about every other round).
    In id order both take ``a`` first, so one simply waits for the other.
    """
    cid, (p, *_) = await register(db)
    holder = psycopg2.connect(clean.database_url)
    try:
        for round_ in range(6):
            a, b = f"r{round_}-a", f"r{round_}-b"
            with holder.cursor() as cur:
                cur.execute("INSERT INTO points (id, competition_id, participant_id, value, "
                            "recorded_at, received_at) VALUES (%s, %s, %s, 1, now(), now())",
                            (a, cid, p))

            async def write(ids: list[str]) -> int:
                async with db.transaction() as cur:
                    inserted, _ = await sql.write_points(cur, [point(i, cid, p) for i in ids])
                return inserted

            first = asyncio.ensure_future(write([a, b]))
            second = asyncio.ensure_future(write([b, a]))
            await until(lambda: lock_waiters(clean) == 2,
                        "both writers waiting for the held id")
            holder.rollback()
            results = await asyncio.gather(first, second)  # a WriteConflict would raise
            assert sorted(results) == [0, 2]
        assert run_sql(clean, "SELECT count(*) FROM points") == [(12,)]
    finally:
        holder.close()

