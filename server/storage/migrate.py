"""Versioned SQL migrations, applied in order under an advisory lock.

Files are ``server/migrations/NNNN_name.sql``; each runs in its own transaction
together with its row in ``schema_migrations``.  The session-level advisory lock
serialises concurrent starters (``--processes N``, two hosts) so a migration is
never applied twice or half.
"""

from __future__ import annotations

from pathlib import Path

import aiopg
import psycopg2

from server.storage.database import TRANSIENT_ERRORS, translated_errors

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_KEY = 0x706F696E7473  # "points"


def migration_files() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path))
    return found


class MigrationError(Exception):
    """A migration file failed; it was rolled back and nothing after it ran."""


async def apply_migrations(dsn: str) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date).

    Raises ``StoreUnavailable`` when PostgreSQL cannot be reached and
    ``MigrationError`` naming the file when one fails.
    """
    with translated_errors():
        return await _apply(dsn)


async def _apply(dsn: str) -> list[str]:
    applied: list[str] = []
    async with aiopg.connect(dsn, enable_json=False, enable_hstore=False,
                             enable_uuid=False) as conn:
        async with conn.cursor() as cur:
            await cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                await cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                await cur.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in await cur.fetchall()}
                for version, name, path in migration_files():
                    if version in done:
                        continue
                    await cur.execute("BEGIN")
                    try:
                        await cur.execute(path.read_text())
                        await cur.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (version, name),
                        )
                    except psycopg2.Error as exc:
                        await cur.execute("ROLLBACK")
                        if isinstance(exc, TRANSIENT_ERRORS):
                            raise
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        raise MigrationError(f"migration {version:04d}_{name} failed: "
                                             f"{first or type(exc).__name__}") from exc
                    except BaseException:
                        await cur.execute("ROLLBACK")
                        raise
                    await cur.execute("COMMIT")
                    applied.append(f"{version:04d}_{name}")
            finally:
                await cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
