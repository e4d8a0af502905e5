"""``run.py bench`` end to end: real servers on fresh embedded stores, real artifacts."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small smoke bench over both paths, shared by the tests that read its files.

    Without the baseline (~5 s): ``test_a_failing_threshold_sets_a_nonzero_exit_code``
    measures one.
    """
    out = tmp_path_factory.mktemp("bench")
    result = run("bench", "smoke", "--scale", "0.3", "--out", str(out), "--no-baseline")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all thresholds met" in result.stdout
    return out / "smoke" / "latest"


@pytest.mark.timeout(600)
def test_smoke_writes_every_artifact_for_both_paths_and_the_ratio(smoke_run: Path,
                                                                  tmp_path: Path) -> None:
    latest = smoke_run
    assert latest.is_symlink()
    names = {p.name for p in latest.iterdir()}
    assert {"summary.json", "timeseries.csv", "latency_naive.hgrm", "latency_pipelined.hgrm",
            "throughput.png", "latency.png", "spectrum.png", "queue.png", "paths.png",
            "report.md"} <= names
    summary = orjson.loads((latest / "summary.json").read_bytes())
    assert set(summary["runs"]) == {"naive", "pipelined"}
    assert summary["comparison"]["accepted points/s"]["ratio"] > 0
    for run_ in summary["runs"].values():
        upload = next(p for p in run_["phases"] if p["name"] == "upload")
        assert upload["points_ok"] == 1500  # 5000 × 0.3, every line accepted
        assert run_["server"]["committed"] >= upload["points_ok"]
        assert run_["server"]["e2e_lag_s"]["p99"] >= 0
        # A last sample after the drain: the charts end at the depth the report states.
        assert run_["drain_s"] is not None
        assert run_["samples"][-1]["phase"] == "drain"
        assert run_["samples"][-1]["queue_depth"] == 0
    report = (latest / "report.md").read_text()
    assert "pipelined ÷ naive" in report and "![spectrum.png](spectrum.png)" in report
    assert "Value" in (latest / "latency_pipelined.hgrm").read_text()
    assert summary["baseline"] is None and "Baseline: not measured" in report

    # Compare from the saved files alone.
    compared = run("report", str(latest), str(latest), "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr
    table = (tmp_path / "cmp" / "report.md").read_text()
    assert "| ~ |" in table  # a run compared with itself changes nothing
    assert "paths.png" not in table  # no naive/pipelined pair among "A naive", "B naive"...


@pytest.mark.timeout(600)
def test_smoke_measures_the_cost_of_each_group_and_the_loop_lag(smoke_run: Path) -> None:
    summary = orjson.loads((smoke_run / "summary.json").read_bytes())
    for run_ in summary["runs"].values():
        cost = run_["cost"]
        assert cost["cpu_measured"] is True
        assert [g["phases"] for g in cost["groups"]] == [
            ["singles"], ["batches", "boards"], ["stats", "health"], ["upload"]]
        whole = cost["whole_run"]
        assert whole["requests"] == sum(p["sent"] for p in run_["phases"])
        assert whole["points"] == sum(p["points_ok"] for p in run_["phases"])
        assert whole["cpu_us_per_request"]["server"] > 0
        assert whole["cpu_us_per_point"]["postgres"] > 0
        assert whole["cpu_us_per_point"]["redis"] > 0
        for group in cost["groups"]:
            if group["seconds"] >= 1:  # CPU clocks tick in 10 ms: a blink may read 0
                assert group["cpu_us_per_request"]["server"] > 0
                assert group["loop_lag_ms"]["seconds"] >= 1
        reads = cost["groups"][2]
        assert reads["points"] == 0 and reads["cpu_us_per_point"] is None
        assert run_["server"]["loop_lag_ms"]["max"] >= run_["server"]["loop_lag_ms"]["p99"] > 0
        assert run_["peak_rss_mb"] > 20
    report = (smoke_run / "report.md").read_text()
    assert "## Cost per request and per point" in report
    assert "| naive | batches+boards |" in report and "| pipelined | whole run |" in report
    with open(smoke_run / "timeseries.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert any(row["loop_lag_ms"] for row in rows)


@pytest.mark.timeout(600)
def test_report_rechecks_thresholds_from_the_saved_summary(smoke_run: Path,
                                                           tmp_path: Path) -> None:
    saved = tmp_path / "run"
    shutil.copytree(smoke_run.resolve(), saved)
    passed = run("report", str(saved))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "all thresholds met (10)" in passed.stdout  # smoke's 5 thresholds × 2 paths

    summary_file = saved / "summary.json"
    summary = orjson.loads(summary_file.read_bytes())
    definition = summary["scenario_definition"]["thresholds"]
    for threshold in definition:
        if threshold["text"].startswith("singles.latency.p99"):
            threshold["text"] = "pipelined/all.latency.p99 < 0.001ms"  # cannot be met
    # Thresholds against the baseline are re-read from the summary's baseline too.
    summary["baseline"] = {"bare_post_rps": 1000.0, "connections": 100, "seconds": 3.0}
    definition += [{"text": "pipelined/batches.points_rate > 0.01 × baseline"},  # > 10/s
                   {"text": "pipelined/singles.rate > 1 x baseline"}]  # 15/s: fails
    summary_file.write_bytes(orjson.dumps(summary))
    failed = run("report", str(saved))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "THRESHOLDS FAILED (2 of 11)" in failed.stdout
    assert "FAIL pipelined: pipelined/all.latency.p99 < 0.001ms" in failed.stdout
    assert "FAIL pipelined: pipelined/singles.rate > 1 x baseline" in failed.stdout
    report = (saved / "report.md").read_text()
    assert "| `pipelined/all.latency.p99 < 0.001ms` | pipelined |" in report
    assert "**FAIL**" in report
    assert "answered **1,000 POST/s**" in report
    passed_line = next(line for line in report.splitlines() if "points_rate" in line)
    assert "× baseline (1,000/s) | pass |" in passed_line

    summary["scenario_definition"]["thresholds"][0]["text"] = "nosuchphase.success > 1%"
    summary_file.write_bytes(orjson.dumps(summary))
    broken = run("report", str(saved))
    assert broken.returncode == 2
    assert "'nosuchphase' is not a phase name" in broken.stderr


STRICT = """
name = "strict"
paths = ["pipelined"]
[[phases]]
name = "probe"
executor = "constant-rate"
kind = "health"
rate_of_baseline = 0.005
duration_s = 1
[thresholds]
"probe.latency.p99" = "< 0.001ms"
"probe.rate" = "> 1 × baseline"
"""


@pytest.mark.timeout(300)
def test_a_failing_threshold_sets_a_nonzero_exit_code(tmp_path: Path) -> None:
    """Also the one bench here that measures the baseline, resolves a rate from it and
    judges against it, on the scenario's own default path."""
    scenario = tmp_path / "strict.toml"
    scenario.write_text(STRICT)
    result = run("bench", str(scenario), "--out", str(tmp_path))
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "THRESHOLDS FAILED" in result.stdout
    latest = tmp_path / "strict" / "latest"
    report = (latest / "report.md").read_text()
    assert "**FAIL**" in report
    summary = orjson.loads((latest / "summary.json").read_bytes())
    baseline = summary["baseline"]
    assert baseline["bare_post_rps"] > 100
    assert (baseline["connections"], baseline["seconds"]) == (100, 3.0)
    assert f"answered **{baseline['bare_post_rps']:,.0f} POST/s**" in report
    assert list(summary["runs"]) == ["pipelined"]
    (probe,) = summary["scenario_definition"]["phases"]
    assert probe["executor"]["rate_of_baseline"] == 0.005
    assert probe["executor"]["rate"] == pytest.approx(
        max(0.1, 0.005 * baseline["bare_post_rps"]), abs=0.01)
    relative = next(v for v in summary["thresholds"] if "baseline" in v["threshold"])
    assert relative["passed"] is False and "× baseline" in relative["shown"]


def test_no_baseline_refuses_a_scenario_whose_rates_need_one(tmp_path: Path) -> None:
    scenario = tmp_path / "strict.toml"
    scenario.write_text(STRICT)
    result = run("bench", str(scenario), "--no-baseline", "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert "strict: probe reads the baseline: run without --no-baseline" in (
        result.stderr)


def test_bad_scenario_exits_2_with_its_problems(tmp_path: Path) -> None:
    scenario = tmp_path / "broken.toml"
    scenario.write_text('name = "broken"\n[[phases]]\nname = "x"\nexecutor = "nope"\n')
    result = run("bench", str(scenario), "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert "phases[0].executor: must be one of" in result.stderr
