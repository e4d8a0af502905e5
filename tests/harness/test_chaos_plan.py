"""The chaos scenario file, its scaling, its thresholds and its report (no processes)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from harness import report as run_report
from harness.chaos import plan
from harness.chaos.run import PATH
from harness.scenario import ScenarioError
from harness.thresholds import CHAOS_METRICS, check


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_the_shipped_chaos_scenario_names_every_fault_kind_and_the_checkers_bars() -> None:
    chaos = plan.load("chaos")
    assert chaos.duration_s >= 300 and chaos.processes == 2
    assert len(set(chaos.nemesis.kinds)) >= 6
    bars = {t.text for t in chaos.thresholds}
    assert {"chaos.lost < 1", "chaos.doubled < 1", "chaos.wrong_standings < 1"} <= bars
    assert plan.is_chaos("chaos") and not plan.is_chaos("smoke")


def test_a_scale_at_which_the_faults_cannot_fit_is_refused_before_anything_starts(
        ) -> None:
    with pytest.raises(ValueError, match="cannot fit"):
        plan.load("chaos").scaled(0.05)


def test_scale_shortens_the_load_and_the_fault_count_but_keeps_every_kind() -> None:
    chaos = plan.load("chaos")
    small = chaos.scaled(0.25)
    assert small.duration_s == pytest.approx(chaos.duration_s * 0.25)
    assert small.nemesis.faults == max(len(set(chaos.nemesis.kinds)),
                                       round(chaos.nemesis.faults * 0.25))
    assert (small.nemesis.min_s, small.nemesis.max_s) == (chaos.nemesis.min_s,
                                                          chaos.nemesis.max_s)
    assert small.load == chaos.load  # the same clients, for less time


def test_a_bad_chaos_file_is_refused_with_every_problem_named(tmp_path: Path) -> None:
    path = write(tmp_path, """
name = "bad"
[chaos]
duration_s = 30
processes = 1
colour = "red"
[chaos.load]
singles_per_sec = 3
[chaos.nemesis]
kinds = ["kill_server_child", "meteor"]
min_s = 9
max_s = 3
[thresholds]
"chaos.lots" = "< 1"
""")
    with pytest.raises(ScenarioError) as caught:
        plan.load(path)
    problems = "\n".join(caught.value.problems)
    for expected in ("chaos.colour: unknown key", "singles_per_sec", "meteor",
                     "min_s: must not exceed max_s", "chaos takes lost"):
        assert expected in problems, problems


def test_the_checkers_counts_decide_the_verdict_like_any_threshold() -> None:
    chaos = plan.load("chaos")
    clean = {"path": PATH, "phases": [], "chaos": {
        **dict.fromkeys(CHAOS_METRICS, 0), "unknown_not_committed": 3, "faults": 9,
        "fault_kinds": 9}}
    assert all(v["passed"] for v in check(chaos.thresholds, {PATH: clean}))
    for key, value in (("lost", 1), ("doubled", 2), ("wrong_standings", 1),
                       ("fault_kinds", 5), ("missing_kinds", 1), ("not_injected", 1),
                       ("without_effect", 1), ("not_undone", 1), ("load_errors", 2),
                       ("dlq_dropped", 1)):
        run = {**clean, "chaos": {**clean["chaos"], key: value}}
        failed = [v["threshold"] for v in check(chaos.thresholds, {PATH: run})
                  if not v["passed"]]
        assert failed == [f"chaos.{key} {'>= 6' if key == 'fault_kinds' else '< 1'}"]


def test_a_saved_chaos_run_is_redrawn_and_rejudged_by_run_py_report(tmp_path: Path) -> None:
    chaos = plan.load("chaos")
    run = {"path": PATH, "phases": [], "chaos": {
        **dict.fromkeys(CHAOS_METRICS, 0), "lost": 1, "faults": 2, "fault_kinds": 2,
        "missing_kinds": 7}}
    verdict = {"ok": False, "lost": 1, "doubled": 0, "wrong_content": 0, "phantom": 0,
               "wrong_standings": 0, "unaccounted_dead_letters": 0, "acked": 10,
               "committed": 9, "examples": {"lost": [{"id": "x-s1"}]}}
    summary = {
        "kind": "chaos", "scenario": "chaos", "description": "", "seed": 1, "scale": 0.1,
        "paths": [PATH], "created": "20261207T000000Z", "processes": 2, "load_s": 30,
        "git_commit": "0" * 40, "environment": {"cpus": 2}, "baseline": None,
        "scenario_definition": chaos.to_dict(), "runs": {PATH: run}, "started": 100.0,
        "faults": [{"kind": "kill_redis", "start": 105.0, "end": 110.0, "injected": True,
                    "undone": True, "ingest_recovered_s": 0.4, "commits_recovered_s": 1.2},
                   {"kind": "pause_claiming", "start": 107.0, "end": 115.0,
                    "injected": True, "undone": True, "ingest_recovered_s": 0.0,
                    "commits_recovered_s": None},
                   {"kind": "redis_maxmemory", "start": 108.0, "end": None,
                    "injected": True, "undone": False, "error": "undo: boom",
                    "effect": False}],
        "verdict": verdict, "timeline": {"accepted": [[0, 5], [1, 7]],
                                         "committed": [[0, 4], [1, 8]],
                                         "p99_ms": [[0, 12.5], [1, 40.0]]},
        "load": {"requests": 12, "by_kind": {"single": 12}, "statuses": {"202": 12},
                 "probes": 3, "probes_acked": 3},
        "drain_s": 1.5, "comparison": {"headline": {PATH: {"lost": 1}}}, "thresholds": []}
    (tmp_path / "summary.json").write_bytes(orjson.dumps(summary))
    out, verdicts = run_report.render(tmp_path)
    text = out.read_text()
    assert "**FAILED**" in text and "| lost | 1 |" in text and "x-s1" in text
    assert "| 2 | pause_claiming | 7.0 | 15.0 | 0.0 | never |  |" in text
    assert "| 3 | redis_maxmemory | 8.0 | – | never | never | not undone: undo: boom; no " \
        "effect seen |" in text
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    assert [v["threshold"] for v in verdicts if not v["passed"]] == [
        "chaos.lost < 1", "chaos.fault_kinds >= 6", "chaos.missing_kinds < 1"]
