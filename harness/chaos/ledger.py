"""The record of every logical point a chaos run sent, and of every request's answer.

Why a ledger and not the server's own counters: the checker must judge the
server against what its clients were told, so the record is kept on the
client's side — one ``Sent`` per logical point (however many times it was
resent), with the strongest thing any answer said of it.  A point's ``value`` is
unique within a run, so the checker can find it among the committed rows even
when its id was the server's and no answer ever named it.

The per-request ``Event`` list is for the report's timeline (accepted points and
p99 latency per second, with the faults shaded over them); it is kept apart from
the points so a ledger of a long run stays a flat, cheap JSON document.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

# Outcomes, strongest first: what the answers said of a point.
ACKED = "acked"  # some answer was 2xx for it (or named it in ``accepted_ids``)
REFUSED = "refused"  # every answer was a definitive refusal that accepted nothing of it
UNKNOWN = "unknown"  # no definitive answer before the load gave up

# What the load sends; "conflict" is an id reused with other content on purpose
# (``expect_dead``), "read" requests carry no points (events only).
KINDS = ("single", "batch", "bulk", "ack", "conflict")
READ = "read"

# The status recorded for an attempt that got no answer: the connection failed or
# timed out (599, as harness/loadgen.py), or the client cut it on purpose (499).
NO_ANSWER = 599
CLIENT_CUT = 499


@dataclass
class Sent:
    """One logical point, as the checker needs it."""

    competition_id: int
    id: str | None  # the client's id, or the server's once an answer named it
    participant_id: int
    value: float  # unique within the run: the point's identity for the checker
    outcome: str  # ACKED, REFUSED or UNKNOWN
    expect_dead: bool = False  # a version sent to be refused or dead-lettered
    kind: str = ""


@dataclass
class Event:
    """One HTTP attempt (wall-clock times, so they line up with the nemesis's faults)."""

    t_sent: float
    t_answered: float
    kind: str
    status: int  # NO_ANSWER or CLIENT_CUT when there was none
    latency_s: float
    points: int  # points the request carried
    accepted: int = 0  # points this answer newly acknowledged


@dataclass
class Ledger:
    """Everything one load (or one prober) sent.  ``first_value`` lets two writers in
    one run (the load, the nemesis's probes) draw values from ranges that never meet."""

    run_id: str
    first_value: int = 1
    sent: list[Sent] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    _next_value: int = 0
    errors: list[str] = field(default_factory=list)  # the writer's own failures (bugs)

    def __post_init__(self) -> None:
        self._next_value = max(self._next_value, self.first_value)

    def next_value(self) -> float:
        """A value no other point of this ledger has (integer-valued, exact as a float)."""
        value = self._next_value
        self._next_value += 1
        return float(value)

    def add(self, competition_id: int, participant_id: int, *, kind: str,
            id: str | None = None, value: float | None = None,
            expect_dead: bool = False) -> Sent:
        """A new logical point, ``unknown`` until an answer says otherwise."""
        entry = Sent(competition_id, id, participant_id,
                     self.next_value() if value is None else value, UNKNOWN,
                     expect_dead, kind)
        self.sent.append(entry)
        return entry

    def event(self, event: Event) -> None:
        self.events.append(event)

    def merge(self, other: Ledger) -> None:
        """Take in another writer's points and events (e.g. the nemesis's probes)."""
        self.sent.extend(other.sent)
        self.events.extend(other.events)
        self.errors.extend(other.errors)

    def counts(self) -> dict[str, int]:
        """Points by kind and by outcome (for the report and for tests)."""
        out: dict[str, int] = {}
        for entry in self.sent:
            out[f"kind:{entry.kind}"] = out.get(f"kind:{entry.kind}", 0) + 1
            out[entry.outcome] = out.get(entry.outcome, 0) + 1
        return out

    def to_json(self) -> bytes:
        return orjson.dumps({
            "run_id": self.run_id, "first_value": self.first_value,
            "next_value": self._next_value, "errors": self.errors,
            "sent": [asdict(s) for s in self.sent],
            # Events as rows: a five-minute run makes tens of thousands of them.
            "event_fields": list(Event.__dataclass_fields__),
            "events": [list(asdict(e).values()) for e in self.events]})

    @classmethod
    def from_json(cls, data: bytes | str) -> Ledger:
        doc: dict[str, Any] = orjson.loads(data)
        names = doc["event_fields"]
        return cls(doc["run_id"], doc["first_value"],
                   [Sent(**s) for s in doc["sent"]],
                   [Event(**dict(zip(names, row))) for row in doc["events"]],
                   doc["next_value"], list(doc.get("errors", [])))
