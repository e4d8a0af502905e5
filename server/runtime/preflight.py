"""What production needs, probed before serving (``PROD=true``, ``check-config --prod``).

The settings' own rules (``config.py``) find what is missing or malformed
without touching anything.  This module asks the world, and returns every
problem it finds, one line each, for the caller to report together (exit 2):

- PostgreSQL (``DATABASE_URL``, and ``DATABASE_READ_URL`` when set) answers;
- Redis answers, and is configured so that a 202 cannot be lost: the AOF on,
  fsync as ``QUEUE_FSYNC`` says, ``noeviction``.  That judgement is
  ``queue/durability.py``'s, the same one start-up and ``/ready`` use;
- ``LOG_DIR`` can be created and written (a probe file, deleted again);
- while no admin token exists yet, ``DATA_DIR`` can be written: the first start
  creates one and stores it there (``lifecycle.ensure_admin_token``).

The store probes run concurrently, each bounded by its store's own timeouts
(``PG_CONNECT_TIMEOUT``, ``REDIS_TIMEOUT_S``).  A store that cannot be reached
is reported like any other problem.  Nothing is changed, except that LOG_DIR is
created as ``serve`` would create it anyway.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from server.config import Settings
from server.errors import StoreUnavailable
from server.queue.durability import read_durability
from server.redis_client import redis_client
from server.runtime.prepare import run_sync
from server.storage import tokens
from server.storage.database import open_database


def production_problems(settings: Settings) -> list[str]:
    """Every reason the world is not ready to serve ``settings`` in production."""
    problems: list[str] = []
    if settings.log_dir is not None:
        problems += writable_problems("LOG_DIR", settings.log_dir)
    return problems + run_sync(_store_problems(settings))


def writable_problems(name: str, directory: Path, why: str = "") -> list[str]:
    """[] when ``directory`` can be created and a file written in it, else the reason."""
    probe = directory / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        return [f"{name}={str(directory)!r}: cannot write there "
                f"({exc.strerror or exc}){why}"]
    return []


async def _store_problems(settings: Settings) -> list[str]:
    probes = []
    if settings.database_url is not None:
        probes.append(_postgres("DATABASE_URL", settings.database_url, settings,
                                primary=True))
    if settings.database_read_url is not None:
        probes.append(_postgres("DATABASE_READ_URL", settings.database_read_url, settings,
                                primary=False))
    if settings.redis_url is not None:
        probes.append(_redis(settings.redis_url, settings))
    found = await asyncio.gather(*probes)
    return [problem for problems in found for problem in problems]


async def _postgres(name: str, url: str, settings: Settings, *, primary: bool) -> list[str]:
    try:
        db = await open_database(settings.replace(pg_pool_min=1, pg_pool_max=1), url)
    except StoreUnavailable as exc:
        return [f"{name}: {exc}"]
    try:
        if not primary:
            return []
        async with db.cursor() as cur:
            # Before the first start's migrations there is no table, hence no token.
            await cur.execute("SELECT to_regclass('api_tokens') IS NOT NULL")
            (migrated,) = await cur.fetchone()
            has_admin = migrated and await tokens.has_admin(cur)
    except StoreUnavailable as exc:
        return [f"{name}: {exc}"]
    finally:
        await db.close()
    if has_admin:
        return []
    return writable_problems("DATA_DIR", settings.data_dir,
                             "; no admin token exists yet, and the first start stores "
                             "the one it creates there")


async def _redis(url: str, settings: Settings) -> list[str]:
    client = redis_client(url, settings, max_connections=1)
    try:
        durability = await read_durability(client, vouched=settings.redis_durability_vouched)
    except (StoreUnavailable, ValueError) as exc:
        return [f"REDIS_URL: cannot reach Redis: {exc}"]
    finally:
        await client.aclose()
    return [f"REDIS_URL: {problem}" for problem in durability.problems(settings.queue_fsync)]
