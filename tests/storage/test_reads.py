"""Reads behind the API: leaderboard ranks and paging, competition stats."""

from __future__ import annotations

from server.points import now_us
from server.storage import points as sql
from server.storage import reads
from server.storage.database import Database
from server.storage.standings import StandingsFolder
from tests.support import register


async def scored(db: Database, values: list[float]) -> tuple[int, list[int]]:
    cid, parts = await register(db, participants=len(values))
    now = now_us()
    async with db.transaction() as cur:
        await sql.write_points(cur, [(f"s{i}", cid, parts[i], v, now, now)
                                     for i, v in enumerate(values)])
    await StandingsFolder(db).fold_once()
    return cid, parts


async def test_leaderboard_ranks_ties_alike_and_pages(db: Database) -> None:
    cid, parts = await scored(db, [5, 9, 7, 7])
    async with db.cursor() as cur:
        board = await reads.leaderboard(cur, cid, 10, 0)
        page = await reads.leaderboard(cur, cid, 2, 2)
    assert [(e["rank"], e["participant_id"], e["total"]) for e in board] == [
        (1, parts[1], 9), (2, parts[2], 7), (2, parts[3], 7), (4, parts[0], 5)]
    assert [e["rank"] for e in page] == [2, 4]
    assert board[0]["display_name"] == "Player 1" and board[0]["points"] == 1


async def test_stats_sum_the_competition(db: Database) -> None:
    cid, _ = await scored(db, [1.5, 2.5])
    async with db.cursor() as cur:
        stats = await reads.competition_stats(cur, cid)
    assert (stats["points"], stats["participants"], stats["total_value"],
            stats["points_per_minute"]) == (2, 2, 4.0, 2)
    assert stats["last_point_at"] is not None
