"""``run.py bench`` end to end: real servers on fresh embedded stores, real artifacts."""

from __future__ import annotations

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
    """One small smoke bench over both paths, shared by the tests that read its files."""
    out = tmp_path_factory.mktemp("bench")
    result = run("bench", "smoke", "--scale", "0.3", "--out", str(out))
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

    # Compare from the saved files alone.
    compared = run("report", str(latest), str(latest), "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr
    table = (tmp_path / "cmp" / "report.md").read_text()
    assert "| ~ |" in table  # a run compared with itself changes nothing
    assert "paths.png" not in table  # no naive/pipelined pair among "A naive", "B naive"...


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
    for threshold in summary["scenario_definition"]["thresholds"]:
        if threshold["text"].startswith("singles.latency.p99"):
            threshold["text"] = "pipelined/all.latency.p99 < 0.001ms"  # cannot be met
    summary_file.write_bytes(orjson.dumps(summary))
    failed = run("report", str(saved))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "THRESHOLDS FAILED (1 of 9)" in failed.stdout
    assert "FAIL pipelined: pipelined/all.latency.p99 < 0.001ms" in failed.stdout
    report = (saved / "report.md").read_text()
    assert "| `pipelined/all.latency.p99 < 0.001ms` | pipelined |" in report
    assert "**FAIL**" in report

    summary["scenario_definition"]["thresholds"][0]["text"] = "nosuchphase.success > 1%"
    summary_file.write_bytes(orjson.dumps(summary))
    broken = run("report", str(saved))
    assert broken.returncode == 2
    assert "'nosuchphase' is not a phase name" in broken.stderr


@pytest.mark.timeout(300)
def test_a_failing_threshold_sets_a_nonzero_exit_code(tmp_path: Path) -> None:
    scenario = tmp_path / "strict.toml"
    scenario.write_text("""
name = "strict"
[[phases]]
name = "probe"
executor = "constant-rate"
kind = "health"
rate = 20
duration_s = 1
[thresholds]
"probe.latency.p99" = "< 0.001ms"
""")
    result = run("bench", str(scenario), "--paths", "pipelined", "--out", str(tmp_path))
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "THRESHOLDS FAILED" in result.stdout
    report = (tmp_path / "strict" / "latest" / "report.md").read_text()
    assert "**FAIL**" in report


def test_bad_scenario_exits_2_with_its_problems(tmp_path: Path) -> None:
    scenario = tmp_path / "broken.toml"
    scenario.write_text('name = "broken"\n[[phases]]\nname = "x"\nexecutor = "nope"\n')
    result = run("bench", str(scenario), "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert "phases[0].executor: must be one of" in result.stderr
