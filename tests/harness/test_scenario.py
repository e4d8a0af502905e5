"""Scenario files: the shipped ones load; bad ones are refused naming file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenario import ScenarioError, list_scenarios, load

GOOD = """
name = "t"
[[phases]]
name = "p"
executor = "constant-rate"
kind = "point"
rate = 10
duration_s = 1
"""


def test_every_shipped_scenario_loads() -> None:
    names = {path.stem for path in list_scenarios()}
    assert {"smoke", "competition_burst", "bulk_upload", "steady_mixed",
            "leaderboard_storm"} <= names
    for path in list_scenarios():
        scenario = load(str(path))
        assert scenario.phases and scenario.name == path.stem


@pytest.mark.parametrize("text, expected", [
    ("name = 1\n[[phases]]\nname='p'\nexecutor='constant-rate'\nkind='point'\nrate=1\n"
     "duration_s=1", "name: must be str"),
    (GOOD + "colour = 'red'\n", "phases[0].colour: unknown key"),
    (GOOD.replace("constant-rate", "warp-speed"), "phases[0].executor: must be one of"),
    (GOOD.replace("rate = 10", "rate = -1"), "phases[0].rate: must be >= 0.1"),
    (GOOD.replace("rate = 10", "rate = true"), "phases[0].rate: must be float, not a boolean"),
    (GOOD.replace('kind = "point"', 'kind = "bulk"'), "phases[0].kind: 'bulk' needs"),
    ('name = "t"\n', "phases: is required"),
    (GOOD + '[thresholds]\n"p.latency.p99" = "fast"\n', "thresholds.p.latency.p99: must look"),
    (GOOD + '[thresholds]\n"q.success" = "> 99%"\n', "'q' is not a phase name"),
    (GOOD + '[thresholds]\n"p.speed" = "> 1"\n', "unknown metric 'speed'"),
    ("name = 't'\n[[phases\n", "not valid TOML"),
])
def test_bad_scenario_names_file_key_and_problem(tmp_path: Path, text: str,
                                                 expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load(str(path))
    assert str(path) in str(info.value)
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_unknown_scenario_name_lists_the_known_ones() -> None:
    with pytest.raises(ScenarioError) as info:
        load("no_such_scenario")
    assert "smoke" in info.value.problems[0]


def test_scale_multiplies_rates_and_counts_not_durations() -> None:
    scenario = load("smoke").scaled(0.5)
    singles = next(p for p in scenario.phases if p.name == "singles")
    upload = next(p for p in scenario.phases if p.name == "upload")
    assert (singles.rate, singles.duration_s, upload.points) == (25, 2, 2500)
