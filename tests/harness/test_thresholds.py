"""Thresholds: parsed from the text summary.json keeps, and judged against a run's figures."""

from __future__ import annotations

from typing import Any

import pytest

from harness import thresholds


def _run(ok: int = 98, dropped: int = 0, p99_ms: float = 150.0) -> dict[str, Any]:
    phase = {"name": "burst", "sent": 100 - dropped, "ok": ok, "dropped": dropped,
             "rate": 50.0, "latency_ms": {"p50": 60.0, "p99": p99_ms},
             "service_ms": {"p99": 10.0}}
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
    ("burst.latency.p99_over_p50 < 3", True, 2.5),  # 150 ms over 60 ms
    ("burst.latency.p99_over_p50 < 2", False, 2.5),
    ("burst.service.p99_over_p50 < 3", False, None),  # no p50 measured
])
def test_evaluate_against_a_run(text: str, passed: bool, measured: float | None) -> None:
    (threshold,) = _parse(text)
    assert thresholds.evaluate(threshold, _run()) == (passed, pytest.approx(measured))


@pytest.mark.parametrize("text, measured, shown", [
    ("burst.latency.p99 < 200ms", 0.1504, "150 ms"),
    ("e2e_lag.p99 < 2s", 3.29, "3.29 s"),
    ("burst.success > 99%", 0.98, "98.0%"),
    ("burst.rate >= 50/s", 1234.5, "1,234/s"),
    ("burst.dropped < 1", 2.0, "2"),
    ("burst.dropped < 1", None, "not measured"),
    ("burst.latency.p99_over_p50 < 3", 2.5, "2.50×"),
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


def _full_run() -> dict[str, Any]:
    """A run with the server-side figures and a points rate, as summary.json keeps it."""
    run = _run()
    run["phases"][0]["points_per_s"] = 30_000.0
    run["server"].update(committed_points_per_s=12_000.0,
                         loop_lag_ms={"max": 40.0, "p99": 12.5})
    run["peak_rss_mb"] = 180.0
    run["drain_s"] = 2.5
    return run


@pytest.mark.parametrize("condition", ["> 0.75 × baseline", ">0.75x baseline",
                                       "> 0.75 * baseline", "> .75×baseline"])
def test_baseline_multiples_parse_in_every_spelling(condition: str) -> None:
    problems: list[str] = []
    threshold = thresholds.parse("burst.rate", condition, {"burst"}, problems)
    assert not problems and threshold is not None
    assert (threshold.of_baseline, threshold.value) == (True, 0.75)
    assert _parse(threshold.text) == (threshold,)  # and survive summary.json's round trip


@pytest.mark.parametrize("text, baseline, passed, measured", [
    ("burst.rate > 0.01 × baseline", 4000.0, True, 50.0),  # 50/s against a limit of 40/s
    ("burst.rate > 0.02 × baseline", 4000.0, False, 50.0),
    ("burst.points_rate > 7 x baseline", 4000.0, True, 30_000.0),
    ("server.committed_rate > 2.5 * baseline", 4000.0, True, 12_000.0),
    ("server.committed_rate > 3 × baseline", 5000.0, False, 12_000.0),
    ("burst.rate > 0.01 × baseline", None, False, None),  # no baseline: not measured
    ("burst.points_rate >= 30000/s", None, True, 30_000.0),
    ("server.peak_rss < 250MB", None, True, 180.0),
    ("server.peak_rss < 150", None, False, 180.0),
    ("server.loop_lag.max < 50ms", None, True, 0.04),
    ("server.loop_lag.p99 < 10ms", None, False, 0.0125),
    ("naive/server.committed_rate > 1/s", None, True, 12_000.0),
    ("server.drain < 30s", None, True, 2.5),
    ("server.drain < 2s", None, False, 2.5),
])
def test_baseline_relative_and_server_thresholds(text: str, baseline: float | None,
                                                 passed: bool, measured: float | None
                                                 ) -> None:
    (threshold,) = _parse(text)
    assert thresholds.evaluate(threshold, _full_run(), baseline) == (
        passed, pytest.approx(measured))


def test_server_figures_missing_from_a_run_are_not_measured() -> None:
    (rss, lag) = _parse("server.peak_rss < 250MB", "server.loop_lag.max < 5ms")
    target_run = _run()  # --target: no RSS, and a server too old to report its loop
    target_run["peak_rss_mb"] = None
    assert thresholds.evaluate(rss, target_run) == (False, None)
    assert thresholds.evaluate(lag, target_run) == (False, None)


def test_a_queue_that_never_emptied_fails_its_drain_bar() -> None:
    (drain,) = _parse("server.drain < 30s")
    stalled = _full_run()
    stalled["drain_s"] = None  # the drain timed out: the committer never caught up
    assert thresholds.evaluate(drain, stalled) == (False, None)


def test_a_baseline_verdict_shows_the_multiple_it_reached() -> None:
    (threshold,) = _parse("burst.rate > 0.75 × baseline")
    (verdict,) = thresholds.check([threshold], {"pipelined": _run()}, baseline_rps=100.0)
    assert verdict["passed"] is False
    assert verdict["shown"] == "50/s = 0.50× baseline (100/s)"
    (verdict,) = thresholds.check([threshold], {"pipelined": _run()})
    assert verdict == {"threshold": "burst.rate > 0.75 × baseline", "path": "pipelined",
                       "passed": False, "measured": None,
                       "shown": "not measured (no baseline in this run)"}


def test_ratio_thresholds_are_judged_once_per_run_not_per_path() -> None:
    accepted, committed = _parse("ratio.accepted > 32", "ratio.committed > 15")
    comparison = {"accepted points/s": {"ratio": 40.5},
                  "committed points/s": {"ratio": 9.0}}
    runs = {"naive": _run(), "pipelined": _run()}
    verdicts = thresholds.check([accepted, committed], runs, comparison=comparison)
    assert [(v["path"], v["passed"], v["shown"]) for v in verdicts] == [
        ("pipelined ÷ naive", True, "40.50×"), ("pipelined ÷ naive", False, "9.00×")]
    (alone,) = thresholds.check([accepted], {"pipelined": _run()},
                                comparison={"headline": {}})  # one path ran: no ratio
    assert alone["passed"] is False and alone["shown"].startswith("not measured")


@pytest.mark.parametrize("key, condition, expected", [
    ("burst.latency.p99", "< 0.5 × baseline", "'× baseline' compares rates"),
    ("server.peak_rss", "< 250ms", "peak_rss is a size: unit 'ms' does not fit"),
    ("burst.success", "> 99MB", "success is a fraction: unit 'MB' does not fit"),
    ("burst.dropped", "< 1%", "dropped is a count"),
    ("server.loop_lag.mean", "< 5ms", "server takes committed_rate, peak_rss"),
    ("server.rss", "< 5MB", "(got 'rss')"),
    ("ratio.accepted", "> 32%", "accepted is a ratio"),
    ("ratio.speed", "> 32", "ratio takes accepted or committed"),
    ("pipelined/ratio.accepted", "> 32", "a ratio compares both paths; it takes no path"),
    ("burst.rate", "> 1.2.3/s", "must look like"),
    ("burst.rate", "> 0.75 × median", "must look like"),
])
def test_bad_new_forms_are_problems_naming_the_key(key: str, condition: str,
                                                   expected: str) -> None:
    problems: list[str] = []
    assert thresholds.parse(key, condition, {"burst"}, problems) is None
    assert problems[0].startswith(f"thresholds.{key}: ") and expected in problems[0]


@pytest.mark.parametrize("text, measured, shown", [
    ("server.peak_rss < 250MB", 181.26, "181 MB"),
    ("server.loop_lag.p99 < 5ms", 0.0042, "4.20 ms"),
    ("ratio.committed > 15", 17.456, "17.46×"),
    ("burst.points_rate > 25 × baseline", 212_345.0, "212,345/s"),
])
def test_new_metrics_are_shown_in_their_units(text: str, measured: float, shown: str) -> None:
    (threshold,) = _parse(text)
    assert threshold.show(measured) == shown


def test_a_spread_takes_no_unit_and_only_known_percentiles() -> None:
    problems: list[str] = []
    assert thresholds.parse("burst.latency.p99_over_p50", "< 3ms", {"burst"}, problems) is None
    assert thresholds.parse("burst.latency.p98_over_p50", "< 3", {"burst"}, problems) is None
    assert len(problems) == 2
