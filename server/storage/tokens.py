"""SQL for API tokens; only SHA-256 hashes of tokens are ever stored."""

from __future__ import annotations

from typing import Any


async def insert_token(cur: Any, token_hash: bytes, role: str, name: str) -> int:
    await cur.execute(
        "INSERT INTO api_tokens (token_hash, role, name) VALUES (%s, %s, %s) RETURNING id",
        (token_hash, role, name),
    )
    (token_id,) = await cur.fetchone()
    return int(token_id)


async def find_token(cur: Any, token_hash: bytes) -> tuple[bytes, str, str] | None:
    """Return (stored hash, role, name) of an unrevoked token, or None."""
    await cur.execute(
        "SELECT token_hash, role, name FROM api_tokens"
        " WHERE token_hash = %s AND revoked_at IS NULL",
        (token_hash,),
    )
    row = await cur.fetchone()
    return (bytes(row[0]), row[1], row[2]) if row else None


async def revoke_tokens(cur: Any, *, token_hash: bytes | None = None,
                        name: str | None = None) -> int:
    await cur.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE revoked_at IS NULL"
        " AND (token_hash = %s OR name = %s)",
        (token_hash, name),
    )
    return cur.rowcount


async def has_admin(cur: Any) -> bool:
    await cur.execute(
        "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL)"
    )
    (exists,) = await cur.fetchone()
    return bool(exists)
