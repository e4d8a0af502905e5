"""Cached reads: leaderboard (≤ 1 s), competition stats (30 s), participant (60 s).

Each answer is computed from PostgreSQL — the read replica while it serves
(``storage/replica.py``: up and within ``DATABASE_READ_MAX_LAG_S``), else the
primary — and cached as its finished JSON body, so a burst of identical reads costs one query
per TTL, not one per request.

**Leaderboards are cached by page, not by query string.**  Keyed by
``limit``/``offset``, a client could make a cache entry (and a query) of every
one of the ~10¹⁰ shapes the parameters allow.  Instead the cache holds aligned
pages of ``LEADERBOARD_PAGE_ROWS`` ranks (``lb:{id}:p{n}``), and a read is cut
from the pages it spans (at most 11).  Pages past the end of the standings are
never cached: for an offset beyond the first page the number of ranked
participants (``lb:{id}:rows``, same TTL) says which pages exist.  So the keys of
a competition are at most its participants / 100 + 2, whatever the query
strings.  The default shape (``limit=100&offset=0``) is page 0 itself, served
as cached, bytes for bytes.  A read that spans pages is as old as its oldest
page (``as_of`` says so); a participant moving between two pages' refills may
show on both or neither.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from server import schemas
from server.handlers.base import BaseHandler
from server.handlers.errors import NotFound
from server.storage import catalog, reads

LEADERBOARD_TTL_S = 1.0
LEADERBOARD_PAGE_ROWS = 100  # ranks per cached leaderboard page
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
        page_rows = LEADERBOARD_PAGE_ROWS
        first, last = offset // page_rows, (offset + limit - 1) // page_rows
        as_of: Any = None
        if first:  # beyond page 0, only the pages that hold ranks are cached
            rows = orjson.loads(await self._rows(cid))
            last, as_of = min(last, (rows["rows"] - 1) // page_rows), rows["as_of"]
        if first == last and offset % page_rows == 0 and limit == page_rows:
            self.write_json(await self._page(cid, first))  # a whole page, as cached
            return
        entries: list[Any] = []
        for number in range(first, last + 1):
            page = orjson.loads(await self._page(cid, number))
            entries += page["entries"]
            as_of = page["as_of"] if as_of is None else min(as_of, page["as_of"])
            if len(page["entries"]) < page_rows:
                break  # the last page: those after it are empty
        start = offset - first * page_rows
        self.write_json({"competition_id": cid, "as_of": as_of,
                         "entries": entries[start:start + limit]})

    async def _page(self, cid: int, number: int) -> bytes:
        async def query(cur: Any) -> list[dict]:
            await self._competition_exists(cur, cid)
            return await reads.leaderboard(cur, cid, LEADERBOARD_PAGE_ROWS,
                                           number * LEADERBOARD_PAGE_ROWS)

        async def compute() -> dict:
            entries = await self.deps.reads.run(query)
            return {"competition_id": cid, "as_of": datetime.now(UTC), "entries": entries}

        return await self.deps.cache.get_or_compute(f"lb:{cid}:p{number}", LEADERBOARD_TTL_S,
                                                    compute)

    async def _rows(self, cid: int) -> bytes:
        async def query(cur: Any) -> int:
            await self._competition_exists(cur, cid)
            return await reads.leaderboard_rows(cur, cid)

        async def compute() -> dict:
            rows = await self.deps.reads.run(query)
            return {"rows": rows, "as_of": datetime.now(UTC)}

        return await self.deps.cache.get_or_compute(f"lb:{cid}:rows", LEADERBOARD_TTL_S,
                                                    compute)


class StatsHandler(_CachedRead):
    async def get(self, competition_id: str) -> None:
        cid = self.path_id(competition_id)

        async def query(cur: Any) -> dict:
            await self._competition_exists(cur, cid)
            return await reads.competition_stats(cur, cid)

        async def compute() -> dict:
            stats = await self.deps.reads.run(query)
            return {**stats, "as_of": datetime.now(UTC)}

        self.write_json(await self.deps.cache.get_or_compute(f"stats:{cid}", STATS_TTL_S,
                                                             compute))


class ParticipantHandler(_CachedRead):
    async def get(self, participant_id: str) -> None:
        pid = self.path_id(participant_id)

        async def compute() -> dict:
            row = await self.deps.reads.run(lambda cur: catalog.get_participant(cur, pid))
            if row is None:
                raise NotFound(f"no participant {pid}")
            return row

        self.write_json(await self.deps.cache.get_or_compute(f"participant:{pid}",
                                                             PARTICIPANT_TTL_S, compute))
