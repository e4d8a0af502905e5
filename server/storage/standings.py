"""Standings: the delta log written with each batch, folded into running totals.

Workers write a batch's points and, in the same transaction, one delta row per
(competition, participant) of the rows actually inserted (``WRITE_POINTS`` in
``points.py``): exactly-once by construction, and append-only, so concurrent
workers never wait on each other's standings row locks (profiled: with 4
workers upserting the same standings rows, commits serialised below the rate
of 2).  ``StandingsFolder`` moves the log into ``standings`` every
``FOLD_INTERVAL_S`` in transactions of its own; ``SKIP LOCKED`` lets folders in
several processes share the log without waiting or folding a delta twice.
Leaderboards therefore trail commits by about ``FOLD_INTERVAL_S``.
"""

from __future__ import annotations

import logging
from typing import Any

from server.errors import StoreUnavailable
from server.storage.database import Database
from server.supervisor import StopSignal

log = logging.getLogger(__name__)

FOLD_INTERVAL_S = 0.2
FOLD_LIMIT = 50_000  # deltas per fold transaction
FAILING_INTERVAL_S = 1.0  # while PostgreSQL is away

# Fold up to %(limit)s logged deltas into standings, in one transaction of its own.
# The ORDER BY keeps one lock order on standings rows across folders.
FOLD_STANDINGS = """
WITH taken AS (
    DELETE FROM standing_deltas
    WHERE id IN (SELECT id FROM standing_deltas ORDER BY id LIMIT %(limit)s
                 FOR UPDATE SKIP LOCKED)
    RETURNING competition_id, participant_id, total, points, last_point_at
), folded AS (
    INSERT INTO standings AS s (competition_id, participant_id, total, points, last_point_at)
    SELECT competition_id, participant_id, sum(total), sum(points), max(last_point_at)
    FROM taken
    GROUP BY competition_id, participant_id
    ORDER BY competition_id, participant_id
    ON CONFLICT (competition_id, participant_id) DO UPDATE
        SET total = s.total + EXCLUDED.total,
            points = s.points + EXCLUDED.points,
            last_point_at = greatest(s.last_point_at, EXCLUDED.last_point_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM taken)
"""


async def fold_standings(cur: Any, limit: int = FOLD_LIMIT) -> int:
    """Fold up to ``limit`` logged deltas into standings; return how many were folded."""
    await cur.execute(FOLD_STANDINGS, {"limit": limit})
    (folded,) = await cur.fetchone()
    return int(folded)


class StandingsFolder:
    """The background task that keeps ``standings`` current from the delta log."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.folded = 0

    async def fold_once(self) -> int:
        """Fold every logged delta now; return how many."""
        total = 0
        while True:
            async with self.db.cursor() as cur:  # one statement: its own transaction
                folded = await fold_standings(cur)
            total += folded
            self.folded += folded
            if folded < FOLD_LIMIT:
                return total

    async def run(self, stop: StopSignal) -> None:
        """Fold until ``stop``; a PostgreSQL outage only slows it down (the log waits
        safely); any other error ends the task for its supervisor to see."""
        failing = False
        while not stop.requested:
            try:
                await self.fold_once()
                failing = False
            except StoreUnavailable as exc:
                if not failing:  # once per outage, not five times a second
                    log.warning("standings fold waits for PostgreSQL: %s", exc)
                failing = True
            await stop.pause(FAILING_INTERVAL_S if failing else FOLD_INTERVAL_S)
