"""Storage tests talk to the session's PostgreSQL through the service's own pools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tornado.ioloop

from server.storage import catalog
from server.storage.database import Database, open_database
from tests.support import Stores, make_settings


@pytest.fixture
def db(clean: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[Database]:
    database = io_loop.run_sync(lambda: open_database(make_settings(), clean.database_url))
    yield database
    io_loop.run_sync(database.close)


async def register(db: Database, participants: int = 3, slug: str = "cup"
                   ) -> tuple[int, list[int]]:
    """A competition with ``participants`` participants; (competition id, their ids)."""
    async with db.transaction() as cur:
        comp = await catalog.create_competition(cur, slug, slug.title(), None, None)
        rows = await catalog.upsert_participants(
            cur, comp["id"], [(f"p{i}", f"Player {i}") for i in range(participants)])
    return comp["id"], [row["id"] for row in rows]
