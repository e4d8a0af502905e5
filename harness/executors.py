"""The four executors a phase can run, one frozen dataclass each, and their TOML keys.

Named as k6 names them where k6 has a name (``vus``, ``start_rate``,
``stages[].target``, ``rate``), with our unit-suffixed names for times
(``duration_s``, ``think_time_s``).  The TOML key ``executor = "..."`` selects
one; each executor reads only its own keys, so a key that belongs to another
executor is refused as unknown rather than silently ignored.

* ``ConstantRate`` / ``RampingRate`` — open model: requests are due on a
  schedule whatever the server does.  A constant rate may be written as a
  fraction of the run's bare-stack baseline (``rate_of_baseline``), so one file
  asks the same of a fast and a slow day; the runner resolves it to requests/s
  once the baseline is measured.
* ``ConstantClients`` — closed model: ``vus`` clients send, wait, think, repeat.
* ``BulkUpload`` — files of ``points`` points streamed in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from harness.tomlreader import TableReader

ARRIVALS = ("even", "poisson")
FORMATS = ("csv", "ndjson")
# Keys of earlier versions of the format, named in the error so an old file is easy to mend.
RENAMED = {"clients": "vus", "target_rate": "target"}


def _grow(value: float, factor: float, minimum: float) -> float:
    """``value × factor``, never below ``minimum`` — except that zero stays zero."""
    return max(minimum, value * factor) if value else 0.0


@dataclass(frozen=True)
class Stage:
    """One leg of a ramp: the rate moves linearly to ``target`` over ``duration_s``."""

    duration_s: float
    target: float  # requests per second at the end of the stage


@dataclass(frozen=True)
class ConstantRate:
    """Open model: ``rate`` requests per second for ``duration_s`` seconds.

    With ``rate_of_baseline`` the rate is that multiple of the run's baseline
    POST/s; ``rate`` stays None until ``resolved`` sets it, and the generator
    refuses a phase whose rate was never resolved.
    """

    NAME: ClassVar[str] = "constant-rate"
    rate: float | None
    duration_s: float
    arrival: str = "even"  # even | poisson
    connections: int = 16  # keep-alive connections a due request may wait for
    rate_of_baseline: float | None = None  # requests/s per baseline POST/s

    @property
    def total_s(self) -> float:
        return self.duration_s

    def scaled(self, factor: float) -> ConstantRate:
        if self.rate_of_baseline is not None:  # scaled now, resolved once measured
            return replace(self, rate_of_baseline=self.rate_of_baseline * factor)
        return replace(self, rate=_grow(self.rate or 0.0, factor, 0.1))

    def resolved(self, baseline_rps: float) -> ConstantRate:
        """The rate in requests/s from the run's baseline (never below 0.1/s)."""
        if self.rate_of_baseline is None:
            return self
        return replace(self, rate=round(max(0.1, self.rate_of_baseline * baseline_rps), 2))


@dataclass(frozen=True)
class RampingRate:
    """Open model: from ``start_rate``, linearly to each stage's ``target`` in turn."""

    NAME: ClassVar[str] = "ramping-rate"
    start_rate: float
    stages: tuple[Stage, ...]
    arrival: str = "even"
    connections: int = 16

    @property
    def total_s(self) -> float:
        return sum(stage.duration_s for stage in self.stages)

    def scaled(self, factor: float) -> RampingRate:
        return replace(self, start_rate=_grow(self.start_rate, factor, 0.1),
                       stages=tuple(replace(s, target=_grow(s.target, factor, 0.1))
                                    for s in self.stages))


@dataclass(frozen=True)
class ConstantClients:
    """Closed model: ``vus`` clients, each with its own connection, for ``duration_s``."""

    NAME: ClassVar[str] = "constant-clients"
    vus: int
    duration_s: float
    think_time_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.duration_s

    def scaled(self, factor: float) -> ConstantClients:
        return replace(self, vus=int(_grow(self.vus, factor, 1)))


@dataclass(frozen=True)
class BulkUpload:
    """``files`` uploads of ``points`` points each, streamed in ``chunk_bytes`` pieces."""

    NAME: ClassVar[str] = "bulk-upload"
    points: int  # per file
    files: int = 1
    format: str = "csv"  # csv | ndjson
    chunk_bytes: int = 65536

    @property
    def total_s(self) -> float:
        """No schedule: an upload takes as long as the server takes to read it."""
        return 0.0

    def scaled(self, factor: float) -> BulkUpload:
        return replace(self, points=int(_grow(self.points, factor, 1)))


Executor = ConstantRate | RampingRate | ConstantClients | BulkUpload


def _constant_rate(r: TableReader) -> ConstantRate:
    rate = r.get("rate", float, low=0.1)
    of_baseline = r.get("rate_of_baseline", float, low=1e-6, high=100)
    if "rate" in r.table and "rate_of_baseline" in r.table:
        r.problems.append(f"{r.prefix}rate_of_baseline: give rate or rate_of_baseline, "
                          "not both")
    elif "rate" not in r.table and "rate_of_baseline" not in r.table:
        r.problems.append(f"{r.prefix}rate: is required (or rate_of_baseline)")
    return ConstantRate(
        rate=rate,
        duration_s=r.get("duration_s", float, required=True, low=0.1),
        arrival=r.get("arrival", str, "even", choices=ARRIVALS),
        connections=r.get("connections", int, 16, low=1, high=2000),
        rate_of_baseline=of_baseline)


def _ramping_rate(r: TableReader) -> RampingRate:
    stages = []
    raw_stages = r.get("stages", list, [], required=True)
    for i, raw in enumerate(raw_stages):
        s = TableReader(raw, f"{r.prefix}stages[{i}].", r.problems)
        stages.append(Stage(duration_s=s.get("duration_s", float, required=True, low=0.1),
                            target=s.get("target", float, required=True, low=0)))
        s.finish(RENAMED)
    if isinstance(r.table.get("stages"), list) and not raw_stages:
        r.problems.append(f"{r.prefix}stages: needs at least one stage")
    return RampingRate(
        start_rate=r.get("start_rate", float, 0.0, low=0),
        stages=tuple(stages),
        arrival=r.get("arrival", str, "even", choices=ARRIVALS),
        connections=r.get("connections", int, 16, low=1, high=2000))


def _constant_clients(r: TableReader) -> ConstantClients:
    return ConstantClients(
        vus=r.get("vus", int, required=True, low=1, high=2000),
        duration_s=r.get("duration_s", float, required=True, low=0.1),
        think_time_s=r.get("think_time_s", float, 0.0, low=0))


def _bulk_upload(r: TableReader) -> BulkUpload:
    return BulkUpload(
        points=r.get("points", int, required=True, low=1),
        files=r.get("files", int, 1, low=1, high=100),
        format=r.get("format", str, "csv", choices=FORMATS),
        chunk_bytes=r.get("chunk_bytes", int, 65536, low=512))


_PARSERS: dict[str, Callable[[TableReader], Executor]] = {
    cls.NAME: parse for cls, parse in ((ConstantRate, _constant_rate),
                                       (RampingRate, _ramping_rate),
                                       (ConstantClients, _constant_clients),
                                       (BulkUpload, _bulk_upload))}
EXECUTORS = tuple(_PARSERS)  # the names ``executor = "..."`` accepts


def parse(name: str, reader: TableReader) -> Executor:
    """The executor ``name`` built from its keys in ``reader``'s table.

    A bad key is noted in the reader's problems and its field left at the
    default (or None); the caller discards the phase when problems were added,
    and calls ``reader.finish`` once the phase's common keys are read too.
    """
    return _PARSERS[name](reader)
