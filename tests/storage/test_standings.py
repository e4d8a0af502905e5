"""The standings fold: each delta folded exactly once, also by concurrent folders."""

from __future__ import annotations

import asyncio

from server.points import now_us
from server.runtime.prepare import Stores
from server.storage import points as sql
from server.storage.database import Database
from server.storage.standings import StandingsFolder, fold_standings
from tests.support import register
from tests.support import sql as run_sql


async def test_two_concurrent_folders_fold_every_delta_exactly_once(
        db: Database, clean: Stores) -> None:
    cid, parts = await register(db, participants=5)
    now = now_us()
    for batch in range(40):  # 40 transactions: 40 delta rows per participant
        async with db.transaction() as cur:
            await sql.write_points(cur, [(f"b{batch}-{i}", cid, parts[i % 5], float(i), now,
                                          now) for i in range(10)])
    assert run_sql(clean, "SELECT count(*) FROM standing_deltas") == [(200,)]

    async def folder() -> int:
        folded = 0
        while True:
            async with db.cursor() as cur:
                n = await fold_standings(cur, limit=7)  # small folds: many interleavings
            folded += n
            if n == 0:
                return folded

    first, second = await asyncio.gather(folder(), folder())
    assert first + second == 200 and first and second  # both took part, none twice
    expected = run_sql(clean, "SELECT participant_id, sum(value), count(*) FROM points "
                              "GROUP BY 1 ORDER BY 1")
    assert run_sql(clean, "SELECT participant_id, total, points FROM standings "
                          "ORDER BY 1") == expected


async def test_fold_once_folds_everything_and_counts_it(db: Database, clean: Stores) -> None:
    cid, (a, *_) = await register(db)
    now = now_us()
    async with db.transaction() as cur:
        await sql.write_points(cur, [("f1", cid, a, 2.0, now, now)])
    folder = StandingsFolder(db)
    assert await folder.fold_once() == 1
    assert await folder.fold_once() == 0
    assert folder.folded == 1
    assert run_sql(clean, "SELECT total, points FROM standings") == [(2.0, 1)]
