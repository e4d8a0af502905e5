"""Scenario files (``scenarios/*.toml``) validated into frozen dataclasses.

A bad file is refused with every problem named by file, key and what is wrong,
like the server's configuration.  The format is documented in
``scenarios/README.md``; each executor's keys are read in ``harness.executors``
and thresholds in ``harness.thresholds``.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import executors, thresholds
from harness.executors import BulkUpload, ConstantRate, Executor
from harness.thresholds import RESERVED_SCOPES, Threshold
from harness.tomlreader import TableReader
from server.config import INGEST_PATHS

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
KINDS = ("point", "batch", "bulk", "leaderboard", "stats", "health")
INGEST_KINDS = ("point", "batch", "bulk")  # the kinds that send points
STARTS = ("after-previous", "with-previous")


class ScenarioError(Exception):
    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


@dataclass(frozen=True)
class Phase:
    """What every phase has; how its requests are paced is its ``executor``'s business."""

    name: str
    kind: str  # point | batch | bulk | leaderboard | stats | health
    executor: Executor
    batch_size: int = 1  # points per request for kind "batch"
    warmup_s: float = 0.0  # requests due before this are kept out of the histograms
    with_previous: bool = False  # start together with the phase before it

    @property
    def total_s(self) -> float:
        return self.executor.total_s


@dataclass(frozen=True)
class Setup:
    competitions: int = 1
    participants_per_competition: int = 10
    value_min: float = 0.0
    value_max: float = 10.0
    value_distribution: str = "uniform"
    invalid_fraction: float = 0.0
    duplicate_fraction: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    setup: Setup
    phases: tuple[Phase, ...]
    thresholds: tuple[Threshold, ...] = field(default=())
    drain_timeout_s: float = 60.0
    paths: tuple[str, ...] = INGEST_PATHS  # run by default; ``--paths`` overrides
    # The bare-handler POST/s its rates were written for: the whole load is scaled
    # by (the run's baseline ÷ this), so a slow day gets a proportionally lighter
    # load and its latency bars mean the same thing.
    reference_baseline: float | None = None

    @property
    def needs_baseline(self) -> list[str]:
        """What reads the baseline (phases with ``rate_of_baseline``, or the whole
        file with ``reference_baseline``): no run without one."""
        if self.reference_baseline is not None:
            return ["reference_baseline"]
        return [p.name for p in self.phases if isinstance(p.executor, ConstantRate)
                and p.executor.rate_of_baseline is not None]

    def baseline_scale(self, baseline_rps: float | None) -> float:
        """The factor ``reference_baseline`` applies for this baseline (1 without it)."""
        if self.reference_baseline is None or not baseline_rps:
            return 1.0
        return baseline_rps / self.reference_baseline

    def resolved(self, baseline_rps: float | None) -> Scenario:
        """The load for this run's baseline: scaled by ``reference_baseline``, every
        ``rate_of_baseline`` turned into requests/s; ValueError without a baseline."""
        if not self.needs_baseline:
            return self
        if not baseline_rps:
            raise ValueError(f"{', '.join(self.needs_baseline)}: reads the run's "
                             "baseline, which was not measured")
        if self.reference_baseline is not None:
            return self.scaled(self.baseline_scale(baseline_rps))
        return replace(self, phases=tuple(
            replace(p, executor=p.executor.resolved(baseline_rps))
            if isinstance(p.executor, ConstantRate) else p for p in self.phases))

    def scaled(self, factor: float) -> Scenario:
        """Rates, clients and counts times ``factor`` (durations unchanged)."""
        if factor == 1:
            return self
        return replace(self, phases=tuple(replace(p, executor=p.executor.scaled(factor))
                                          for p in self.phases))

    def groups(self) -> list[list[Phase]]:
        """Phases that run together, in order."""
        groups: list[list[Phase]] = []
        for phase in self.phases:
            if phase.with_previous and groups:
                groups[-1].append(phase)
            else:
                groups.append([phase])
        return groups

    def to_dict(self) -> dict[str, Any]:
        """Plain data for summary.json; each executor tagged with its TOML name."""
        data = asdict(self)
        for phase, raw in zip(self.phases, data["phases"], strict=True):
            raw["executor"] = {"type": phase.executor.NAME, **raw["executor"]}
        return data


def list_scenarios() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.toml"))


def find(name: str) -> Path:
    """A scenario file by path, or by name under ``scenarios/``."""
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return path
    candidate = SCENARIO_DIR / f"{name}.toml"
    if not candidate.exists():
        known = ", ".join(p.stem for p in list_scenarios())
        raise ScenarioError(candidate, [f"no such scenario (known: {known})"])
    return candidate


def read(path: Path) -> dict[str, Any]:
    """A scenario file's TOML, or ScenarioError."""
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, [f"not valid TOML: {exc}"]) from None


def load(name_or_path: str) -> Scenario:
    """The scenario, or ScenarioError listing every problem in the file."""
    path = find(name_or_path)
    data = read(path)
    problems: list[str] = []
    scenario = _build(data, problems)
    if problems or scenario is None:
        raise ScenarioError(path, problems)
    return scenario


