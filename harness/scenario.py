"""Scenario files (``scenarios/*.toml``) validated into frozen dataclasses.

A bad file is refused with every problem named by file, key and what is wrong,
like the server's configuration.  The format is documented in
``scenarios/README.md``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
EXECUTORS = ("constant-rate", "ramping-rate", "constant-clients", "bulk-upload")
KINDS = ("point", "batch", "bulk", "leaderboard", "stats", "health")
ARRIVALS = ("even", "poisson")
_THRESHOLD = re.compile(r"\s*(<|<=|>|>=)\s*([0-9.]+)\s*(ms|s|%|/s)?\s*")
_METRIC = re.compile(r"success|rate|dropped|(latency|service)\.(p50|p90|p95|p99|p99\.9|max|mean)")
_E2E_METRIC = re.compile(r"p50|p90|p99|p99\.9|max")


class ScenarioError(Exception):
    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


@dataclass(frozen=True)
class Stage:
    duration_s: float
    target_rate: float


@dataclass(frozen=True)
class Phase:
    name: str
    executor: str
    kind: str
    duration_s: float = 0.0
    rate: float = 0.0  # requests per second (constant-rate; start rate for ramping)
    stages: tuple[Stage, ...] = ()
    arrival: str = "even"
    connections: int = 16
    clients: int = 0
    think_time_s: float = 0.0
    batch_size: int = 1
    points: int = 0  # bulk-upload: points per file
    files: int = 1
    format: str = "csv"
    chunk_bytes: int = 65536
    warmup_s: float = 0.0
    with_previous: bool = False  # start together with the phase before it

    @property
    def total_s(self) -> float:
        if self.executor == "ramping-rate":
            return sum(stage.duration_s for stage in self.stages)
        return self.duration_s


@dataclass(frozen=True)
class Threshold:
    text: str  # as written, e.g. "points.latency.p95 < 200ms"
    path: str | None  # "pipelined/..." or "naive/..." limits it to one path
    scope: str  # a phase name, "all", or "e2e_lag"
    metric: str  # success | rate | dropped | latency.p95 | service.p99 | p99 (e2e)
    op: str
    value: float  # seconds for times, fraction for %, count or rate otherwise


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

    def scaled(self, factor: float) -> Scenario:
        """Rates, clients and counts times ``factor`` (durations unchanged)."""
        if factor == 1:
            return self

        def grow(n: float, minimum: float = 1) -> float:
            return max(minimum, n * factor)

        phases = tuple(replace(
            p,
            rate=grow(p.rate, 0.1) if p.rate else 0.0,
            stages=tuple(Stage(s.duration_s, grow(s.target_rate, 0.1)) for s in p.stages),
            clients=int(grow(p.clients)) if p.clients else 0,
            points=int(grow(p.points)) if p.points else 0,
        ) for p in self.phases)
        return replace(self, phases=phases)

    def groups(self) -> list[list[Phase]]:
        """Phases that run together, in order."""
        groups: list[list[Phase]] = []
        for phase in self.phases:
            if phase.with_previous and groups:
                groups[-1].append(phase)
            else:
                groups.append([phase])
        return groups


def list_scenarios() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.toml"))


def find(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return path
    candidate = SCENARIO_DIR / f"{name}.toml"
    if not candidate.exists():
        known = ", ".join(p.stem for p in list_scenarios())
        raise ScenarioError(candidate, [f"no such scenario (known: {known})"])
    return candidate


def load(name_or_path: str) -> Scenario:
    path = find(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, [f"not valid TOML: {exc}"]) from None
    problems: list[str] = []
    scenario = _build(data, problems)
    if problems or scenario is None:
        raise ScenarioError(path, problems)
    return scenario


class _Reader:
    """Typed access to one TOML table, collecting problems under a key prefix."""

    def __init__(self, table: Any, prefix: str, problems: list[str]) -> None:
        self.prefix = prefix
        self.problems = problems
        if not isinstance(table, dict):
            problems.append(f"{prefix or 'file'}: must be a table")
            table = {}
        self.table = table
        self.used: set[str] = set()

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *,
            required: bool = False, low: float | None = None, high: float | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
        self.used.add(key)
        name = f"{self.prefix}{key}"
        if key not in self.table:
            if required:
                self.problems.append(f"{name}: is required")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.problems.append(f"{name}: must be {kinds[0].__name__}, not a boolean")
            return default
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            self.problems.append(f"{name}: must be {' or '.join(k.__name__ for k in kinds)}")
            return default
        if low is not None and value < low:
            self.problems.append(f"{name}: must be >= {low:g} (got {value})")
            return default
        if high is not None and value > high:
            self.problems.append(f"{name}: must be <= {high:g} (got {value})")
            return default
        if choices is not None and value not in choices:
            self.problems.append(f"{name}: must be one of {', '.join(choices)} (got {value!r})")
            return default
        return value

    def finish(self) -> None:
        for key in sorted(set(self.table) - self.used):
            self.problems.append(f"{self.prefix}{key}: unknown key")


def _build(data: dict[str, Any], problems: list[str]) -> Scenario | None:
    top = _Reader(data, "", problems)
    name = top.get("name", str, required=True)
    description = top.get("description", str, "")
    seed = top.get("seed", int, 1)
    drain_timeout_s = top.get("drain_timeout_s", float, 60.0, low=1)
    setup_reader = _Reader(top.get("setup", dict, {}), "setup.", problems)
    value = _Reader(setup_reader.get("value", dict, {}), "setup.value.", problems)
    setup = Setup(
        competitions=setup_reader.get("competitions", int, 1, low=1, high=1000),
        participants_per_competition=setup_reader.get(
            "participants_per_competition", int, 10, low=1, high=100_000),
        value_distribution=value.get("distribution", str, "uniform",
                                     choices=("uniform", "normal", "exponential")),
        value_min=value.get("min", float, 0.0),
        value_max=value.get("max", float, 10.0),
        invalid_fraction=setup_reader.get("invalid_fraction", float, 0.0, low=0, high=1),
        duplicate_fraction=setup_reader.get("duplicate_fraction", float, 0.0, low=0, high=1),
    )
    value.finish()
    setup_reader.finish()

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

    thresholds = []
    raw_thresholds = top.get("thresholds", dict, {})
    for key, text in raw_thresholds.items():
        threshold = _threshold(key, text, names, problems)
        if threshold is not None:
            thresholds.append(threshold)
    top.finish()
    if problems:
        return None
    return Scenario(name=name, description=description, seed=seed, setup=setup,
                    phases=tuple(phases), thresholds=tuple(thresholds),
                    drain_timeout_s=drain_timeout_s)


def _phase(raw: Any, prefix: str, problems: list[str]) -> Phase | None:
    r = _Reader(raw, prefix, problems)
    before = len(problems)
    name = r.get("name", str, required=True)
    executor = r.get("executor", str, required=True, choices=EXECUTORS)
    kind = r.get("kind", str, "bulk" if executor == "bulk-upload" else None,
                 required=executor != "bulk-upload", choices=KINDS)
    fields: dict[str, Any] = {
        "with_previous": r.get("start", str, "after-previous",
                               choices=("after-previous", "with-previous")) == "with-previous",
        "warmup_s": r.get("warmup_s", float, 0.0, low=0),
        "batch_size": r.get("batch_size", int, 1, low=1, high=100_000),
        "connections": r.get("connections", int, 16, low=1, high=2000),
    }
    if executor in ("constant-rate", "constant-clients"):
        fields["duration_s"] = r.get("duration_s", float, required=True, low=0.1)
    if executor == "constant-rate":
        fields["rate"] = r.get("rate", float, required=True, low=0.1)
        fields["arrival"] = r.get("arrival", str, "even", choices=ARRIVALS)
    if executor == "ramping-rate":
        fields["rate"] = r.get("start_rate", float, 0.0, low=0)
        fields["arrival"] = r.get("arrival", str, "even", choices=ARRIVALS)
        stages = []
        for i, stage in enumerate(r.get("stages", list, [], required=True)):
            s = _Reader(stage, f"{prefix}stages[{i}].", problems)
            duration = s.get("duration_s", float, required=True, low=0.1)
            target = s.get("target_rate", float, required=True, low=0)
            s.finish()
            if duration is not None and target is not None:
                stages.append(Stage(duration, target))
        fields["stages"] = tuple(stages)
    if executor == "constant-clients":
        fields["clients"] = r.get("clients", int, required=True, low=1, high=2000)
        fields["think_time_s"] = r.get("think_time_s", float, 0.0, low=0)
    if executor == "bulk-upload":
        fields["points"] = r.get("points", int, required=True, low=1)
        fields["files"] = r.get("files", int, 1, low=1, high=100)
        fields["format"] = r.get("format", str, "csv", choices=("csv", "ndjson"))
        fields["chunk_bytes"] = r.get("chunk_bytes", int, 65536, low=512)
        if kind != "bulk":
            problems.append(f"{prefix}kind: bulk-upload sends kind 'bulk'")
    elif kind == "bulk":
        problems.append(f"{prefix}kind: 'bulk' needs executor = 'bulk-upload'")
    r.finish()
    if len(problems) > before:
        return None
    return Phase(name=name, executor=executor, kind=kind, **fields)


def _threshold(key: str, text: Any, phases: set[str], problems: list[str]
               ) -> Threshold | None:
    where = f"thresholds.{key}"
    path = None
    if "/" in key:
        path, _, rest = key.partition("/")
        if path not in ("naive", "pipelined"):
            problems.append(f"{where}: a path prefix must be naive/ or pipelined/")
            return None
    else:
        rest = key
    scope, _, metric = rest.partition(".")
    if scope == "e2e_lag":
        if not _E2E_METRIC.fullmatch(metric):
            problems.append(f"{where}: e2e_lag takes p50, p90, p99, p99.9 or max")
            return None
    elif scope != "all" and scope not in phases:
        problems.append(f"{where}: {scope!r} is not a phase name, 'all' or 'e2e_lag'")
        return None
    elif not _METRIC.fullmatch(metric):
        problems.append(f"{where}: unknown metric {metric!r} (success, rate, dropped, or "
                        "latency/service . p50|p90|p95|p99|p99.9|max|mean)")
        return None
    match = _THRESHOLD.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        problems.append(f"{where}: must look like '< 200ms', '> 99%' or '>= 500/s'")
        return None
    op, number, unit = match.groups()
    value = float(number)
    if unit == "ms":
        value /= 1000
    elif unit == "%":
        value /= 100
    return Threshold(text=f"{key} {text.strip()}", path=path, scope=scope, metric=metric,
                     op=op, value=value)
