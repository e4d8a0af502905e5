"""An aiopg pool (a primary's, or a read replica's: ``storage/replica.py``) and how
code borrows it.

Connections are recycled after ``DB_CONN_MAX_AGE`` (aiopg's ``pool_recycle``),
carry ``statement_timeout`` and ``connect_timeout``, and are pinged before use
when they sat idle (see ``Database._acquire``).

psycopg2's asynchronous connections are always in autocommit mode, so a
transaction is an explicit ``BEGIN``/``COMMIT`` pair: ``Database.transaction``
owns that pair so no caller can forget the ``ROLLBACK``.  Borrowing a connection
waits at most ``acquire_timeout_s`` (then ``PoolTimeout``) instead of hanging
behind a burst.

This is where psycopg2's exceptions enter and become domain errors: a failing
store or link is ``StoreUnavailable("postgres")``, rows PostgreSQL refuses are
``DataRejected``; anything else (a bug in our SQL) passes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiopg
import psycopg2

from server.config import Settings
from server.errors import (
    CommitUnknown,
    DataRejected,
    PoolTimeout,
    StoreUnavailable,
    WriteConflict,
)
from server.storage import aiopg_patch  # noqa: F401  (see its docstring)

PREPING_IDLE_S = 5.0
PING_TIMEOUT_S = 2.0
# Client-side bound on every statement, beyond the server's statement_timeout:
# a link that went silent (no FIN, no RST: a dead NAT entry, a black-holed
# proxy) never delivers the server's cancel, so only the client can give up.
CLIENT_SLACK_S = 2.0

# psycopg2 errors that mean "the store or the link to it failed", not "this data is bad".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.AdminShutdown,
    psycopg2.errors.QueryCanceled,
    ConnectionError,
    asyncio.TimeoutError,
)


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """psycopg2's exceptions become domain errors here, where they enter.

    One trap: when PostgreSQL cancels a statement (``statement_timeout``, an
    operator's ``pg_cancel_backend``), aiopg raises a bare ``CancelledError`` in
    place of psycopg2's ``QueryCanceledError``.  Passed on, it would look like a
    cancellation of the task itself: a worker loop would end silently, a handler
    would answer 500.  It is a store failure, so it is translated like one —
    unless this task really is being cancelled.
    """
    try:
        yield
    except (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected) as exc:
        raise WriteConflict("postgres", "PostgreSQL aborted a conflicting transaction",
                            reason=str(exc).strip().splitlines()[0]) from exc
    except TRANSIENT_ERRORS as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable("postgres", "PostgreSQL is unavailable", reason=text) from exc
    except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
        raise DataRejected(str(exc).strip().splitlines()[0]) from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if (isinstance(exc.__context__, psycopg2.extensions.QueryCanceledError)
                and (task is None or task.cancelling() == 0)):
            raise StoreUnavailable("postgres", "PostgreSQL cancelled a statement "
                                   "(statement_timeout, or pg_cancel_backend)") from exc
        raise


class Database:
    """Owns the pools; hands out cursors and transactions."""

    def __init__(self, pool: aiopg.Pool, acquire_timeout_s: float):
        self.pool = pool
        self.acquire_timeout_s = acquire_timeout_s
        self._last_used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self.pings_failed = 0
        self.preping_idle_s = PREPING_IDLE_S
        self._waiting: dict[int, int] = {}  # id(pool) -> tasks inside _acquire's wait

    async def _acquire(self, pool: aiopg.Pool, wait_s: float | None = None) -> Any:
        """A connection that answered recently, or answers a ping now (pre-ping).

        A connection idle for ``preping_idle_s`` may have been cut (server restart,
        a proxy's idle timeout, a dropped SSL session): it is pinged, and if the
        ping fails it is closed and one other connection is tried.  ``wait_s``
        shortens the waits for a free connection and for the ping.
        """
        acquire_s = min(self.acquire_timeout_s, wait_s or self.acquire_timeout_s)
        ping_s = min(PING_TIMEOUT_S, wait_s or PING_TIMEOUT_S)
        for attempt in range(2):
            self._waiting[id(pool)] = self._waiting.get(id(pool), 0) + 1
            try:
                conn = await asyncio.wait_for(pool.acquire(), acquire_s)
            except TimeoutError:
                raise PoolTimeout("postgres", "no database connection was free within "
                                  f"{acquire_s:g}s; try again shortly") from None
            finally:
                self._waiting[id(pool)] -= 1
            idle_since = self._last_used.get(conn)
            if idle_since is None or time.monotonic() - idle_since < self.preping_idle_s:
                return conn
            try:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT 1", timeout=ping_s)
                return conn
            except TRANSIENT_ERRORS:
                self.pings_failed += 1
                conn.close()
                await pool.release(conn)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def cursor(self, *, wait_s: float | None = None) -> AsyncIterator[Any]:
        """A cursor in autocommit mode; ``wait_s`` bounds getting its connection."""
        pool = self.pool
        with translated_errors():
            conn = await self._acquire(pool, wait_s)
            try:
                async with conn.cursor() as cur:
                    yield cur
            finally:
                self._last_used[conn] = time.monotonic()
                await pool.release(conn)

    @asynccontextmanager
    async def transaction(self, *, begin: bool = True, wait_s: float | None = None
                          ) -> AsyncIterator[Any]:
        """A cursor inside BEGIN … COMMIT, rolled back on any exception.  ``begin=False``:
        the caller's first statement opens the transaction itself (``BEGIN;`` ahead of
        it: one round trip less).  ``wait_s`` bounds what comes before the caller's
        statements — a free connection, its ping, the BEGIN's round trip — then
        ``StoreUnavailable`` (``PoolTimeout`` for a busy pool); nothing has been sent
        then that could commit, and aiopg closes a connection it gave up on."""
        async with self.cursor(wait_s=wait_s) as cur:
            if begin:
                await cur.execute("BEGIN", timeout=wait_s)
            try:
                yield cur
            except BaseException:
                if not cur.connection.closed:
                    # A link that broke mid-transaction cannot roll back; the pool
                    # drops the connection and PostgreSQL aborts the transaction.
                    with contextlib.suppress(*TRANSIENT_ERRORS):
                        await cur.execute("ROLLBACK")
                raise
            try:
                await cur.execute("COMMIT")
            except TRANSIENT_ERRORS as exc:
                raise CommitUnknown("postgres", "PostgreSQL failed while committing: the "
                                    "transaction may or may not have applied",
                                    reason=str(exc).strip() or type(exc).__name__) from exc

    def pool_stats(self) -> dict[str, int | None]:  # max: None for an unbounded pool
        return {"size": self.pool.size, "free": self.pool.freesize,
                "min": self.pool.minsize, "max": self.pool.maxsize}

    def pool_usage(self) -> dict[str, tuple[int, int, int]]:
        """(in use, idle, waiting) of the pool, as ``{"primary": …}``; in use counts
        connections being opened."""
        pool = self.pool
        return {"primary": (pool.size - pool.freesize, pool.freesize,
                            self._waiting.get(id(pool), 0))}

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close the pool; connections still out after ``timeout_s`` are cut."""
        pool = self.pool
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), timeout_s)
        except TimeoutError:
            await pool.clear()
            pool.terminate()


