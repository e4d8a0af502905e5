"""SQL for points: the one-statement checked, idempotent write, and the reads.

A point's key is (competition, id): ids are the client's, scoped per
competition.  A point whose key is taken is either a repeat (same participant,
value and time: a no-op, counted once) or an id conflict (other content): never
stored, and reported as such (``Refusal`` reason ``id_conflict``), never taken
for a repeat.

The write takes a list of points, so the same SQL serves one point (naive path)
or a thousand (pipelined path): the ingest path decides only how many rows go
into one call.

A point travels as a plain tuple or list (see ``server/points.py``: its fields
by position): id, competition_id, participant_id, value, recorded_at and
received_at as integer microseconds since the Unix epoch (exact, compact in the
queue, no parsing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from server.points import COMPETITION_ID, ID, MAX_ABS_VALUE, PARTICIPANT_ID, VALUE

# One statement — so one implicit transaction, one round trip — per group:
# check every point's competition and participant (joined in the same snapshot),
# insert the points that pass unless their id exists, and log exactly the
# inserted rows' contribution to standings (append-only: concurrent workers never
# wait on each other; ``standings.py`` folds the log).  Returns a first row
# ``(0, inserted, deltas)`` and one ``(position, reason, 0)`` row per refused
# point (1 = unknown competition, 2 = participant unknown in that competition).
# With ``all_or_nothing`` a group with any refused point inserts nothing.  When it
# inserted fewer points than passed, a ``(position, 3, 0)`` row names each point
# whose key was taken before it (only then: the anti-join is skipped otherwise);
# whether such a point is a repeat or an id conflict is asked afterwards
# (``ID_CONFLICTS``), of those points alone.
#
# The points arrive as six PostgreSQL array literals, formatted client-side:
# measured per point, ``unnest`` of arrays costs PostgreSQL less CPU than
# ``json_array_elements`` or ``json_to_recordset``, and far less than COPY into a
# staging table plus INSERT … SELECT (docs/performance.md).
WRITE_POINTS = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::text[], %(competitions)s::bigint[],
                         %(participants)s::bigint[], %(values)s::float8[],
                         %(recorded)s::bigint[], %(received)s::bigint[]) WITH ORDINALITY
        AS t(id, competition_id, participant_id, value, recorded_us, received_us, position)
), checked AS (
    SELECT i.*, CASE WHEN c.id IS NULL THEN 1 WHEN p.id IS NULL THEN 2 END AS refused
    FROM input i
    LEFT JOIN competitions c ON c.id = i.competition_id
    LEFT JOIN participants p ON p.id = i.participant_id AND p.competition_id = i.competition_id
), inserted AS (
    INSERT INTO points (id, competition_id, participant_id, value, recorded_at, received_at)
    SELECT id, competition_id, participant_id, value,
           timestamptz 'epoch' + recorded_us * interval '1 microsecond',
           timestamptz 'epoch' + received_us * interval '1 microsecond'
    FROM checked
    WHERE refused IS NULL
      AND NOT (%(all_or_nothing)s AND EXISTS (SELECT 1 FROM checked WHERE refused IS NOT NULL))
    -- In id order: every writer then takes the ids' insertion locks in one global
    -- order, so two claims holding the same ids (a client's retry, a duplicate)
    -- wait for each other but never deadlock (in claim order they did, measured:
    -- ~1 deadlock a second in a 300k drain with 1 point in 50 repeated).  Of repeated ids
    -- in one group, the first one wins (a later one of other content is an id
    -- conflict).
    ORDER BY competition_id, id COLLATE "C", position
    ON CONFLICT (competition_id, id) DO NOTHING
    RETURNING competition_id, id, participant_id, value, recorded_at
), logged AS (
    INSERT INTO standing_deltas (competition_id, participant_id, total, points, last_point_at)
    SELECT competition_id, participant_id, sum(value), count(*), max(recorded_at)
    FROM inserted
    GROUP BY competition_id, participant_id
    RETURNING 1
)
SELECT 0, (SELECT count(*) FROM inserted)::int, (SELECT count(*) FROM logged)::int
UNION ALL
SELECT position::int, refused, 0 FROM checked WHERE refused IS NOT NULL
UNION ALL
SELECT c.position::int, 3, 0 FROM checked c
WHERE c.refused IS NULL
  AND (SELECT count(*) FROM inserted) < (SELECT count(*) FROM checked WHERE refused IS NULL)
  AND NOT (%(all_or_nothing)s AND EXISTS (SELECT 1 FROM checked WHERE refused IS NOT NULL))
  AND NOT EXISTS (SELECT 1 FROM inserted x WHERE x.competition_id = c.competition_id
                                             AND x.id = c.id)
"""

