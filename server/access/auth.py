"""Bearer tokens: generation, hashing, and a lookup that a store outage or a flood cannot stall.

Tokens are ``pts_`` and 256 random bits (43 URL-safe base64 characters), so an
unsalted SHA-256 is a sound verifier; only the hash is stored.  A lookup finds
the row by hash and then compares the hashes with ``hmac.compare_digest``
(constant time).  What a lookup found is kept per process (``token_cache.py``):
for ``AUTH_CACHE_TTL_S`` it answers alone, so a revoked token stops working
within that time; while PostgreSQL is away, a token confirmed in the last
``STALE_OK_S`` keeps working (ingest must go on into Redis); other tokens get
a 503.

What a request pays, at most:

* **Ill-formed tokens** (not ``pts_`` + 43 characters of ``[A-Za-z0-9_-]``) are
  refused before any hashing or query.
* **One lookup per token in flight** (single flight): every request for a token
  whose entry is missing or stale joins the lookup already running for it.
* **A bounded wait.**  A request waits for its token's lookup until
  ``REQUEST_STORE_WAIT_S`` after that lookup *started*, then answers from the
  stale entry (or 503 without one) while the lookup runs on in the background.
  A black-holed PostgreSQL thus costs the first request of a token about that
  long and the requests joining it less — not the pool's or the statement's
  timeout (10–30 s).
* **The breaker.**  While PostgreSQL's circuit breaker (the workers',
  ``server/queue/breaker.py``) is open, no lookup starts: a stale entry answers
  at once, a token without one gets 503 at once.  When it turns half-open one
  lookup is its probe; a stale entry still answers at once, refreshed in the
  background by that probe.  A lookup that finds PostgreSQL failing opens it (a busy
  pool does not: that is this process's congestion).
* **401s per client address.**  With ``RATE_LIMIT_401_PER_ADDRESS=N`` an
  address gets N 401s a second (bursts of 2N, the rate limiter's GCRA, shared
  through Redis); beyond that it is answered 429, and until its ``Retry-After``
  has passed its requests with tokens this process does not know are answered
  429 before any lookup.  Known tokens from that address are never held up.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from server.access.ratelimit import RateLimiter
from server.access.token_cache import Known, TokenCache
from server.errors import (
    NotAuthenticated,
    NotPermitted,
    RateLimited,
    StoreUnavailable,
)
from server.queue.breaker import CircuitBreaker
from server.storage import tokens as sql
from server.storage.database import Database

ROLES = ("read", "ingest", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
CACHE_TTL_S = 5.0  # AUTH_CACHE_TTL_S's default
STALE_OK_S = 900.0
STORE_WAIT_S = 1.0  # REQUEST_STORE_WAIT_S's default
TOKEN_PREFIX = "pts_"
# What ``generate_token`` makes: the prefix and token_urlsafe(32), 43 characters.
TOKEN_FORMAT = re.compile(r"pts_[A-Za-z0-9_-]{43}")
BLOCKED_MAX = 10_000  # client addresses held at 429 in this process


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def role_allows(role: str, required: str) -> bool:
    """admin ⊇ ingest ⊇ read."""
    return _RANK[role] >= _RANK[required]


async def create_token(db: Database, role: str, name: str) -> str:
    token = generate_token()
    async with db.cursor() as cur:
        await sql.insert_token(cur, hash_token(token), role, name)
    return token


async def first_admin_token(db: Database) -> str | None:
    """An admin token when none is active yet (first start), else None."""
    async with db.cursor() as cur:
        if await sql.has_admin(cur):
            return None
    return await create_token(db, "admin", "bootstrap-admin")


@dataclass(frozen=True)
class Identity:
    """Who is calling: the token's role, and its hash (scopes idempotency keys)."""

    role: str
    token_hash: bytes


