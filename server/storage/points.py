"""SQL for points: reference checks, the idempotent batch insert, standings, reads.

Each statement takes a list of points (as one JSON array), so the same SQL serves
one point (naive path) or a thousand (pipelined path): the ingest path decides
only how many rows go into one call and one transaction.

A point travels as a plain tuple (see ``server.points.Point``): id,
competition_id, participant_id, value, recorded_at and received_at as integer
microseconds since the Unix epoch (exact, compact in the queue, no parsing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from server.points import MAX_ABS_VALUE

# Insert what is new, and log exactly the inserted rows' contribution to
# standings (append-only: concurrent workers never wait on each other; see
# ``standings.py``, which folds the log).  Returns (inserted, deltas).
INSERT_POINTS = """
WITH input AS (
    SELECT e->>0 AS id, (e->>1)::bigint AS competition_id, (e->>2)::bigint AS participant_id,
           (e->>3)::float8 AS value, (e->>4)::bigint AS recorded_us,
           (e->>5)::bigint AS received_us
    FROM json_array_elements(%(points)s::json) AS e
), inserted AS (
    INSERT INTO points (id, competition_id, participant_id, value, recorded_at, received_at)
    SELECT id, competition_id, participant_id, value,
           timestamptz 'epoch' + recorded_us * interval '1 microsecond',
           timestamptz 'epoch' + received_us * interval '1 microsecond'
    FROM input
    ON CONFLICT (id) DO NOTHING
    RETURNING competition_id, participant_id, value, recorded_at
), logged AS (
    INSERT INTO standing_deltas (competition_id, participant_id, total, points, last_point_at)
    SELECT competition_id, participant_id, sum(value), count(*), max(recorded_at)
    FROM inserted
    GROUP BY competition_id, participant_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM logged)
"""

# One query per batch: which of these competitions exist, and which of these
# participants exist in which competition.
KNOWN_REFS = """
SELECT 'c', id, id FROM competitions WHERE id = ANY(%(competitions)s::bigint[])
UNION ALL
SELECT 'p', id, competition_id FROM participants WHERE id = ANY(%(participants)s::bigint[])
"""

GET_POINT = """
SELECT id, competition_id, participant_id, value, recorded_at, received_at, committed_at
FROM points WHERE id = %s
"""

COUNT_COMMITTED = "SELECT count(*) FROM points WHERE id = ANY(%s::text[])"


async def insert_points(cur: Any, points: Sequence[tuple]) -> int:
    """Insert ``points`` (idempotent on id) and update standings; return rows inserted.

    Must run inside a transaction so that points and standings commit together.
    """
    # One JSON text parameter: orjson writes it in one C call, where psycopg2 would
    # adapt six Python lists element by element on the event loop (profiled: that
    # adaptation was the workers' largest cost).
    await cur.execute(INSERT_POINTS, {"points": orjson.dumps(points).decode()})
    inserted, _ = await cur.fetchone()
    return int(inserted)


async def known_refs(cur: Any, points: Sequence[tuple]) -> tuple[set[int], dict[int, int]]:
    """Return (existing competition ids, {participant id: its competition id})."""
    await cur.execute(KNOWN_REFS, {
        "competitions": sorted({p[1] for p in points}),
        "participants": sorted({p[2] for p in points}),
    })
    competitions: set[int] = set()
    participants: dict[int, int] = {}
    for kind, ident, competition in await cur.fetchall():
        if kind == "c":
            competitions.add(ident)
        else:
            participants[ident] = competition
    return competitions, participants


async def write_points(cur: Any, points: Sequence[tuple]) -> tuple[int, list[tuple[int, str, str]]]:
    """Check references (one query), insert the points whose references hold.

    Returns (rows inserted, refused) where refused lists (index in ``points``,
    reason, message) for points whose competition or participant is unknown, or
    whose participant belongs to another competition, or (arriving other than
    through the API) whose value is out of range.  Run inside a transaction.
    """
    competitions, participants = await known_refs(cur, points)
    good, refused = [], []
    for index, point in enumerate(points):
        if not abs(point[3]) <= MAX_ABS_VALUE:  # only a point that bypassed the API
            refused.append((index, "invalid_value", f"value {point[3]!r} is out of range"))
        elif point[1] not in competitions:
            refused.append((index, "unknown_competition",
                            f"competition {point[1]} does not exist"))
        elif participants.get(point[2]) != point[1]:
            refused.append((index, "unknown_participant",
                            f"participant {point[2]} is not in competition {point[1]}"))
        else:
            good.append(point)
    inserted = await insert_points(cur, good) if good else 0
    return inserted, refused


async def get_point(cur: Any, point_id: str) -> dict[str, Any] | None:
    await cur.execute(GET_POINT, (point_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    keys = ("id", "competition_id", "participant_id", "value", "recorded_at",
            "received_at", "committed_at")
    return dict(zip(keys, row))


async def count_committed(cur: Any, ids: Sequence[str]) -> int:
    await cur.execute(COUNT_COMMITTED, (list(ids),))
    (count,) = await cur.fetchone()
    return int(count)
