"""Thresholds: parsed from the text summary.json keeps, and judged against a run's figures."""

from __future__ import annotations

from typing import Any

import pytest

from harness import thresholds


def _run(ok: int = 98, dropped: int = 0, p99_ms: float = 150.0) -> dict[str, Any]:
    phase = {"name": "burst", "sent": 100 - dropped, "ok": ok, "dropped": dropped,
             "rate": 50.0, "latency_ms": {"p99": p99_ms}, "service_ms": {"p99": 10.0}}
    return {"phases": [phase], "server": {"e2e_lag_s": {"p99": 0.4}}}


def _parse(*texts: str) -> tuple[thresholds.Threshold, ...]:
    problems: list[str] = []
    parsed = thresholds.parse_texts(texts, {"burst"}, problems)
    assert not problems
    return parsed


def test_text_round_trips_to_the_same_threshold() -> None:
    problems: list[str] = []
    original = thresholds.parse("pipelined/burst.latency.p99", " < 200ms ", {"burst"}, problems)
    assert original is not None and not problems
    assert original.text == "pipelined/burst.latency.p99 < 200ms"
    assert _parse(original.text) == (original,)
    assert original.value == pytest.approx(0.2)


@pytest.mark.parametrize("text, passed, measured", [
    ("burst.success > 97%", True, 0.98),
    ("burst.success >= 99%", False, 0.98),
    ("burst.latency.p99 < 200ms", True, 0.15),
    ("all.service.p99 < 5ms", False, 0.01),
    ("burst.rate >= 50/s", True, 50.0),
    ("e2e_lag.p99 < 1s", True, 0.4),
    ("e2e_lag.max < 1s", False, None),  # not measured: fails rather than passing silently
])
def test_evaluate_against_a_run(text: str, passed: bool, measured: float | None) -> None:
    (threshold,) = _parse(text)
    assert thresholds.evaluate(threshold, _run()) == (passed, pytest.approx(measured))


@pytest.mark.parametrize("text, measured, shown", [
    ("burst.latency.p99 < 200ms", 0.1504, "150.4 ms"),
    ("e2e_lag.p99 < 2s", 3.29, "3.290 s"),
    ("burst.success > 99%", 0.98, "98.00%"),
    ("burst.rate >= 50/s", 1234.5, "1,234.5/s"),
    ("burst.dropped < 1", 2.0, "2"),
    ("burst.dropped < 1", None, "not measured"),
])
def test_measured_values_are_shown_in_threshold_units(text: str, measured: float | None,
                                                      shown: str) -> None:
    (threshold,) = _parse(text)
    assert threshold.show(measured) == shown


def test_dropped_requests_count_against_success() -> None:
    (threshold,) = _parse("burst.success > 97%")
    assert thresholds.evaluate(threshold, _run(ok=96, dropped=2))[0] is False


def test_check_applies_a_path_prefix_to_that_path_only() -> None:
    verdicts = thresholds.check(_parse("naive/burst.success > 99%", "burst.rate > 1/s"),
                                {"naive": _run(), "pipelined": _run(ok=100)})
    assert [(v["threshold"].split(".")[1], v["path"], v["passed"]) for v in verdicts] == [
        ("success > 99%", "naive", False), ("rate > 1/s", "naive", True),
        ("rate > 1/s", "pipelined", True)]


def test_unparseable_text_is_a_problem_not_a_crash() -> None:
    problems: list[str] = []
    assert thresholds.parse_texts(["burst.success"], {"burst"}, problems) == ()
    assert "is not 'KEY CONDITION'" in problems[0]
