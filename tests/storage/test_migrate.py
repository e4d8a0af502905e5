"""Migrations applied to a database that already holds data, as an upgrade meets it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from server.runtime.prepare import Stores
from server.storage.migrate import apply_migrations, migration_files
from tests.support import sql


@contextlib.contextmanager
def scratch_database(stores: Stores) -> Iterator[str]:
    """A database of its own in the session's PostgreSQL (dropped after); its URL."""
    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(stores.database_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        parts = urlsplit(stores.database_url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        admin.close()


def migrate_up_to(url: str, last: int) -> None:
    """Apply the migrations up to ``last`` as the runner does (its bookkeeping too)."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                        "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            for version, name, path in migration_files():
                if version <= last:
                    cur.execute(path.read_text())
                    cur.execute("INSERT INTO schema_migrations VALUES (%s, %s)",
                                (version, name))
    finally:
        conn.close()


async def test_points_stored_under_global_ids_keep_them_when_ids_become_per_competition(
        clean: Stores) -> None:
    with scratch_database(clean) as url:
        migrate_up_to(url, 3)  # ids were one namespace
        sql(url, "INSERT INTO competitions (slug, name) VALUES ('cup', 'Cup'), "
                 "('plate', 'Plate')")
        sql(url, "INSERT INTO participants (competition_id, external_ref, display_name) "
                 "VALUES (1, 'ann', 'Ann'), (2, 'bob', 'Bob')")
        sql(url, "INSERT INTO points (id, competition_id, participant_id, value, recorded_at, "
                 "received_at) VALUES ('judge-7', 1, 1, 8, now(), now()), "
                 "('01a250a1508b5b6ee2663c1cf635711c', 2, 2, 5, now(), now())")
        assert await apply_migrations(url) == ["0004_points_keyed_by_competition"]
        assert sql(url, "SELECT competition_id, id, value FROM points ORDER BY 1") == [
            (1, "judge-7", 8.0), (2, "01a250a1508b5b6ee2663c1cf635711c", 5.0)]
        key = sql(url, "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i "
                       "CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
                       "JOIN pg_attribute a ON a.attrelid = i.indrelid "
                       "AND a.attnum = k.attnum "
                       "WHERE i.indrelid = 'points'::regclass AND i.indisprimary")
        assert key == [(["competition_id", "id"],)]
        # The old id, now in the other competition: a second point.
        sql(url, "INSERT INTO points (id, competition_id, participant_id, value, recorded_at, "
                 "received_at) VALUES ('judge-7', 2, 2, 3, now(), now())")
        with pytest.raises(psycopg2.errors.UniqueViolation):
            sql(url, "INSERT INTO points (id, competition_id, participant_id, value, "
                     "recorded_at, received_at) VALUES ('judge-7', 1, 1, 8, now(), now())")
        assert await apply_migrations(url) == []  # applied once