# The input points of a batch (its six arrays), joined to the stored point of the
# same key, with whether that point has the input's content: the same
# participant and value, and the same time — or no time of either's own (a point
# sent without ``recorded_at`` takes its receive time, which a resend cannot
# repeat: such points are compared on participant and value).  One primary-key
# probe per input point (``LATERAL … LIMIT 1`` keeps the planner from hashing
# the whole table: as a plain join it chose a sequential scan of ``points``,
# measured at 50,000 rows).
_STORED_OF_INPUT = """
FROM unnest(%(ids)s::text[], %(competitions)s::bigint[], %(participants)s::bigint[],
            %(values)s::float8[], %(recorded)s::bigint[], %(received)s::bigint[])
     WITH ORDINALITY
     AS i(id, competition_id, participant_id, value, recorded_us, received_us, position)
CROSS JOIN LATERAL (
    SELECT participant_id, value, recorded_at, received_at FROM points
    WHERE points.competition_id = i.competition_id AND points.id = i.id LIMIT 1) p
"""
_SAME_CONTENT = """
(p.participant_id = i.participant_id AND p.value = i.value
 AND (p.recorded_at = timestamptz 'epoch' + i.recorded_us * interval '1 microsecond'
      OR (p.recorded_at = p.received_at AND i.recorded_us = i.received_us)))
"""

# After a write that inserted fewer points than it could: the positions whose key
# is taken by a point of other content.  A statement of its own, so in a snapshot
# that sees what concurrent writers committed while the insert waited for them.
ID_CONFLICTS = f"SELECT i.position::int {_STORED_OF_INPUT} WHERE NOT {_SAME_CONTENT}"

# ``?ack=committed``: which of the points are stored, and with their content or not.
STORED_STATES = f"SELECT i.position::int, {_SAME_CONTENT} {_STORED_OF_INPUT}"

GET_POINT = """
SELECT id, competition_id, participant_id, value, recorded_at, received_at, committed_at
FROM points WHERE competition_id = %s AND id = %s
"""


