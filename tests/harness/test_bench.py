"""``run.py bench`` end to end: real servers on fresh embedded stores, real artifacts.

One bench run serves every test here (a bench takes tens of seconds): a small
scenario with every executor and request kind, over both paths, with the
bare-stack baseline measured, a rate resolved from it, and one bar that cannot
be met — so the run also shows what a failed threshold does.  ``report`` runs
in this process (its charts are the same code), the way ``run.py report``
calls it.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from harness.cli import add_commands
from server.runtime.cli import main
from tests.support import ROOT

MINI = """
name = "mini"
description = "Every executor and request kind, a second each, and one bar no run meets."
seed = 42
drain_timeout_s = 30

[setup]
competitions = 2
participants_per_competition = 20
value = { distribution = "uniform", min = 0, max = 10 }
invalid_fraction = 0.05
duplicate_fraction = 0.05

[[phases]]
name = "singles"
executor = "constant-rate"
kind = "point"
rate = 30
duration_s = 1
connections = 8

[[phases]]
name = "batches"
executor = "ramping-rate"
kind = "batch"
batch_size = 100
start_rate = 5
stages = [{ duration_s = 1, target = 10 }]
connections = 8

[[phases]]
name = "boards"
executor = "constant-clients"
kind = "leaderboard"
vus = 4
think_time_s = 0.01
duration_s = 1
start = "with-previous"

[[phases]]
name = "stats"
executor = "constant-rate"
kind = "stats"
rate = 20
duration_s = 1

[[phases]]
name = "health"
executor = "constant-rate"
kind = "health"
rate_of_baseline = 0.01
duration_s = 1
arrival = "poisson"
start = "with-previous"

[[phases]]
name = "upload"
executor = "bulk-upload"
format = "csv"
points = 1500

[thresholds]
"all.success" = "> 99%"
"singles.latency.p99" = "< 1s"
"batches.latency.p99" = "< 2s"
"e2e_lag.p99" = "< 10s"
"health.rate" = "> 0.002 × baseline"
"health.latency.p50" = "< 0.001ms"
"""
IMPOSSIBLE = "health.latency.p50 < 0.001ms"


def run(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``run.py report ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["report", *args], extra_commands=add_commands)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the run's directory, what bench printed): the one bench of this module."""
    out = tmp_path_factory.mktemp("bench")
    scenario = out / "mini.toml"
    scenario.write_text(MINI)
    result = run("bench", str(scenario), "--out", str(out))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "mini" / "latest", result.stdout


@pytest.mark.timeout(600)
def test_bench_writes_every_artifact_for_both_paths_and_the_ratio(
        bench_run: tuple[Path, str]) -> None:
    latest, _ = bench_run
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
        assert upload["points_ok"] == 1500  # every line accepted
        assert run_["server"]["committed"] >= upload["points_ok"]
        assert run_["server"]["e2e_lag_s"]["p99"] >= 0
        # Its duplicates are exact resends: repeats, never id conflicts.
        assert run_["server"]["dead_letters"] == {}
        # A last sample after the drain: the charts end at the depth the report states.
        assert run_["drain_s"] is not None
        assert run_["samples"][-1]["phase"] == "drain"
        assert run_["samples"][-1]["queue_depth"] == 0
    text = (latest / "report.md").read_text()
    assert "pipelined ÷ naive" in text and "![spectrum.png](spectrum.png)" in text
    assert "| dead letters | 0 | 0 |" in text
    assert "Value" in (latest / "latency_pipelined.hgrm").read_text()


@pytest.mark.timeout(600)
def test_piped_progress_lines_count_what_was_answered(bench_run: tuple[Path, str]) -> None:
    """bench's stdout here is a pipe: a line per phase, and the last one, after the
    drain, counts every request the path's generators had answered (it once said 0)."""
    latest, printed = bench_run
    summary = orjson.loads((latest / "summary.json").read_bytes())
    for path, run_ in summary["runs"].items():
        lines = [line for line in printed.splitlines() if line.startswith(f"[{path}] ")]
        assert "\r" not in "".join(lines)
        phases = {line.split("phase=")[1].split()[0] for line in lines}
        assert {"setup", "singles", "batches+boards", "stats+health", "upload",
                "drain"} <= phases
        answered = int(lines[-1].split("answered=")[1].split()[0].replace(",", ""))
        total = sum(p["sent"] for p in run_["phases"])
        assert "phase=drain" in lines[-1]
        assert 0.9 * total <= answered <= total  # unlocked display counters may lose one


def test_bench_writes_to_a_folder_git_ignores_by_default() -> None:
    from harness.runner import RESULTS_DIR

    assert RESULTS_DIR == ROOT / "bench-results"
    if not (ROOT / ".git").exists():
        pytest.skip("not a git work tree (a copy): nothing to ignore files")

    def ignored(path: str) -> bool:
        check = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, timeout=30)
        assert check.returncode in (0, 1), check
        return check.returncode == 0

    assert ignored("bench-results/smoke/20260101T000000Z/summary.json")
    assert not ignored("results/smoke/20260101T000000Z/summary.json")  # the reference runs
    usage = run("bench", "--help", timeout=60).stdout
    assert "bench-results/ beside run.py" in usage and "reference runs are in results/" in (
        " ".join(usage.split()))