def parse_setup(raw: Any, problems: list[str]) -> Setup:
    """A file's ``[setup]`` table (a chaos scenario's too)."""
    r = TableReader(raw, "setup.", problems)
    value = TableReader(r.get("value", dict, {}), "setup.value.", problems)
    setup = Setup(
        competitions=r.get("competitions", int, 1, low=1, high=1000),
        participants_per_competition=r.get(
            "participants_per_competition", int, 10, low=1, high=100_000),
        value_distribution=value.get("distribution", str, "uniform",
                                     choices=("uniform", "normal", "exponential")),
        value_min=value.get("min", float, 0.0),
        value_max=value.get("max", float, 10.0),
        invalid_fraction=r.get("invalid_fraction", float, 0.0, low=0, high=1),
        duplicate_fraction=r.get("duplicate_fraction", float, 0.0, low=0, high=1),
    )
    value.finish()
    r.finish()
    return setup


def _build(data: dict[str, Any], problems: list[str]) -> Scenario | None:
    top = TableReader(data, "", problems)
    name = top.get("name", str, required=True)
    description = top.get("description", str, "")
    seed = top.get("seed", int, 1)
    drain_timeout_s = top.get("drain_timeout_s", float, 60.0, low=1)
    paths = _paths(top.get("paths", list, list(INGEST_PATHS)), problems)
    reference_baseline = top.get("reference_baseline", float, None, low=1)
    setup = parse_setup(top.get("setup", dict, {}), problems)

    phases = []
    raw_phases = top.get("phases", list, [], required=True)
    if not raw_phases and "phases" in data:
        problems.append("phases: needs at least one [[phases]] table")
    names: set[str] = set()
    for index, raw in enumerate(raw_phases):
        phase = _phase(raw, f"phases[{index}].", problems)
        if phase is not None:
            if phase.name in names:
                problems.append(f"phases[{index}].name: {phase.name!r} is used twice")
            names.add(phase.name)
            phases.append(phase)

    limits = thresholds.parse_table(top.get("thresholds", dict, {}), names, problems)
    top.finish()
    per_phase = [p.name for p in phases if isinstance(p.executor, ConstantRate)
                 and p.executor.rate_of_baseline is not None]
    if reference_baseline is not None and per_phase:
        problems.append(f"reference_baseline: scales the whole load, so phase(s) "
                        f"{', '.join(per_phase)} cannot also set rate_of_baseline")
    if problems:
        return None
    return Scenario(name=name, description=description, seed=seed, setup=setup,
                    phases=tuple(phases), thresholds=limits,
                    drain_timeout_s=drain_timeout_s, paths=paths,
                    reference_baseline=reference_baseline)


def _paths(raw: list[Any], problems: list[str]) -> tuple[str, ...]:
    """The ``paths`` list: known ingest paths, each once, at least one."""
    choices = ", ".join(INGEST_PATHS)
    bad = [p for p in raw if p not in INGEST_PATHS]
    if bad:
        problems.append(f"paths: must name paths among {choices} (got {bad!r})")
    elif not raw:
        problems.append(f"paths: needs at least one of {choices}")
    elif len(set(raw)) != len(raw):
        problems.append(f"paths: names a path twice (got {raw!r})")
    else:
        return tuple(raw)
    return INGEST_PATHS


def _phase(raw: Any, prefix: str, problems: list[str]) -> Phase | None:
    r = TableReader(raw, prefix, problems)
    before = len(problems)
    name = r.get("name", str, required=True)
    if name in RESERVED_SCOPES or (name and ("." in name or "/" in name)):
        problems.append(f"{prefix}name: {name!r} would not name it in a threshold "
                        f"(no '.' or '/', and not {', '.join(RESERVED_SCOPES)})")
    executor_name = r.get("executor", str, required=True, choices=executors.EXECUTORS)
    bulk = executor_name == BulkUpload.NAME
    kind = r.get("kind", str, "bulk" if bulk else None, required=not bulk, choices=KINDS)
    with_previous = r.get("start", str, STARTS[0], choices=STARTS) == "with-previous"
    warmup_s = r.get("warmup_s", float, 0.0, low=0)
    batch_size = r.get("batch_size", int, 1, low=1, high=100_000)
    executor = executors.parse(executor_name, r) if executor_name else None
    if bulk and kind != "bulk":
        problems.append(f"{prefix}kind: {BulkUpload.NAME} sends kind 'bulk'")
    elif not bulk and kind == "bulk":
        problems.append(f"{prefix}kind: 'bulk' needs executor = '{BulkUpload.NAME}'")
    if executor is not None:  # without one, which keys belong here is unknown
        r.finish(executors.RENAMED)
    if len(problems) > before or executor is None:
        return None
    return Phase(name=name, kind=kind, executor=executor, batch_size=batch_size,
                 warmup_s=warmup_s, with_previous=with_previous)