def _quoted(text: str) -> str:
    """An element of a text[] literal: always quoted, backslash and quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fragment(values: Sequence[Any]) -> str:
    """Array-literal elements, written by orjson in one C call: a JSON array of
    numbers is an array literal's inside once its brackets go (floats print
    exactly: PostgreSQL reads ``1.5``, ``1e15`` and ``-0.25`` as JSON writes them)."""
    return orjson.dumps(values).decode()[1:-1]


def _text_fragment(ids: Sequence[str]) -> str:
    """JSON's string quoting is the array literal's too (``\\"`` and ``\\\\``), as
    long as no other escape appears: ids hold no control characters (validated),
    so a backslash in the JSON means a quote or a backslash in an id, and those
    few ids take the slow, exact quoting."""
    text = orjson.dumps(ids).decode()
    if "\\" in text:
        return ",".join(map(_quoted, ids))
    return text[1:-1]


class Refusal(NamedTuple):
    """A point a write statement did not take, and why."""

    position: int  # in the batch (or list) written
    reason: str  # unknown_competition, unknown_participant, invalid_value, id_conflict
    message: str


class PointBatch:
    """The points of one ``WRITE_POINTS`` statement, gathered a part at a time.

    A large group (a worker's claim grows to 8,000 points) takes ~10 ms of Python
    to check and format in one go; built part by part, the caller can let the
    event loop go between parts.  Points whose value is out of range (only a
    point that bypassed the API) are refused here, before PostgreSQL.
    """

    def __init__(self) -> None:
        self._columns: list[list[str]] = [[] for _ in range(6)]
        self.positions: list[int] = []  # statement position - 1 -> index in the group
        self.refused: list[Refusal] = []
        self.points: list[Sequence[Any]] = []
        self.size = 0  # points added, refused included

    def add(self, points: Sequence[Sequence[Any]]) -> None:
        first = self.size
        self.size += len(points)
        self.points.extend(points)
        if not points:
            return
        values = [point[VALUE] for point in points]
        # Nearly always true, checked at C speed; a NaN makes the sum NaN.
        if math.isfinite(sum(values)) and max(map(abs, values)) <= MAX_ABS_VALUE:
            good = points
            self.positions.extend(range(first, first + len(points)))
        else:
            good = []
            for offset, point in enumerate(points):
                if abs(point[VALUE]) <= MAX_ABS_VALUE:
                    good.append(point)
                    self.positions.append(first + offset)
                else:
                    self.refused.append(Refusal(first + offset, "invalid_value",
                                                f"value {point[VALUE]!r} is out of range"))
            if not good:
                return
        ids, *numbers = zip(*good)
        self._columns[0].append(_text_fragment(ids))
        for column, values_ in zip(self._columns[1:], numbers):
            column.append(_fragment(values_))

    @property
    def writable(self) -> int:
        return len(self.positions)

    def params(self) -> dict[str, str]:
        names = ("ids", "competitions", "participants", "values", "recorded", "received")
        return {name: "{" + ",".join(parts) + "}" for name, parts in zip(names, self._columns)}


async def write_batch(cur: Any, batch: PointBatch, *, all_or_nothing: bool = False,
                      begin: bool = False) -> tuple[int, list[Refusal]]:
    """Write a ``PointBatch`` in one statement (one transaction): the points whose
    references hold are inserted (idempotent on id), with their standings deltas.

    Returns (rows inserted, refused), refused in batch order: points whose
    competition or participant is unknown, or whose participant belongs to another
    competition, or whose value is out of range, or whose key (competition, id) is
    taken by a point of other content (``id_conflict``).  Points neither inserted
    nor refused are repeats.  ``all_or_nothing``: if any is refused for its
    references or value, nothing is inserted; an id conflict is found after the
    insert, so a caller that wants it all-or-nothing too writes in a transaction
    of its own and rolls back.  ``begin``: open a transaction in the same round
    trip (``BEGIN;`` ahead of the statement), for the caller to commit.
    """
    refused = list(batch.refused)
    if not batch.writable or (all_or_nothing and refused):
        return 0, refused
    await cur.execute(("BEGIN;\n" if begin else "") + WRITE_POINTS,
                      {**batch.params(), "all_or_nothing": all_or_nothing})
    inserted = 0
    taken: list[int] = []  # indexes of points whose key was stored before the statement
    for position, value, _ in await cur.fetchall():
        if position == 0:
            inserted = value
            continue
        index = batch.positions[position - 1]
        if value == _TAKEN:
            taken.append(index)
            continue
        point = batch.points[index]
        competition, participant = point[COMPETITION_ID], point[PARTICIPANT_ID]
        message = (f"competition {competition} does not exist" if value == 1 else
                   f"participant {participant} is not in competition {competition}")
        refused.append(Refusal(index, _REASONS[value], message))
    passed = batch.writable - (len(refused) - len(batch.refused))
    if inserted < passed and not (all_or_nothing and len(refused) > len(batch.refused)):
        # Some keys were taken — before the statement, or by an earlier point of the
        # batch: repeats, or conflicts.  One more round trip, for those points only.
        suspects = taken
        if inserted + len(taken) < passed:
            known = {r.position for r in refused}.union(taken)
            suspects = taken + _later_occurrences(batch, known)
        refused += await _id_conflicts(cur, batch.points, suspects)
    refused.sort()
    return inserted, refused


_TAKEN = 3  # WRITE_POINTS' code for a point whose key was stored before it


def _later_occurrences(batch: PointBatch, known: set[int]) -> list[int]:
    """Indexes of the batch's points that repeat the key of an earlier one (those in
    ``known`` — refused, or taken before the statement — left out)."""
    seen: set[tuple[Any, Any]] = set()
    later = []
    for index in batch.positions:
        if index in known:
            continue
        point = batch.points[index]
        key = (point[COMPETITION_ID], point[ID])
        if key in seen:
            later.append(index)
        seen.add(key)
    return later


async def _id_conflicts(cur: Any, points: Sequence[Sequence[Any]], indexes: list[int]
                        ) -> list[Refusal]:
    """``id_conflict`` refusals for those of ``points[indexes]`` whose key is stored with
    other content.  A statement of its own: it sees what concurrent writers committed
    while the insert waited for them, and what this statement's insert wrote."""
    suspects = PointBatch()
    suspects.add([points[index] for index in indexes])
    await cur.execute(ID_CONFLICTS, suspects.params())
    return [Refusal(index, "id_conflict", conflict_message(points[index]))
            for index in (indexes[suspects.positions[position - 1]]
                          for (position,) in await cur.fetchall())]


def conflict_message(point: Sequence[Any]) -> str:
    return (f"id {point[ID]!r} is taken in competition {point[COMPETITION_ID]} by a point "
            "of other content (participant, value or time)")


async def write_points(cur: Any, points: Sequence[Sequence[Any]], *,
                       all_or_nothing: bool = False) -> tuple[int, list[Refusal]]:
    """``write_batch`` for a list of points (indexes in ``refused`` are into it)."""
    batch = PointBatch()
    batch.add(points)
    return await write_batch(cur, batch, all_or_nothing=all_or_nothing)


_REASONS = {1: "unknown_competition", 2: "unknown_participant"}


async def get_point(cur: Any, competition_id: int, point_id: str) -> dict[str, Any] | None:
    await cur.execute(GET_POINT, (competition_id, point_id))
    row = await cur.fetchone()
    if row is None:
        return None
    keys = ("id", "competition_id", "participant_id", "value", "recorded_at",
            "received_at", "committed_at")
    return dict(zip(keys, row))


async def stored_states(cur: Any, points: Sequence[Sequence[Any]]) -> list[tuple[int, bool]]:
    """(index in ``points``, stored with this content) of each point whose key is
    stored; a point whose key is not is left out."""
    batch = PointBatch()
    batch.add(points)
    if not batch.writable:
        return []
    await cur.execute(STORED_STATES, batch.params())
    return [(batch.positions[position - 1], same) for position, same in await cur.fetchall()]
