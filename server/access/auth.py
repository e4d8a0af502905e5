"""Bearer tokens: generation, hashing, lookup with a short in-process cache.

Tokens are 256-bit random strings, so an unsalted SHA-256 is a sound verifier;
only the hash is stored.  A lookup finds the row by hash and then compares the
hashes with ``hmac.compare_digest`` (constant time).  Lookups are cached for
``CACHE_TTL_S`` per process: a revoked token stops working within that time.
While PostgreSQL is down, a token verified in the last ``STALE_OK_S`` keeps
working (ingest must go on into Redis); other tokens get a 503.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from server.errors import NotAuthenticated, NotPermitted, StoreUnavailable
from server.storage import tokens as sql
from server.storage.database import Database

ROLES = ("read", "ingest", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
CACHE_TTL_S = 5.0
STALE_OK_S = 900.0
TOKEN_PREFIX = "pts_"


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
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[bytes, tuple[float, str | None]] = {}

    async def identify(self, authorization: str | None) -> Identity:
        """Who is behind an ``Authorization`` header, or NotAuthenticated."""
        if not authorization:
            raise NotAuthenticated("missing Authorization: Bearer <token> header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 256:
            raise NotAuthenticated("Authorization must be 'Bearer <token>'")
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            role = hit[1]
        else:
            try:
                async with self.db.cursor() as cur:
                    row = await sql.find_token(cur, digest)
            except StoreUnavailable:
                # PostgreSQL is away: a token verified within STALE_OK_S still works,
                # so ingest keeps accepting into Redis; an unknown one gets a 503.
                if hit is not None and hit[0] + STALE_OK_S > now:
                    role = hit[1]
                else:
                    raise StoreUnavailable("postgres", "cannot verify the token: the "
                                           "database is unavailable", retry_after_s=2) from None
            else:
                role = (row[1] if row is not None and hmac.compare_digest(row[0], digest)
                        else None)
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + CACHE_TTL_S, role)
        if role is None:
            raise NotAuthenticated("unknown or revoked token")
        return Identity(role, digest)

    async def require(self, authorization: str | None, required: str) -> Identity:
        identity = await self.identify(authorization)
        if not role_allows(identity.role, required):
            raise NotPermitted(identity.role, required)
        return identity