class Authenticator:
    """Who is behind a request's token; see the module docstring for what that costs."""

    def __init__(self, db: Database, *, breaker: CircuitBreaker | None = None,
                 refusals: RateLimiter | None = None, cache_ttl_s: float = CACHE_TTL_S,
                 wait_s: float = STORE_WAIT_S, grace_s: float = STALE_OK_S) -> None:
        self.db = db
        self.breaker = breaker  # PostgreSQL's; None: never consulted
        self.refusals = refusals  # the 401 limiter per client address; None: off
        self.wait_s = wait_s
        self.cache = TokenCache(cache_ttl_s, grace_s)
        self._flights: dict[bytes, _Flight] = {}
        self._blocked: dict[str, float] = {}  # address -> monotonic end of its 429s

    async def identify(self, authorization: str | None, *,
                       address: str | None = None) -> Identity:
        """Who is behind an ``Authorization`` header: NotAuthenticated when nobody,
        RateLimited when ``address`` has had its 401s."""
        try:
            return await self._identify(authorization, address)
        except NotAuthenticated as exc:
            await self._refuse(address, exc)
            raise

    async def require(self, authorization: str | None, required: str, *,
                      address: str | None = None) -> Identity:
        identity = await self.identify(authorization, address=address)
        if not role_allows(identity.role, required):
            raise NotPermitted(identity.role, required)
        return identity

    async def close(self) -> None:
        """Cancel the lookups still running (their requests are answered by now)."""
        flights = [flight.task for flight in self._flights.values()]
        for task in flights:
            task.cancel()
        await asyncio.gather(*flights, return_exceptions=True)

    async def _identify(self, authorization: str | None, address: str | None) -> Identity:
        if not authorization:
            raise NotAuthenticated("missing Authorization: Bearer <token> header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticated("Authorization must be 'Bearer <token>'")
        if not TOKEN_FORMAT.fullmatch(token):  # no query for what was never issued
            raise NotAuthenticated("unknown or revoked token")
        digest = hash_token(token)
        now = time.monotonic()
        known = self.cache.known(digest)
        if known is not None and self.cache.fresh(known, now):
            return Identity(known.role, digest)
        if known is None:
            self._check_blocked(address, now)
            if self.cache.is_unknown(digest, now):
                raise NotAuthenticated("unknown or revoked token")
        role = await self._look_up(digest, known)
        if role is None:
            raise NotAuthenticated("unknown or revoked token")
        return Identity(role, digest)

    async def _look_up(self, digest: bytes, known: Known | None) -> str | None:
        """The token's role (None: no such token), from PostgreSQL within the wait,
        else from ``known`` within its grace, else StoreUnavailable."""
        gate = self.breaker.try_pass() if self.breaker is not None else None
        if gate is False:  # the breaker is open: PostgreSQL is not even asked
            return self._without_lookup(known, "the database is unavailable")
        flight = self._flights.get(digest)
        if flight is None:
            flight = self._start(digest, probe=bool(gate))
        elif gate and self.breaker is not None:  # joined a flight: no probe of its own
            self.breaker.release_probe()
        if gate is not None and known is not None and self.cache.in_grace(known,
                                                                          time.monotonic()):
            # PostgreSQL has been failing: the cached entry answers at once, and the
            # lookup (the breaker's probe) refreshes it in the background.
            return known.role
        try:
            async with asyncio.timeout(max(0.0, flight.deadline - time.monotonic())):
                return await asyncio.shield(flight.task)
        except TimeoutError:
            return self._without_lookup(known, "the database did not answer in time")
        except StoreUnavailable as exc:
            return self._without_lookup(known, exc.message)

    def _without_lookup(self, known: Known | None, why: str) -> str:
        if known is not None and self.cache.in_grace(known, time.monotonic()):
            return known.role
        raise StoreUnavailable("postgres", f"cannot verify the token: {why}", retry_after_s=2)

    def _start(self, digest: bytes, *, probe: bool) -> _Flight:
        # Its own context: the lookup serves every request for the token, it logs
        # as none of them.
        task = asyncio.get_running_loop().create_task(self._query(digest, probe),
                                                      context=contextvars.Context())
        flight = _Flight(task, time.monotonic() + self.wait_s)
        self._flights[digest] = flight
        task.add_done_callback(lambda done: self._landed(digest, flight))
        return flight

    def _landed(self, digest: bytes, flight: _Flight) -> None:
        if self._flights.get(digest) is flight:
            del self._flights[digest]
        if not flight.task.cancelled():
            flight.task.exception()  # seen: whoever waited has answered already

    async def _query(self, digest: bytes, probe: bool) -> str | None:
        """One lookup; its outcome is remembered and told to the breaker."""
        breaker = self.breaker
        try:
            async with self.db.cursor() as cur:
                row = await sql.find_token(cur, digest)
        except BaseException as exc:  # a busy pool or a conflict is congestion, not failure
            if breaker is not None:
                breaker.tell(probe, exc)
            raise
        if breaker is not None:
            breaker.tell(probe)
        role = row[1] if row is not None and hmac.compare_digest(row[0], digest) else None
        self.cache.remember(digest, role, time.monotonic())
        return role

    def _check_blocked(self, address: str | None, now: float) -> None:
        """429 at once for an address that has had its 401s (no lookup for it)."""
        until = self._blocked.get(address) if address is not None else None
        if until is None:
            return
        if until <= now:
            del self._blocked[address]  # type: ignore[arg-type]  # not None: found
            return
        raise self._limited(until - now)

    async def _refuse(self, address: str | None, exc: NotAuthenticated) -> None:
        """Count a 401 against ``address``; RateLimited (429) instead beyond its limit."""
        if self.refusals is None or address is None:
            return
        decision = await self.refusals.check(b"401:" + address.encode())
        if decision.allowed:
            return
        now = time.monotonic()
        if address not in self._blocked and len(self._blocked) >= BLOCKED_MAX:
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            if len(self._blocked) >= BLOCKED_MAX:
                self._blocked.clear()  # forgetting only lets a lookup through
        self._blocked[address] = now + decision.retry_after_s
        raise self._limited(decision.retry_after_s) from exc

    def _limited(self, retry_after_s: float) -> RateLimited:
        limiter = self.refusals
        assert limiter is not None
        return RateLimited(
            f"too many requests with a missing, malformed or unknown token from this "
            f"address ({limiter.per_s:g} a second, bursts of {limiter.burst}; "
            f"RATE_LIMIT_401_PER_ADDRESS); retry in {retry_after_s:.2f} s",
            limit=limiter.burst, remaining=0, reset_s=retry_after_s,
            retry_after_s=retry_after_s)


@dataclass(frozen=True, slots=True)
class _Flight:
    """The one lookup of a token in flight, and when its waiters stop waiting."""

    task: asyncio.Task[str | None]
    deadline: float  # monotonic: its start + REQUEST_STORE_WAIT_S
