"""The exactly-once checker, fed each kind of failure by hand: each is caught, once."""

from __future__ import annotations

import orjson
import pytest

from harness.chaos.checker import Committed, DeadLetter, Verdict, check
from harness.chaos.ledger import ACKED, REFUSED, UNKNOWN, Event, Ledger, Sent

FAILURES = ("lost", "doubled", "wrong_content", "phantom", "wrong_standings",
            "unaccounted_dead_letters")


def _run() -> tuple[list[Sent], list[Committed], dict[int, float]]:
    """A clean run: three acked points on two participants, one batch point whose id
    only the server knew, one refused and one unknown-and-never-committed."""
    sent = [Sent(1, "r-s1", 10, 1.0, ACKED, kind="single"),
            Sent(1, "r-s2", 11, 2.0, ACKED, kind="single"),
            Sent(1, "srv-a", 10, 3.0, ACKED, kind="batch"),
            Sent(1, None, 11, 4.0, UNKNOWN, kind="batch"),
            Sent(1, "r-s5", 10, 5.0, REFUSED, kind="single"),
            Sent(1, "r-s6", 11, 6.0, UNKNOWN, kind="single")]
    rows = [Committed(1, "r-s1", 10, 1.0), Committed(1, "r-s2", 11, 2.0),
            Committed(1, "srv-a", 10, 3.0), Committed(1, "srv-b", 11, 4.0)]
    return sent, rows, {10: 4.0, 11: 6.0}


def _only(verdict: Verdict, kind: str) -> None:
    """Exactly one failure, of ``kind``, with an example."""
    counts = {name: getattr(verdict, name) for name in FAILURES}
    assert counts == {name: int(name == kind) for name in FAILURES}, verdict.examples
    assert len(verdict.examples[kind]) == 1
    assert not verdict.ok


def test_a_clean_run_is_ok_and_counts_what_it_saw() -> None:
    sent, rows, standings = _run()
    verdict = check(sent, rows, standings, [])
    assert verdict.ok, verdict.examples
    summary = verdict.as_dict()
    assert summary["ok"] is True
    assert {k: summary[k] for k in ("acked", "committed", "unknown_committed",
                                    "unknown_not_committed", "refused", "dead_letters")} \
        == {"acked": 3, "committed": 4, "unknown_committed": 1,
            "unknown_not_committed": 1, "refused": 1, "dead_letters": 0}


def test_an_acked_point_never_committed_is_lost() -> None:
    sent, rows, _ = _run()
    rows = [r for r in rows if r.id != "r-s2"]
    verdict = check(sent, rows, {10: 4.0, 11: 4.0}, [])
    _only(verdict, "lost")
    assert verdict.examples["lost"][0]["id"] == "r-s2"


def test_one_value_committed_under_two_ids_is_doubled() -> None:
    sent, rows, _ = _run()
    rows.append(Committed(1, "srv-c", 11, 4.0))  # the unknown batch point, twice
    _only(check(sent, rows, {10: 4.0, 11: 10.0}, []), "doubled")


def test_one_competition_and_id_committed_twice_is_doubled() -> None:
    sent, rows, _ = _run()
    rows.append(Committed(1, "r-s1", 10, 1.0))
    _only(check(sent, rows, {10: 5.0, 11: 6.0}, []), "doubled")


def test_one_competition_and_id_holding_two_points_is_doubled() -> None:
    sent, rows, standings = _run()
    rows[3] = Committed(1, "r-s1", 11, 4.0)  # the batch point whose id nobody learnt
    _only(check(sent, rows, standings, []), "doubled")


def test_the_same_id_in_two_competitions_is_two_points_not_a_double() -> None:
    sent = [Sent(1, "x", 10, 1.0, ACKED), Sent(2, "x", 20, 2.0, ACKED)]
    rows = [Committed(1, "x", 10, 1.0), Committed(2, "x", 20, 2.0)]
    assert check(sent, rows, {10: 1.0, 20: 2.0}, []).ok


def test_a_committed_point_of_another_participant_is_wrong_content() -> None:
    sent, rows, _ = _run()
    rows[0] = Committed(1, "r-s1", 11, 1.0)
    _only(check(sent, rows, {10: 3.0, 11: 7.0}, []), "wrong_content")


def test_a_committed_point_under_another_id_is_wrong_content() -> None:
    sent, rows, standings = _run()
    rows[0] = Committed(1, "r-s9", 10, 1.0)
    _only(check(sent, rows, standings, []), "wrong_content")


def test_a_point_every_answer_refused_but_committed_is_a_phantom() -> None:
    sent, rows, _ = _run()
    rows.append(Committed(1, "r-s5", 10, 5.0))
    verdict = check(sent, rows, {10: 9.0, 11: 6.0}, [])
    _only(verdict, "phantom")
    assert "refused" in verdict.examples["phantom"][0]["why"]