@pytest.mark.timeout(600)
def test_bench_measures_the_baseline_and_resolves_rates_and_bars_from_it(
        bench_run: tuple[Path, str]) -> None:
    latest, _ = bench_run
    summary = orjson.loads((latest / "summary.json").read_bytes())
    baseline = summary["baseline"]
    assert baseline["bare_post_rps"] > 100
    assert (baseline["connections"], baseline["seconds"]) == (100, 3.0)
    assert f"answered **{baseline['bare_post_rps']:,.0f} POST/s**" in (
        latest / "report.md").read_text()
    health = next(p for p in summary["scenario_definition"]["phases"] if p["name"] == "health")
    assert health["executor"]["rate_of_baseline"] == 0.01
    assert health["executor"]["rate"] == pytest.approx(
        max(0.1, 0.01 * baseline["bare_post_rps"]), abs=0.01)
    relative = [v for v in summary["thresholds"] if "baseline" in v["threshold"]]
    assert len(relative) == 2 and all(v["passed"] for v in relative)
    assert all("× baseline" in v["shown"] for v in relative)


@pytest.mark.timeout(600)
def test_a_failing_threshold_sets_a_nonzero_exit_code_and_says_which(
        bench_run: tuple[Path, str]) -> None:
    latest, printed = bench_run
    assert "mini: THRESHOLDS FAILED" in printed  # and bench exited 1 (the fixture)
    summary = orjson.loads((latest / "summary.json").read_bytes())
    failed = [(v["path"], v["threshold"]) for v in summary["thresholds"] if not v["passed"]]
    assert sorted(failed) == [("naive", IMPOSSIBLE), ("pipelined", IMPOSSIBLE)]
    text = (latest / "report.md").read_text()
    assert f"| `{IMPOSSIBLE}` | naive |" in text and "**FAIL**" in text


@pytest.mark.timeout(600)
def test_bench_measures_the_cost_of_each_group_and_the_loop_lag(
        bench_run: tuple[Path, str]) -> None:
    latest, _ = bench_run
    summary = orjson.loads((latest / "summary.json").read_bytes())
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
    text = (latest / "report.md").read_text()
    assert "## Cost per request and per point" in text
    assert "| naive | batches+boards |" in text and "| pipelined | whole run |" in text
    with open(latest / "timeseries.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert any(row["loop_lag_ms"] for row in rows)


@pytest.mark.timeout(600)
def test_report_compares_two_runs_from_their_saved_files(
        bench_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    latest, _ = bench_run
    code, _, err = report(capsys, str(latest), str(latest), "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    table = (tmp_path / "cmp" / "report.md").read_text()
    assert "| ~ |" in table  # a run compared with itself changes nothing
    assert "paths.png" not in table  # no naive/pipelined pair among "A naive", "B naive"...


@pytest.mark.timeout(600)
def test_report_rechecks_thresholds_from_the_saved_summary(
        bench_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    saved = tmp_path / "run"
    shutil.copytree(bench_run[0].resolve(), saved)
    summary_file = saved / "summary.json"
    summary = orjson.loads(summary_file.read_bytes())
    definition = summary["scenario_definition"]["thresholds"]
    definition[:] = [t for t in definition if t["text"] != IMPOSSIBLE]
    summary_file.write_bytes(orjson.dumps(summary))
    code, out, err = report(capsys, str(saved))
    assert code == 0, out + err
    assert "all thresholds met (10)" in out  # 5 thresholds × 2 paths

    for threshold in definition:
        if threshold["text"].startswith("singles.latency.p99"):
            threshold["text"] = "pipelined/all.latency.p99 < 0.001ms"  # cannot be met
    # Thresholds against the baseline are re-read from the summary's baseline.
    summary["baseline"] = {"bare_post_rps": 1000.0, "connections": 100, "seconds": 3.0}
    definition += [{"text": "pipelined/batches.points_rate > 0.01 × baseline"},  # > 10/s
                   {"text": "pipelined/singles.rate > 1 x baseline"}]  # 30/s: fails
    summary_file.write_bytes(orjson.dumps(summary))
    code, out, err = report(capsys, str(saved))
    assert code == 1, out + err
    assert "THRESHOLDS FAILED (2 of 11)" in out
    assert "FAIL pipelined: pipelined/all.latency.p99 < 0.001ms" in out
    assert "FAIL pipelined: pipelined/singles.rate > 1 x baseline" in out
    text = (saved / "report.md").read_text()
    assert "| `pipelined/all.latency.p99 < 0.001ms` | pipelined |" in text
    assert "**FAIL**" in text
    assert "answered **1,000 POST/s**" in text
    passed_line = next(line for line in text.splitlines() if "points_rate" in line)
    assert "× baseline (1,000/s) | pass |" in passed_line

    summary["scenario_definition"]["thresholds"][0]["text"] = "nosuchphase.success > 1%"
    summary_file.write_bytes(orjson.dumps(summary))
    code, _, err = report(capsys, str(saved))
    assert code == 2
    assert "'nosuchphase' is not a phase name" in err


STRICT = """
name = "strict"
paths = ["pipelined"]
[[phases]]
name = "probe"
executor = "constant-rate"
kind = "health"
rate_of_baseline = 0.005
duration_s = 1
"""


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
