"""PostgreSQL and Redis as the tests see them: exact counts, locks on demand, the
exactly-once check, template clusters."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2

from server.embedded.password import password_file
from server.runtime.prepare import Stores
from server.storage import catalog
from server.storage.database import Database


def sql(stores: Stores | str, query: str, *args: Any) -> list[tuple]:
    """Run one query against a test database (``Stores`` or a URL) for exact counts."""
    conn = psycopg2.connect(stores if isinstance(stores, str) else stores.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@contextlib.contextmanager
def locked(stores: Stores | str, *tables: str) -> Iterator[None]:
    """Hold ``tables`` in ACCESS EXCLUSIVE mode from a connection of its own for the
    block: every statement that touches them waits (a PostgreSQL that is slow, or stuck)."""
    conn = psycopg2.connect(stores if isinstance(stores, str) else stores.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def lock_waiters(stores: Stores | str) -> int:
    """How many sessions wait for a lock now (a statement held up by ``locked``, say):
    the sync point for "the write has reached PostgreSQL and waits there"."""
    return sql(stores, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
               )[0][0]


def running(stores: Stores | str, text: str) -> list[str]:
    """The statements PostgreSQL is running now whose text holds ``text`` (those a
    ``locked`` table holds up, say).  psycopg2 sends parameters inline, so the text
    shows them: which ids a poll asks about, which competition a read is for."""
    return [query for (query,) in sql(
        stores, "SELECT query FROM pg_stat_activity WHERE state = 'active' "
                "AND pid <> pg_backend_pid() AND strpos(query, %s) > 0", text)]


async def register(db: Database, participants: int = 3, slug: str = "cup"
                   ) -> tuple[int, list[int]]:
    """A competition with ``participants`` participants, written through ``db`` (storage
    tests, which have no API); (competition id, their ids)."""
    async with db.transaction() as cur:
        comp = await catalog.create_competition(cur, slug, slug.title(), None, None)
        rows = await catalog.upsert_participants(
            cur, comp["id"], [(f"p{i}", f"Player {i}") for i in range(participants)])
    return comp["id"], [row["id"] for row in rows]


def assert_exact(stores: Stores | str, accepted: set[str]) -> None:
    """Every accepted id is committed exactly once, nothing else is, and each
    participant's standing equals what its committed points add up to.

    Per participant, not a global sum: one delta applied twice and another lost
    would cancel out in a sum.  Standings must be folded (no pending deltas).
    """
    ids = [row[0] for row in sql(stores, "SELECT id FROM points")]
    assert len(ids) == len(set(ids)), "a point was stored twice"
    missing, extra = accepted - set(ids), set(ids) - accepted
    assert not missing and not extra, (f"{len(missing)} accepted but not committed, "
                                       f"{len(extra)} committed but never accepted")
    assert sql(stores, "SELECT count(*) FROM standing_deltas") == [(0,)], "unfolded deltas"
    expected = sql(stores, "SELECT competition_id, participant_id, round(sum(value)::numeric, 6),"
                           " count(*), max(recorded_at) FROM points GROUP BY 1, 2 ORDER BY 1, 2")
    actual = sql(stores, "SELECT competition_id, participant_id, round(total::numeric, 6),"
                         " points, last_point_at FROM standings ORDER BY 1, 2")
    assert actual == expected


def copy_cluster(template: Path, data_dir: Path) -> None:
    """Give ``data_dir`` a PostgreSQL cluster copied from ``template`` (a stopped,
    migrated cluster), owner and modes kept: no ``initdb``, no migrations.  The
    cluster's password file comes along (the copy knows no other password)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(template), str(data_dir / "postgres")], check=True,
                   timeout=60)
    subprocess.run(["cp", "-a", str(password_file(template.parent)), str(data_dir)],
                   check=True, timeout=60)


