"""Scenario files: the shipped ones load; bad ones are refused naming file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.chaos import plan as chaos_plan
from harness.executors import BulkUpload, ConstantClients, ConstantRate, RampingRate, Stage
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

RAMP = """
name = "t"
[[phases]]
name = "r"
executor = "ramping-rate"
kind = "batch"
batch_size = 10
start_rate = 5
stages = [{ duration_s = 2, target = 20 }, { duration_s = 3, target = 0 }]

[[phases]]
name = "c"
executor = "constant-clients"
kind = "leaderboard"
vus = 4
duration_s = 5
think_time_s = 0.1
start = "with-previous"

[[phases]]
name = "u"
executor = "bulk-upload"
points = 100
format = "ndjson"
"""


def test_every_shipped_scenario_loads() -> None:
    names = {path.stem for path in list_scenarios()}
    assert {"smoke", "competition_burst", "bulk_upload", "steady_mixed",
            "leaderboard_storm", "single_points", "connection_storm", "bulk_1m",
            "sustained_commits", "steady_half"} <= names
    for path in list_scenarios():
        if chaos_plan.is_chaos(str(path)):  # a [chaos] table instead of phases
            assert chaos_plan.load(str(path)).name == path.stem
            continue
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
    # Each executor reads only its own keys, by their k6 names.
    (GOOD.replace("rate = 10", "vus = 10"), "phases[0].vus: unknown key"),
    (GOOD + "think_time_s = 1\n", "phases[0].think_time_s: unknown key"),
    (RAMP.replace("vus = 4", "clients = 4"), "phases[1].clients: unknown key (now 'vus')"),
    (RAMP.replace("vus = 4", "connections = 4\nvus = 4"), "phases[1].connections: unknown key"),
    (RAMP.replace("vus = 4\n", ""), "phases[1].vus: is required"),
    (RAMP.replace("vus = 4", "vus = 0"), "phases[1].vus: must be >= 1"),
    (RAMP.replace("target = 20", "target_rate = 20"),
     "phases[0].stages[0].target_rate: unknown key (now 'target')"),
    (RAMP.replace("target = 20", "target = -1"), "phases[0].stages[0].target: must be >= 0"),
    (RAMP.replace("{ duration_s = 2, target = 20 }", "{ target = 20 }"),
     "phases[0].stages[0].duration_s: is required"),
    (RAMP.replace("stages = [{ duration_s = 2, target = 20 }, { duration_s = 3, target = 0 }]",
                  "stages = []"), "phases[0].stages: needs at least one stage"),
    (RAMP.replace("stages = [{", "stages = [7, {"), "phases[0].stages[0]: must be a table"),
    (RAMP.replace("start_rate = 5", "rate = 5"), "phases[0].rate: unknown key"),
    (RAMP.replace('format = "ndjson"', 'format = "xml"'), "phases[2].format: must be one of"),
    (RAMP.replace("points = 100", "points = 100\nkind = 'point'"),
     "phases[2].kind: bulk-upload sends kind 'bulk'"),
    (GOOD + '[thresholds]\n"slow/p.success" = "> 99%"\n',
     "thresholds.slow/p.success: a path prefix must be naive/ or pipelined/"),
    # A scenario's default paths.
    ('paths = ["fast"]\n' + GOOD, "paths: must name paths among naive, pipelined (got ['fast'])"),
    ("paths = []\n" + GOOD, "paths: needs at least one of naive, pipelined"),
    ('paths = "pipelined"\n' + GOOD, "paths: must be list"),
    ('paths = ["naive", "naive"]\n' + GOOD, "paths: names a path twice"),
    # A constant rate as a fraction of the baseline: one of the two, never both.
    (GOOD.replace("rate = 10", "rate_of_baseline = 0.5\nrate = 10"),
     "phases[0].rate_of_baseline: give rate or rate_of_baseline, not both"),
    (GOOD.replace("rate = 10", ""), "phases[0].rate: is required (or rate_of_baseline)"),
    (GOOD.replace("rate = 10", "rate_of_baseline = 0"),
     "phases[0].rate_of_baseline: must be >= 1e-06"),
    (GOOD.replace("rate = 10", "rate_of_baseline = '3/4'"),
     "phases[0].rate_of_baseline: must be float"),
    (RAMP.replace("start_rate = 5", "rate_of_baseline = 0.5"),
     "phases[0].rate_of_baseline: unknown key"),
    (GOOD.replace("name = \"p\"", "name = \"server\""), "phases[0].name: 'server' would not"),
    (GOOD + '[thresholds]\n"p.rate" = "> 0.5 × baseline"\n"p.latency.p99" = "< 1 × baseline"\n',
     "thresholds.p.latency.p99: '× baseline' compares rates"),
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


def test_each_executor_reads_its_own_keys(tmp_path: Path) -> None:
    path = tmp_path / "ramp.toml"
    path.write_text(RAMP)
    ramp, clients, upload = load(str(path)).phases
    assert ramp.executor == RampingRate(start_rate=5, stages=(Stage(2, 20), Stage(3, 0)))
    assert (ramp.kind, ramp.batch_size, ramp.total_s) == ("batch", 10, 5)
    assert clients.executor == ConstantClients(vus=4, duration_s=5, think_time_s=0.1)
    assert clients.with_previous and not ramp.with_previous
    assert upload.executor == BulkUpload(points=100, format="ndjson")
    assert upload.kind == "bulk"


def test_scale_multiplies_rates_and_counts_not_durations() -> None:
    scenario = load("smoke").scaled(0.5)
    phases = {p.name: p.executor for p in scenario.phases}
    assert phases["singles"] == ConstantRate(rate=25, duration_s=2, connections=8)
    assert phases["batches"].start_rate == 2.5 and phases["batches"].stages == (Stage(2, 10),)
    assert phases["boards"].vus == 2 and phases["boards"].duration_s == 2
    assert phases["upload"].points == 2500


def test_summary_definition_names_each_executor() -> None:
    definition = load("smoke").to_dict()
    batches = next(p for p in definition["phases"] if p["name"] == "batches")
    assert batches["executor"] == {"type": "ramping-rate", "start_rate": 5.0,
                                   "stages": ({"duration_s": 2.0, "target": 20.0},),
                                   "arrival": "even", "connections": 8}


def test_paths_and_rate_of_baseline_are_read_and_resolved(tmp_path: Path) -> None:
    path = tmp_path / "relative.toml"
    path.write_text('paths = ["pipelined"]\n' +
                    GOOD.replace("rate = 10", "rate_of_baseline = 0.75\nconnections = 100"))
    scenario = load(str(path))
    assert scenario.paths == ("pipelined",)
    assert scenario.needs_baseline == ["p"]
    assert scenario.phases[0].executor == ConstantRate(
        rate=None, duration_s=1, connections=100, rate_of_baseline=0.75)
    resolved = scenario.scaled(0.1).resolved(4000.0)  # scaled first, as bench does
    assert resolved.phases[0].executor.rate == pytest.approx(300)
    assert resolved.phases[0].executor.rate_of_baseline == pytest.approx(0.075)
    with pytest.raises(ValueError, match="p: reads the run's baseline"):
        scenario.resolved(None)
    assert load("smoke").paths == ("naive", "pipelined")  # without the key: both


def test_reference_baseline_scales_the_whole_load_by_the_runs_baseline(
        tmp_path: Path) -> None:
    path = tmp_path / "relative.toml"
    path.write_text("reference_baseline = 8000\n" + GOOD)
    scenario = load(str(path))
    assert scenario.needs_baseline == ["reference_baseline"]
    assert scenario.baseline_scale(4000.0) == pytest.approx(0.5)
    assert scenario.resolved(4000.0).phases[0].executor.rate == pytest.approx(5)
    assert scenario.resolved(16000.0).phases[0].executor.rate == pytest.approx(20)
    with pytest.raises(ValueError, match="reference_baseline: reads the run's baseline"):
        scenario.resolved(None)
    both = tmp_path / "both.toml"
    both.write_text("reference_baseline = 8000\n"
                    + GOOD.replace("rate = 10", "rate_of_baseline = 0.75"))
    with pytest.raises(ScenarioError, match="cannot also set rate_of_baseline"):
        load(str(both))
