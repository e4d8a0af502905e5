"""Versioned SQL migrations, applied in order under an advisory lock.

Files are ``server/migrations/NNNN_name.sql``; each runs in its own transaction
together with its row in ``schema_migrations``.  The session-level advisory lock
serialises concurrent starters (``--processes N``, two hosts) so a migration is
never applied twice or half.
"""

from __future__ import annotations

from pathlib import Path

import aiopg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_KEY = 0x706F696E7473  # "points"


def migration_files() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path))
    return found


async def apply_migrations(dsn: str) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
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
                    except BaseException:
                        await cur.execute("ROLLBACK")
                        raise
                    await cur.execute("COMMIT")
                    applied.append(f"{version:04d}_{name}")
            finally:
                await cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
