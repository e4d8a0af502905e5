"""SQL for competitions and participants (what points refer to)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg2

from server.errors import SlugTaken

_COMPETITION_COLUMNS = ("id", "slug", "name", "starts_at", "ends_at", "created_at")
_PARTICIPANT_COLUMNS = ("id", "competition_id", "external_ref", "display_name", "created_at")


async def create_competition(cur: Any, slug: str, name: str, starts_at: datetime | None,
                             ends_at: datetime | None) -> dict[str, Any]:
    try:
        await cur.execute(
            "INSERT INTO competitions (slug, name, starts_at, ends_at) VALUES (%s, %s, %s, %s)"
            f" RETURNING {', '.join(_COMPETITION_COLUMNS)}",
            (slug, name, starts_at, ends_at),
        )
    except psycopg2.errors.UniqueViolation:
        raise SlugTaken(slug) from None
    return dict(zip(_COMPETITION_COLUMNS, await cur.fetchone()))


async def get_competition(cur: Any, competition_id: int) -> dict[str, Any] | None:
    await cur.execute(
        f"SELECT {', '.join(_COMPETITION_COLUMNS)} FROM competitions WHERE id = %s",
        (competition_id,),
    )
    row = await cur.fetchone()
    return dict(zip(_COMPETITION_COLUMNS, row)) if row else None


async def list_competitions(cur: Any, limit: int, after_id: int) -> list[dict[str, Any]]:
    """Keyset page: competitions with id > after_id, oldest first."""
    await cur.execute(
        f"SELECT {', '.join(_COMPETITION_COLUMNS)} FROM competitions"
        " WHERE id > %s ORDER BY id LIMIT %s",
        (after_id, limit),
    )
    return [dict(zip(_COMPETITION_COLUMNS, row)) for row in await cur.fetchall()]


async def recent_competitions(cur: Any, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` newest competitions, newest first (the dashboard's list)."""
    await cur.execute(
        f"SELECT {', '.join(_COMPETITION_COLUMNS)} FROM competitions"
        " ORDER BY id DESC LIMIT %s",
        (limit,),
    )
    return [dict(zip(_COMPETITION_COLUMNS, row)) for row in await cur.fetchall()]


async def upsert_participants(cur: Any, competition_id: int,
                              entries: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Register (external_ref, display_name) pairs; existing refs are returned as they are.

    Idempotent on external_ref within the competition: a repeat never creates a
    second participant (and does not rename the first).
    """
    refs = [ref for ref, _ in entries]
    names = [name for _, name in entries]
    await cur.execute(
        "INSERT INTO participants (competition_id, external_ref, display_name)"
        " SELECT %s, ref, name FROM unnest(%s::text[], %s::text[]) AS t(ref, name)"
        " ON CONFLICT (competition_id, external_ref) DO NOTHING",
        (competition_id, refs, names),
    )
    await cur.execute(
        f"SELECT {', '.join(_PARTICIPANT_COLUMNS)} FROM participants"
        " WHERE competition_id = %s AND external_ref = ANY(%s::text[])",
        (competition_id, refs),
    )
    by_ref = {row[2]: dict(zip(_PARTICIPANT_COLUMNS, row)) for row in await cur.fetchall()}
    return [by_ref[ref] for ref in refs]


async def get_participant(cur: Any, participant_id: int) -> dict[str, Any] | None:
    await cur.execute(
        "SELECT p.id, p.competition_id, p.external_ref, p.display_name, p.created_at,"
        " coalesce(s.total, 0), coalesce(s.points, 0)"
        " FROM participants p LEFT JOIN standings s"
        " ON s.competition_id = p.competition_id AND s.participant_id = p.id"
        " WHERE p.id = %s",
        (participant_id,),
    )
    row = await cur.fetchone()
    return dict(zip((*_PARTICIPANT_COLUMNS, "total", "points"), row)) if row else None
