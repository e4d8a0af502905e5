"""The exactly-once checker: what the clients were told against what the server kept.

``check`` is pure (rows in, verdict out) so that unit tests can feed it each kind
of failure by hand; ``read_outcome`` is the one function here that does I/O — it
reads, after a run has drained, the rows, the standings and the dead letters of
the run's competitions.

A logical point is found by its ``value`` (unique within a run, see
``ledger.py``), not by its id: a batch's points have the server's ids, which a
client whose every attempt failed never learnt.  The rules, from the issue:

* every point some answer acknowledged is committed exactly once, with its
  content — or it is a dead letter, which is then *unaccounted* (the server
  threw away a valid point; it is not counted lost as well);
* nothing is committed that every answer refused, nor any value no client sent;
* every participant's standing is the sum of its committed values;
* every dead letter is a version the load sent on purpose to be refused (an id
  reused with other content, ``expect_dead``), dead-lettered as ``id_conflict``.

Standings are compared per participant: a participant id belongs to one
competition (``participants.competition_id``), and ``standings`` is keyed by it.
"""

from __future__ import annotations

import math
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.chaos.ledger import ACKED, REFUSED, UNKNOWN, Sent

EXAMPLES = 10  # per failure kind: enough to debug, small enough for a report
STANDING_TOLERANCE = 1e-6  # relative: standings are sums of doubles


@dataclass
class Committed:
    competition_id: int
    id: str
    participant_id: int
    value: float


@dataclass
class DeadLetter:
    competition_id: int | None
    id: str | None
    participant_id: int | None
    value: float | None
    reason: str


FAILURES = ("lost", "doubled", "wrong_content", "phantom", "wrong_standings",
            "unaccounted_dead_letters")
INFORMATION = ("acked", "committed", "unknown_committed", "unknown_not_committed",
               "refused", "dead_letters")


@dataclass
class Verdict:
    lost: int = 0
    doubled: int = 0
    wrong_content: int = 0
    phantom: int = 0
    wrong_standings: int = 0
    unaccounted_dead_letters: int = 0
    acked: int = 0
    committed: int = 0
    unknown_committed: int = 0
    unknown_not_committed: int = 0
    refused: int = 0
    dead_letters: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(getattr(self, name) == 0 for name in FAILURES)

    def fail(self, kind: str, example: dict[str, Any]) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES:
            shown.append(example)

    def as_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in FAILURES + INFORMATION},
                "ok": self.ok, "examples": self.examples}


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=STANDING_TOLERANCE, abs_tol=STANDING_TOLERANCE)


def _matches(sent: Sent, row: Committed) -> bool:
    """The row is this logical point as it was sent (an id the client never learnt
    — a batch given up — matches any)."""
    return (sent.competition_id == row.competition_id
            and sent.participant_id == row.participant_id
            and (sent.id is None or sent.id == row.id))


def check(sent: list[Sent], rows: list[Committed], standings: dict[int, float],
          dead: list[DeadLetter]) -> Verdict:
    """Judge a run: ``sent`` from the ledgers (load and probes), ``rows`` and
    ``standings`` (participant id → total) of the run's competitions, ``dead`` its
    dead letters.  Each failure is counted once, where it shows first."""
    verdict = Verdict(committed=len(rows), dead_letters=len(dead))
    by_value: dict[float, Sent] = {}
    for entry in sent:
        by_value.setdefault(entry.value, entry)
        if entry.outcome == ACKED:
            verdict.acked += 1
        elif entry.outcome == REFUSED:
            verdict.refused += 1

    _check_rows(verdict, by_value, rows)
    dead_values = _check_dead(verdict, by_value, dead)
    committed_values = {row.value for row in rows}
    for entry in sent:
        if entry.value in committed_values:
            verdict.unknown_committed += entry.outcome == UNKNOWN
        elif entry.outcome == UNKNOWN:
            verdict.unknown_not_committed += 1
        elif (entry.outcome == ACKED and not entry.expect_dead
              and entry.value not in dead_values):
            verdict.fail("lost", asdict(entry))
    _check_standings(verdict, rows, standings)
    return verdict


def _check_rows(verdict: Verdict, by_value: dict[float, Sent],
                rows: list[Committed]) -> None:
    per_value = Counter(row.value for row in rows)
    per_key: dict[tuple[int, str], list[Committed]] = defaultdict(list)
    for row in rows:
        per_key[(row.competition_id, row.id)].append(row)
    for value, times in per_value.items():
        if times > 1:
            verdict.fail("doubled", {"value": value, "times": times, "rows": [
                asdict(r) for r in rows if r.value == value][:5]})
    for key, same_key in per_key.items():
        # A key twice whose rows are all one doubled value is already counted.
        if len(same_key) > 1 and any(per_value[r.value] == 1 for r in same_key):
            verdict.fail("doubled", {"competition_id": key[0], "id": key[1],
                                     "times": len(same_key),
                                     "rows": [asdict(r) for r in same_key[:5]]})
    seen: set[float] = set()
    for row in rows:
        if row.value in seen:
            continue  # a doubled point is judged once
        seen.add(row.value)
        entry = by_value.get(row.value)
        if entry is None:
            verdict.fail("phantom", {"row": asdict(row), "why": "a value nobody sent"})
        elif entry.outcome == REFUSED:
            verdict.fail("phantom", {"row": asdict(row), "sent": asdict(entry),
                                     "why": "committed though every answer refused it"})
        elif entry.expect_dead or not _matches(entry, row):
            verdict.fail("wrong_content", {"row": asdict(row), "sent": asdict(entry)})