def test_a_committed_value_nobody_sent_is_a_phantom() -> None:
    sent, rows, _ = _run()
    rows.append(Committed(1, "zz", 10, 99.0))
    verdict = check(sent, rows, {10: 103.0, 11: 6.0}, [])
    _only(verdict, "phantom")
    assert "nobody" in verdict.examples["phantom"][0]["why"]


@pytest.mark.parametrize("standings", [{10: 4.0, 11: 6.5}, {10: 4.0}, {10: 4.0, 11: 6.0, 12: 1.0}],
                         ids=["off", "missing", "extra"])
def test_a_standing_that_is_not_the_sum_of_its_committed_points_is_wrong(
        standings: dict[int, float]) -> None:
    sent, rows, _ = _run()
    _only(check(sent, rows, standings, []), "wrong_standings")


def test_standings_within_the_float_tolerance_are_right() -> None:
    sent, rows, _ = _run()
    assert check(sent, rows, {10: 4.0 * (1 + 1e-9), 11: 6.0}, []).ok


def test_a_dead_letter_nobody_expected_is_unaccounted() -> None:
    sent, rows, standings = _run()
    letter = DeadLetter(1, "ghost", 10, 77.0, "unknown_participant")
    _only(check(sent, rows, standings, [letter]), "unaccounted_dead_letters")


def test_an_unreadable_dead_letter_is_unaccounted() -> None:
    sent, rows, standings = _run()
    letter = DeadLetter(None, None, None, None, "undecodable")
    _only(check(sent, rows, standings, [letter]), "unaccounted_dead_letters")


def test_an_expected_conflict_version_dead_lettered_is_accounted_for() -> None:
    sent, rows, standings = _run()
    sent += [Sent(1, "r-s1", 10, 7.0, ACKED, expect_dead=True, kind="conflict"),
             Sent(1, "r-s2", 11, 8.0, REFUSED, expect_dead=True, kind="conflict")]
    dead = [DeadLetter(1, "r-s1", 10, 7.0, "id_conflict"),
            DeadLetter(1, "r-s2", 11, 8.0, "id_conflict")]
    verdict = check(sent, rows, standings, dead)
    assert verdict.ok, verdict.examples
    assert verdict.dead_letters == 2


def test_an_expected_conflict_version_dead_lettered_for_another_reason_is_unaccounted(
        ) -> None:
    sent, rows, standings = _run()
    sent += [Sent(1, "r-s1", 10, 7.0, ACKED, expect_dead=True, kind="conflict")]
    dead = [DeadLetter(1, "r-s1", 10, 7.0, "unknown_participant")]
    _only(check(sent, rows, standings, dead), "unaccounted_dead_letters")


def test_an_expected_conflict_version_committed_is_wrong_content() -> None:
    sent, rows, _ = _run()
    sent.append(Sent(1, "r-s1", 10, 7.0, ACKED, expect_dead=True, kind="conflict"))
    rows[0] = Committed(1, "r-s1", 10, 7.0)
    verdict = check(sent, rows, {10: 10.0, 11: 6.0}, [])
    # The version that took the key is wrong, and the point acked first is lost.
    assert (verdict.wrong_content, verdict.lost) == (1, 1)
    assert verdict.doubled == verdict.phantom == verdict.wrong_standings == 0


def test_an_acked_point_dead_lettered_is_unaccounted_not_lost() -> None:
    sent, rows, _ = _run()
    rows = [r for r in rows if r.id != "r-s2"]
    dead = [DeadLetter(1, "r-s2", 11, 2.0, "unexpected_error")]
    verdict = check(sent, rows, {10: 4.0, 11: 4.0}, dead)
    _only(verdict, "unaccounted_dead_letters")
    assert verdict.examples["unaccounted_dead_letters"][0]["sent"]["id"] == "r-s2"


def test_examples_are_capped_while_every_failure_is_counted() -> None:
    sent = [Sent(1, f"p{i}", 10, float(i), ACKED) for i in range(1, 31)]
    verdict = check(sent, [], {}, [])
    assert verdict.lost == 30
    assert len(verdict.examples["lost"]) == 10


def test_a_ledger_survives_its_json() -> None:
    ledger = Ledger("r", first_value=5)
    point = ledger.add(1, 10, kind="single", id="r-s1")
    point.outcome = ACKED
    ledger.add(1, 11, kind="conflict", id="r-s1", expect_dead=True)
    ledger.event(Event(1.0, 1.5, "single", 202, 0.5, 1, 1))
    again = Ledger.from_json(ledger.to_json())
    assert again == ledger
    assert again.next_value() == 7.0  # values never repeat across the round trip
    assert [s.value for s in again.sent] == [5.0, 6.0]
    assert orjson.loads(ledger.to_json())["run_id"] == "r"
