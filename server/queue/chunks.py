"""What travels through the queue: chunks of points, dead-letter entries, settlements.

A **chunk** is a run of points that move together through ready → leased →
acknowledged (or retry / dead).  Its id is ``<sortable id>-<points in chunk>``:
the first 12 hex digits are its enqueue time in ms, and the Lua scripts count
points from the suffix without decoding payloads.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from server.points import (
    COMPETITION_ID,
    ID,
    PARTICIPANT_ID,
    RECORDED_US,
    VALUE,
    Point,
    new_ids,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def chunk_size(chunk_id: str) -> int:
    return int(chunk_id.rsplit("-", 1)[1])


def chunk_enqueued_ms(chunk_id: str) -> int:
    return int(chunk_id[:12], 16)


def new_chunk_ids(sizes: Sequence[int]) -> list[str]:
    return [f"{base}-{n}" for base, n in zip(new_ids(len(sizes)), sizes)]


@dataclass
class Chunk:
    """Claimed points that travel together, with their shared retry history."""

    id: str
    points: list[Point]
    attempts: int = 0
    first_failed_ms: int | None = None
    last_error: str | None = None

    def payload(self) -> bytes:
        return orjson.dumps({"a": self.attempts, "p": self.points, "f": self.first_failed_ms,
                             "e": self.last_error})

    @classmethod
    def from_payload(cls, chunk_id: str, raw: bytes) -> Chunk:
        """Decode a payload; its points stay the lists JSON gives (a tuple per point
        would cost more than the decoding itself, profiled on the drain)."""
        data = orjson.loads(raw)
        return cls(chunk_id, data["p"], data["a"], data["f"], data["e"])


def utc(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def well_formed(point: Any) -> bool:
    """A point as ours are written (one from elsewhere may not be)."""
    return (isinstance(point, tuple | list) and len(point) == 6 and isinstance(point[ID], str)
            and all(isinstance(v, int) and not isinstance(v, bool)
                    for v in point[COMPETITION_ID:PARTICIPANT_ID + 1])
            and all(isinstance(v, int | float) for v in point[VALUE:]))


def point_json(point: Point) -> dict[str, Any]:
    """A point as the API shows it (the DLQ view)."""
    point_id, competition_id, participant_id, value, recorded_us, received_us = point
    return {"id": point_id, "competition_id": competition_id,
            "participant_id": participant_id, "value": value,
            "recorded_at": utc(recorded_us), "received_at": utc(received_us)}


def dead_letter_key(point: Point, reason: str) -> str:
    """A point's DLQ key: ``<competition>:<id>`` (ids are scoped per competition).  An
    ``id_conflict`` adds a digest of its content, so that each version refused for
    one key is kept, while a resend of the same version stays one entry."""
    key = f"{point[COMPETITION_ID]}:{point[ID]}"
    if reason != "id_conflict":
        return key
    content = orjson.dumps([point[PARTICIPANT_ID], point[VALUE], point[RECORDED_US]])
    return f"{key}:{hashlib.blake2s(content, digest_size=4).hexdigest()}"


@dataclass(frozen=True)
class DeadLetter:
    """A point given up on, with why and its history; stored in the DLQ under
    ``dead_letter_key``."""

    point: Point
    reason: str
    attempts: int
    first_failed_ms: int
    last_failed_ms: int
    last_error: str

    @property
    def key(self) -> str:
        return dead_letter_key(self.point, self.reason)

    def entry(self) -> bytes:
        """The stored form: the API view plus the raw tuple a requeue rebuilds from."""
        return orjson.dumps({
            "key": self.key, "point": point_json(self.point), "raw": self.point,
            "reason": self.reason,
            "attempts": self.attempts, "first_failed_at": utc(self.first_failed_ms * 1000),
            "last_failed_at": utc(self.last_failed_ms * 1000), "last_error": self.last_error,
        })


@dataclass(frozen=True)
class DeadChunk:
    """A chunk that cannot be split into points (its payload does not decode, or its
    points are not well formed): kept whole (base64) for inspection, under
    ``chunk:<id>`` in the DLQ; it has no point to requeue, only to purge."""

    chunk_id: str
    payload: bytes
    reason: str
    handbacks: int
    failed_ms: int
    last_error: str

    @property
    def key(self) -> str:
        return f"chunk:{self.chunk_id}"

    def entry(self) -> bytes:
        return orjson.dumps({
            "key": self.key, "point": None, "chunk_id": self.chunk_id, "reason": self.reason,
            "attempts": self.handbacks, "first_failed_at": utc(self.failed_ms * 1000),
            "last_failed_at": utc(self.failed_ms * 1000), "last_error": self.last_error,
            "payload_base64": base64.b64encode(self.payload).decode(),
        })


@dataclass
class Settlement:
    """What a worker decided about a claim, applied to Redis in one step."""

    acked: list[str] = field(default_factory=list)
    committed: int = 0
    retries: list[tuple[Chunk, int]] = field(default_factory=list)  # (chunk, delay ms)
    dead: list[DeadLetter | DeadChunk] = field(default_factory=list)
