"""A chaos scenario file (``scenarios/chaos.toml``) validated into a frozen plan.

A chaos scenario is a scenario file with a ``[chaos]`` table instead of
``[[phases]]``: one mixed, retrying load (``[chaos.load]``, read by
``harness.chaos.load.LoadPlan``) for ``duration_s``, while a seeded nemesis
(``[chaos.nemesis]``) injects overlapping faults; its ``[thresholds]`` judge
the exactly-once checker's counts (``chaos.lost``…) like any threshold.

``--scale`` scales time, not rates: the load runs ``duration_s × scale`` and
the nemesis injects ``faults × scale`` faults (never fewer than one of each
kind), each as long as at full scale.  So a short CI run offers the same load
and the same kinds of fault as the full one, in less time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness import thresholds
from harness.chaos.faults import KINDS, FaultSpec, schedule
from harness.chaos.load import LoadPlan
from harness.scenario import ScenarioError, Setup, find, parse_setup, read
from harness.thresholds import Threshold
from harness.tomlreader import TableReader
from server.config import PIPELINED


@dataclass(frozen=True)
class NemesisPlan:
    kinds: tuple[str, ...] = KINDS
    faults: int = 20  # at scale 1
    min_s: float = 3.0  # each fault lasts min_s..max_s
    max_s: float = 12.0
    max_overlap: int = 2
    start_s: float = 5.0  # the load runs alone this long first
    quiet_s: float = 15.0  # and this long last: every fault has ended by then


@dataclass(frozen=True)
class ChaosScenario:
    name: str
    description: str
    seed: int
    duration_s: float
    setup: Setup
    load: LoadPlan
    nemesis: NemesisPlan
    thresholds: tuple[Threshold, ...] = ()
    drain_timeout_s: float = 120.0
    processes: int = 2
    server_env: dict[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = (PIPELINED,)

    def scaled(self, factor: float) -> ChaosScenario:
        """The load's time and the fault count times ``factor``; ValueError when the
        faults no longer fit (checked here, before any process starts)."""
        if factor == 1:
            self.schedule()
            return self
        kinds = len(set(self.nemesis.kinds))
        scaled = dataclasses.replace(
            self, duration_s=round(self.duration_s * factor, 1),
            nemesis=dataclasses.replace(
                self.nemesis, faults=max(kinds, round(self.nemesis.faults * factor))))
        scaled.schedule()
        return scaled

    def schedule(self) -> list[FaultSpec]:
        """The nemesis's seeded schedule (ValueError when the faults cannot fit)."""
        plan = self.nemesis
        return schedule(self.seed, list(plan.kinds), self.duration_s - plan.quiet_s,
                        count=plan.faults, min_s=plan.min_s, max_s=plan.max_s,
                        max_overlap=plan.max_overlap, start_s=plan.start_s)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for summary.json (each threshold as a dict with its ``text``)."""
        return dataclasses.asdict(self)


def is_chaos(name_or_path: str) -> bool:
    """Whether the scenario file ``name_or_path`` names is a chaos scenario."""
    return "chaos" in read(find(name_or_path))


def load(name_or_path: str) -> ChaosScenario:
    """The chaos scenario, or ScenarioError listing every problem in the file."""
    path = find(name_or_path)
    problems: list[str] = []
    scenario = build(read(path), problems)
    if problems or scenario is None:
        raise ScenarioError(path, problems)
    return scenario


def build(data: dict[str, Any], problems: list[str]) -> ChaosScenario | None:
    """The plan of a file whose top level has a ``[chaos]`` table; None with problems."""
    top = TableReader(data, "", problems)
    name = top.get("name", str, required=True)
    description = top.get("description", str, "")
    seed = top.get("seed", int, 1)
    drain_timeout_s = top.get("drain_timeout_s", float, 120.0, low=1)
    setup = parse_setup(top.get("setup", dict, {}), problems)
    chaos = TableReader(top.get("chaos", dict, {}), "chaos.", problems)
    duration_s = chaos.get("duration_s", float, 300.0, low=10)
    processes = chaos.get("processes", int, 2, low=1, high=16)
    env = chaos.get("server_env", dict, {})
    if not all(isinstance(v, str) for v in env.values()):
        problems.append("chaos.server_env: values must be strings")
    load_table = chaos.get("load", dict, {})
    try:
        load = LoadPlan.from_dict(dict(load_table))
    except (TypeError, ValueError) as exc:
        problems.append(f"chaos.load: {exc}")
        load = LoadPlan()
    nemesis = _nemesis(chaos.get("nemesis", dict, {}), processes, problems)
    chaos.finish()
    limits = thresholds.parse_table(top.get("thresholds", dict, {}), set(), problems)
    top.finish()
    if nemesis.start_s + nemesis.max_s + nemesis.quiet_s > duration_s:
        problems.append("chaos.duration_s: too short for nemesis.start_s + max_s + quiet_s")
    if problems:
        return None
    scenario = ChaosScenario(name=name, description=description, seed=seed,
                             duration_s=duration_s, setup=setup, load=load, nemesis=nemesis,
                             thresholds=limits, drain_timeout_s=drain_timeout_s,
                             processes=processes, server_env=dict(env))
    try:
        scenario.schedule()
    except ValueError as exc:
        problems.append(f"chaos.nemesis: {exc}")
        return None
    return scenario


def _nemesis(raw: Any, processes: int, problems: list[str]) -> NemesisPlan:
    r = TableReader(raw, "chaos.nemesis.", problems)
    default = NemesisPlan()
    kinds = r.get("kinds", list, list(default.kinds))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        problems.append(f"chaos.nemesis.kinds: must name kinds among {', '.join(KINDS)} "
                        f"(got {kinds!r})")
        kinds = list(default.kinds)
    if "kill_server_child" in kinds and processes < 2:
        problems.append("chaos.nemesis.kinds: kill_server_child needs chaos.processes >= 2")
    plan = NemesisPlan(
        kinds=tuple(kinds),
        faults=r.get("faults", int, default.faults, low=1, high=10_000),
        min_s=r.get("min_s", float, default.min_s, low=0.1),
        max_s=r.get("max_s", float, default.max_s, low=0.1),
        max_overlap=r.get("max_overlap", int, default.max_overlap, low=1, high=10),
        start_s=r.get("start_s", float, default.start_s, low=0),
        quiet_s=r.get("quiet_s", float, default.quiet_s, low=0))
    r.finish()
    if plan.min_s > plan.max_s:
        problems.append("chaos.nemesis.min_s: must not exceed max_s")
    if plan.faults < len(set(plan.kinds)):
        problems.append("chaos.nemesis.faults: fewer than the kinds it names")
    return plan
