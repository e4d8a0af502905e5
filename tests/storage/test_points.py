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


async def test_stored_states_and_get_point_go_by_competition_and_id(db: Database) -> None:
    cid, (a, *_) = await register(db)
    other, _ = await register(db, slug="other")
    async with db.transaction() as cur:
        await sql.write_points(cur, [point("g1", cid, a, 1.5)])
    async with db.cursor() as cur:
        asked = [point("missing", cid, a), point("g1", cid, a, 1.5), point("g1", cid, a, 2.5),
                 point("g1", other, a, 1.5)]
        assert sorted(await sql.stored_states(cur, asked)) == [(1, True), (2, False)]
        row = await sql.get_point(cur, cid, "g1")
        assert (row["id"], row["value"], row["participant_id"]) == ("g1", 1.5, a)
        assert await sql.get_point(cur, cid, "missing") is None
        assert await sql.get_point(cur, other, "g1") is None


async def test_ids_with_quotes_backslashes_braces_and_commas_are_written_exactly(
        db: Database, clean: Stores) -> None:
    cid, (a, *_) = await register(db)
    odd = ['say "hi"', "back\\slash", "{braces}", "a,b", " spaced ", "déjà-vu", "NULL", "\\\""]
    async with db.cursor() as cur:
        inserted, refused = await sql.write_points(cur, [point(i, cid, a, 0.1) for i in odd])
    assert (inserted, refused) == (len(odd), [])
    assert sorted(row[0] for row in run_sql(clean, "SELECT id FROM points")) == sorted(odd)
    assert run_sql(clean, "SELECT DISTINCT value FROM points") == [(0.1,)]  # exact floats


async def test_of_ids_repeated_in_one_write_the_first_wins_and_other_content_conflicts(
        db: Database, clean: Stores) -> None:
    cid, (a, b, _) = await register(db)
    async with db.cursor() as cur:
        inserted, refused = await sql.write_points(
            cur, [point("twice", cid, a, 1), point("twice", cid, b, 2),
                  point("twice", cid, a, 1)])
    assert inserted == 1
    assert [(index, reason) for index, reason, _ in refused] == [(1, "id_conflict")]
    assert run_sql(clean, "SELECT participant_id, value FROM points") == [(a, 1.0)]


def timed(point_id: str, competition: int, participant: int, value: float, at_us: int
          ) -> tuple:
    """A point with a time of its own (``recorded_at`` sent), received now."""
    return (point_id, competition, participant, value, at_us, now_us())


async def test_a_taken_id_is_a_repeat_only_with_the_same_content(db: Database,
                                                                 clean: Stores) -> None:
    cid, (a, b, _) = await register(db)
    other, (z, *_) = await register(db, slug="other")
    at = now_us() - 60_000_000
    async with db.cursor() as cur:
        assert await sql.write_points(cur, [point("plain", cid, a, 1),
                                            timed("timed", cid, a, 1, at)]) == (2, [])
    resent = [point("plain", cid, a, 1),  # no time of its own, received later: a repeat
              timed("timed", cid, a, 1, at),  # the same time: a repeat
              point("plain", cid, b, 1),  # another participant
              point("plain", cid, a, 1.5),  # another value
              timed("timed", cid, a, 1, at + 1),  # another time
              point("timed", cid, a, 1),  # a time of its own, then none
              timed("plain", cid, a, 1, at),  # none, then a time of its own
              point("plain", other, z, 9)]  # the same id in another competition: new
    async with db.cursor() as cur:
        inserted, refused = await sql.write_points(cur, resent)
    assert inserted == 1
    assert [(index, reason) for index, reason, _ in refused] == [
        (i, "id_conflict") for i in range(2, 7)]
    assert "'plain' is taken in competition" in refused[0].message
    assert run_sql(clean, "SELECT competition_id, id, participant_id, value FROM points "
                          "ORDER BY 1, 2") == [(cid, "plain", a, 1.0), (cid, "timed", a, 1.0),
                                               (other, "plain", z, 9.0)]
    # Standings: the three inserted points only, each once.
    assert run_sql(clean, "SELECT competition_id, sum(points), sum(total) FROM standing_deltas "
                          "GROUP BY 1 ORDER BY 1") == [(cid, 2, 2.0), (other, 1, 9.0)]


async def test_a_direct_write_with_an_id_conflict_writes_nothing_in_its_transaction(
        db: Database, clean: Stores) -> None:
    cid, (a, *_) = await register(db)
    async with db.cursor() as cur:
        await sql.write_points(cur, [point("k", cid, a, 1)])

    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        async with db.transaction() as cur:
            _, refused = await sql.write_points(cur, [point("new", cid, a), point("k", cid, a, 2)],
                                                all_or_nothing=True)
            assert [r.reason for r in refused] == ["id_conflict"]
            raise Refused  # as ingest does: the transaction rolls back
    assert run_sql(clean, "SELECT id FROM points") == [("k",)]


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



async def test_a_key_a_concurrent_writer_commits_with_other_content_is_an_id_conflict(
        db: Database, clean: Stores) -> None:
    """The writer's insert waits for a concurrent one holding the same key, which then
    commits other content: the key was not in the writer's snapshot, and still the
    point is refused as a conflict (and a repeat of the same content is not)."""
    cid, (a, b, _) = await register(db)
    holder = psycopg2.connect(clean.database_url)
    try:
        with holder.cursor() as cur:
            cur.execute("INSERT INTO points (id, competition_id, participant_id, value, "
                        "recorded_at, received_at) VALUES ('held', %s, %s, 1, now(), now())",
                        (cid, a))

        async def write() -> tuple[int, list]:
            async with db.cursor() as cur:
                return await sql.write_points(cur, [point("new", cid, a),
                                                    point("held", cid, b),  # other content
                                                    point("new", cid, a)])  # a repeat

        writing = asyncio.ensure_future(write())
        await until(lambda: lock_waiters(clean) == 1, "the writer waiting for the held key")
        holder.commit()
        inserted, refused = await writing
    finally:
        holder.close()
    assert inserted == 1
    assert [(index, reason) for index, reason, _ in refused] == [(1, "id_conflict")]
    assert run_sql(clean, "SELECT id, participant_id FROM points ORDER BY 1") == [
        ("held", a), ("new", a)]
