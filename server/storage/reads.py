"""SQL behind the read endpoints: leaderboard (from standings) and stats."""

from __future__ import annotations

from typing import Any

# rank() gives tied totals the same rank (1, 2, 2, 4), the usual sports convention.
LEADERBOARD = """
SELECT rank, participant_id, display_name, total, points FROM (
    SELECT rank() OVER (ORDER BY s.total DESC) AS rank, s.participant_id,
           p.display_name, s.total, s.points
    FROM standings s JOIN participants p ON p.id = s.participant_id
    WHERE s.competition_id = %(competition)s
    ORDER BY s.total DESC, s.participant_id
) ranked
LIMIT %(limit)s OFFSET %(offset)s
"""

STATS = """
SELECT
    (SELECT count(*) FROM participants WHERE competition_id = %(c)s),
    coalesce(sum(points), 0), coalesce(sum(total), 0), max(last_point_at),
    (SELECT count(*) FROM points WHERE competition_id = %(c)s
        AND recorded_at > now() - interval '1 minute')
FROM standings WHERE competition_id = %(c)s
"""


async def leaderboard(cur: Any, competition_id: int, limit: int, offset: int) -> list[dict]:
    await cur.execute(LEADERBOARD, {"competition": competition_id, "limit": limit,
                                    "offset": offset})
    keys = ("rank", "participant_id", "display_name", "total", "points")
    return [dict(zip(keys, row)) for row in await cur.fetchall()]


async def leaderboard_rows(cur: Any, competition_id: int) -> int:
    """How many participants the competition's leaderboard ranks."""
    await cur.execute("SELECT count(*) FROM standings WHERE competition_id = %s",
                      (competition_id,))
    (rows,) = await cur.fetchone()
    return int(rows)


async def competition_stats(cur: Any, competition_id: int) -> dict[str, Any]:
    await cur.execute(STATS, {"c": competition_id})
    participants, points, total, last_point_at, last_minute = await cur.fetchone()
    return {
        "competition_id": competition_id,
        "points": int(points),
        "participants": int(participants),
        "total_value": float(total),
        "last_point_at": last_point_at,
        "points_per_minute": int(last_minute),
    }
