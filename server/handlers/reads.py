"""Cached reads: leaderboard (≤ 1 s), competition stats (30 s), participant (60 s).

Each answer is computed from PostgreSQL (the read replica when configured) and
cached as its finished JSON body, so a burst of identical reads costs one query
per TTL, not one per request.
"""

from __future__ import annotations

from datetime import UTC, datetime

from server import schemas
from server.handlers.base import BaseHandler
from server.handlers.errors import NotFound
from server.storage import catalog, reads

LEADERBOARD_TTL_S = 1.0
STATS_TTL_S = 30.0
PARTICIPANT_TTL_S = 60.0


class _CachedRead(BaseHandler):
    role = "read"

    async def _competition_exists(self, cur: object, cid: int) -> None:
        if await catalog.get_competition(cur, cid) is None:
            raise NotFound(f"no competition {cid}")


class LeaderboardHandler(_CachedRead):
    async def get(self, competition_id: str) -> None:
        cid = self.path_id(competition_id)
        limit = self.query_int(*schemas.LEADERBOARD_LIMIT)
        offset = self.query_int(*schemas.LEADERBOARD_OFFSET)

        async def compute() -> dict:
            async with self.deps.db.cursor(read=True) as cur:
                await self._competition_exists(cur, cid)
                entries = await reads.leaderboard(cur, cid, limit, offset)
            return {"competition_id": cid, "as_of": datetime.now(UTC),
                    "entries": entries}

        body = await self.deps.cache.get_or_compute(f"lb:{cid}:{limit}:{offset}",
                                                    LEADERBOARD_TTL_S, compute)
        self.write_json(body)


class StatsHandler(_CachedRead):
    async def get(self, competition_id: str) -> None:
        cid = self.path_id(competition_id)

        async def compute() -> dict:
            async with self.deps.db.cursor(read=True) as cur:
                await self._competition_exists(cur, cid)
                stats = await reads.competition_stats(cur, cid)
            return {**stats, "as_of": datetime.now(UTC)}

        self.write_json(await self.deps.cache.get_or_compute(f"stats:{cid}", STATS_TTL_S,
                                                             compute))


class ParticipantHandler(_CachedRead):
    async def get(self, participant_id: str) -> None:
        pid = self.path_id(participant_id)

        async def compute() -> dict:
            async with self.deps.db.cursor(read=True) as cur:
                row = await catalog.get_participant(cur, pid)
            if row is None:
                raise NotFound(f"no participant {pid}")
            return row

        self.write_json(await self.deps.cache.get_or_compute(f"participant:{pid}",
                                                             PARTICIPANT_TTL_S, compute))