async def _create_pool(dsn: str, settings: Settings, *, read_only: bool) -> aiopg.Pool:
    options = f"-c statement_timeout={settings.pg_statement_timeout_ms}"
    if read_only:  # a read replica's: no write can pass, whatever the URL points at
        options += " -c default_transaction_read_only=on"
    return await aiopg.create_pool(
        dsn,
        minsize=settings.pg_pool_min,
        maxsize=settings.pg_pool_max,
        # aiopg applies this to every statement; the server-side statement_timeout
        # fires first, this only catches a link that went silent.
        timeout=settings.pg_statement_timeout_ms / 1000 + CLIENT_SLACK_S,
        pool_recycle=settings.db_conn_max_age_s,
        enable_json=False,
        enable_hstore=False,
        enable_uuid=False,
        connect_timeout=max(1, round(settings.pg_connect_timeout_s)),
        options=options,
        application_name="points-server",
        # A peer that vanished (host down) is found by TCP keepalive within ~1 min.
        keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
    )


async def open_database(settings: Settings, url: str, *, read_only: bool = False) -> Database:
    """Open a pool (StoreUnavailable when PostgreSQL cannot be reached and
    ``PG_POOL_MIN`` connections are to be opened now).  ``read_only``: every
    transaction of its connections is read-only (a read replica's pool)."""
    with translated_errors():
        pool = await _create_pool(url, settings, read_only=read_only)
    return Database(pool, acquire_timeout_s=settings.pg_connect_timeout_s)