def _check_dead(verdict: Verdict, by_value: dict[float, Sent],
                dead: list[DeadLetter]) -> set[float]:
    """Dead letters that are not a version sent to be refused; the values of the
    logical points that are dead letters (they are not also lost)."""
    by_key: dict[tuple[int, str], list[Sent]] = defaultdict(list)
    for version in by_value.values():
        if version.id is not None:
            by_key[(version.competition_id, version.id)].append(version)
    values: set[float] = set()
    for letter in dead:
        entry: Sent | None
        entry = by_value.get(letter.value) if letter.value is not None else None
        if entry is None and letter.competition_id is not None and letter.id is not None:
            versions = by_key.get((letter.competition_id, letter.id), [])
            entry = versions[0] if len(versions) == 1 else None
        if entry is not None:
            values.add(entry.value)
        if entry is None or not entry.expect_dead or letter.reason != "id_conflict":
            verdict.fail("unaccounted_dead_letters", {
                "dead_letter": asdict(letter),
                "sent": asdict(entry) if entry is not None else None})
    return values


def _check_standings(verdict: Verdict, rows: list[Committed],
                     standings: dict[int, float]) -> None:
    expected: dict[int, float] = defaultdict(float)
    for row in rows:
        expected[row.participant_id] += row.value
    for participant in sorted(set(expected) | set(standings)):
        want, have = expected.get(participant, 0.0), standings.get(participant, 0.0)
        if not _same(want, have):
            verdict.fail("wrong_standings", {"participant_id": participant,
                                             "standing": have, "sum_of_committed": want})


# -- reading a run's outcome (the one place with I/O) ---------------------------------

def read_outcome(database_url: str, url: str, token: str, run_id: str,
                 competition_ids: Iterable[int]
                 ) -> tuple[list[Committed], dict[int, float], list[DeadLetter]]:
    """The committed rows, the standings and the dead letters of ``competition_ids``.

    Call it once the queue has drained.  A standing is read as the folded total
    plus the deltas not yet folded, in one snapshot (the folder moves deltas in
    transactions of its own, so a snapshot's sum is what the leaderboard shows
    once it has run).  Dead letters come from ``GET /v1/admin/dlq`` (every page);
    one whose point is unreadable (``point`` null) is kept, with no competition:
    the checker cannot account for it.  ``run_id`` is not needed to select (a chaos
    stack is the run's own) and is kept for the report's sake.
    """
    import psycopg2  # the harness imports it only where it reads PostgreSQL

    competitions = sorted(set(competition_ids))
    conn = psycopg2.connect(database_url)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT competition_id, id, participant_id, value FROM points "
                        "WHERE competition_id = ANY(%s)", (competitions,))
            rows = [Committed(int(c), str(i), int(p), float(v))
                    for c, i, p, v in cur.fetchall()]
            cur.execute(
                "SELECT participant_id, sum(total) FROM ("
                " SELECT participant_id, total FROM standings"
                "  WHERE competition_id = ANY(%s)"
                " UNION ALL"
                " SELECT participant_id, total FROM standing_deltas"
                "  WHERE competition_id = ANY(%s)) AS s GROUP BY participant_id",
                (competitions, competitions))
            standings = {int(p): float(t) for p, t in cur.fetchall()}
        conn.rollback()
    finally:
        conn.close()
    wanted = set(competitions)
    dead = [letter for letter in _dead_letters(url, token)
            if letter.competition_id is None or letter.competition_id in wanted]
    return rows, standings, dead


def _dead_letters(url: str, token: str) -> list[DeadLetter]:
    from harness.server import api

    letters: list[DeadLetter] = []
    cursor: str | None = None
    while True:
        query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        status, page = api(url, "GET", "/v1/admin/dlq?" + urllib.parse.urlencode(query),
                           token)
        if status != 200:
            raise RuntimeError(f"GET /v1/admin/dlq answered {status}: {page}")
        for item in page["items"]:
            point = item.get("point")
            reason = str(item.get("reason"))
            if not isinstance(point, dict):
                letters.append(DeadLetter(None, None, None, None, reason))
                continue
            value = point.get("value")
            letters.append(DeadLetter(
                _int(point.get("competition_id")), _str(point.get("id")),
                _int(point.get("participant_id")),
                float(value) if isinstance(value, int | float) else None, reason))
        cursor = page.get("next_cursor")
        if not cursor or not page["items"]:
            return letters


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
