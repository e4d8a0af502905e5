"""report.md as a reader sees it: one number format, ratios marked when the bars cannot be
read into them, and ``report A B`` refusing a percentage between runs that differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import comparability, report, thresholds
from harness.cli import NOT_COMPARABLE, add_commands
from server.runtime.cli import main
from tests.harness import synthetic


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``run.py report ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["report", *args], extra_commands=add_commands)
    out, err = capsys.readouterr()
    return code, out, err


def _pair(tmp_path: Path, a: dict, b: dict) -> tuple[str, str, Path]:
    return (str(synthetic.write(tmp_path / "a", a)), str(synthetic.write(tmp_path / "b", b)),
            tmp_path / "cmp")


def test_runs_of_different_scales_are_refused_a_percentage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, out = _pair(tmp_path, synthetic.summary(scale=0.3),
                      synthetic.summary(rates={"naive": 900.0, "pipelined": 4000.0}))
    code, printed, err = _report(capsys, a, b, "--out", str(out))
    assert code == NOT_COMPARABLE == 3
    assert "A and B are not comparable:\n  scale: A 0.3, B 1\n" in err
    assert "--compare-anyway" in err and printed == ""
    text = (out / "report.md").read_text()
    assert "**Not comparable: no changes are shown**" in text and "- scale: A 0.3, B 1" in text
    assert "| path | figure | A | B |\n" in text  # no change column
    assert "| naive | accepted points/s | 500 | 900 |" in text
    assert "%" not in text.split("| path | figure |")[1].split("## Charts")[0]


def test_compare_anyway_shows_the_changes_under_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, out = _pair(tmp_path, synthetic.summary(scale=0.3, seed=1, baseline=3000.0),
                      synthetic.summary(rates={"naive": 900.0, "pipelined": 4000.0}))
    code, printed, err = _report(capsys, a, b, "--out", str(out), "--compare-anyway")
    assert code == 0 and printed.strip() == str(out / "report.md")
    assert "scale: A 0.3, B 1" in err and "seed: A 1, B 42" in err
    assert "baseline: A 3,000, B 4,000 POST/s (1.33×, more than 1.20×)" in err
    text = (out / "report.md").read_text()
    assert "**Warning: these runs are not comparable" in text
    assert "| naive | accepted points/s | 500 | 900 | +80.0% |" in text


def test_comparable_runs_compare_as_before(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, out = _pair(tmp_path, synthetic.summary(baseline=4000.0),
                      synthetic.summary(baseline=4700.0, commit="b" * 40,
                                        rates={"naive": 400.0, "pipelined": 1520.0}))
    code, printed, err = _report(capsys, a, b, "--out", str(out))
    assert code == 0 and err == "" and printed.strip() == str(out / "report.md")
    text = (out / "report.md").read_text()
    assert "not comparable" not in text.lower()
    assert "commit: A `aaaaaaaaaaaa`, B `bbbbbbbbbbbb`" in text  # told, never refused
    assert "| naive | accepted points/s | 500 | 400 | -20.0% |" in text
    assert "| pipelined | accepted points/s | 1,500 | 1,520 | ~ |" in text


@pytest.mark.parametrize("a, b, differs", [
    ({}, {}, []),
    ({"baseline": 4000.0}, {"baseline": 4800.0}, []),  # 1.2×: within
    ({"baseline": 4000.0}, {"baseline": 4801.0}, ["baseline"]),  # beyond
    ({"baseline": 5000.0}, {"baseline": 4000.0}, ["baseline"]),  # whichever is larger
    ({"baseline": None}, {}, ["baseline"]),  # --no-baseline: the machine is unknown
    ({"scenario": "steady_mixed"}, {}, ["scenario"]),
    ({"paths": ("pipelined",)}, {}, ["paths"]),
    ({"scale": 0.5, "seed": 7}, {}, ["scale", "seed"]),
])
def test_what_makes_two_runs_incomparable(a: dict, b: dict, differs: list[str]) -> None:
    found = comparability.differences(synthetic.summary(**a), synthetic.summary(**b))
    assert [line.split(":")[0] for line in found] == differs


def test_a_smoke_ratio_is_marked_not_comparable_with_the_bars(tmp_path: Path) -> None:
    run_dir = synthetic.write(tmp_path / "run", synthetic.summary())
    path, _ = report.render(run_dir)
    text = path.read_text()
    assert ("**accepted points/s: pipelined ÷ naive = 3.00×** — not comparable with the "
            "bars: smoke has no `ratio.accepted` bar") in text


def test_a_ratio_is_comparable_only_where_a_bar_judges_it_at_scale_1() -> None:
    judged = synthetic.summary(scenario="bulk_upload", thresholds=("ratio.accepted > 32",))
    assert thresholds.ratio_not_comparable(judged, "accepted points/s") is None
    assert "no `ratio.committed` bar" in str(
        thresholds.ratio_not_comparable(judged, "committed points/s"))
    judged["scale"] = 0.5
    assert thresholds.ratio_not_comparable(judged, "accepted points/s") == (
        "a run at scale 0.5 (the bars are judged at scale 1)")


def test_the_report_writes_each_kind_of_figure_one_way(tmp_path: Path) -> None:
    run_dir = synthetic.write(tmp_path / "run", synthetic.summary())
    text = report.render(run_dir)[0].read_text()
    assert "answered **4,000 POST/s**" in text
    assert "| accepted points/s | 500 | 1,500 |" in text  # rates: whole, separators
    assert "| accepted points/s per baseline POST/s | 0.12× | 0.38× |" in text  # ratios
    assert "| e2e lag p99 (s) | 0.250 | 0.250 |" in text  # times: 3 significant digits
    assert "| peak RSS (MB) | 61 | 61 |" in text
    assert "| batches | batch | 10 | 0 | 0 | 5.00 | 500 | 2.5% CPU |" in text
    assert "| batches | 25.0 | 49.0 | 49.0 | 49.0 | 49.0 |" in text  # ms
    assert "| `all.success > 99%` | naive | 100.0% | pass |" in text
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.count("|") - 1 <= 8, line  # no table wider than 8 columns
