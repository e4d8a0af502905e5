"""The seeded workload: what each request of a phase sends.

Both paths replay exactly the same requests: every random choice comes from a
``random.Random`` seeded with the scenario seed and the phase name.  Point ids
are client-chosen (``<run>-<phase>-<n>``) so that duplicates can be sent on
purpose: ``duplicate_fraction`` resends one of the last ``RECENT_POINTS`` points
exactly (same id, competition, participant and value), as a retrying client
does — a repeat the server counts once.  (A reused id with other content would
be an id conflict, dead-lettered: not what a duplicate means.)
``invalid_fraction`` is per request: such a request carries one invalid point
and is expected to be refused with 422 (all-or-nothing).

Upload files are built before the phase's clock starts (``prebuild``), as a
real client reads a file it already has: generating a million CSV lines costs
this process ~3 s of CPU, which on a small machine would otherwise compete with
the server it measures and cap the upload rate at the generator's pace.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from harness.executors import BulkUpload
from harness.httpclient import build_request
from harness.scenario import Phase, Setup

# Up to this many points (files × points) are built before the clock starts
# (~25 bytes a CSV line: ~125 MB in the generator); beyond, they stream as built.
PREBUILD_MAX_POINTS = 5_000_000
# Duplicates resend one of the last this many points (a bounded memory of them).
RECENT_POINTS = 100_000


@dataclass(frozen=True)
class Target:
    url: str  # base URL, e.g. http://127.0.0.1:8000
    token: str
    participants: dict[int, list[int]]  # competition id -> participant ids


def _point_json(point_id: str, competition: int, participant: int, value: float) -> str:
    """One point as JSON text; formatted directly, cheaper than building a dict."""
    return (f'{{"id":"{point_id}","competition_id":{competition},'
            f'"participant_id":{participant},"value":{value:.3f}}}')


class Workload:
    def __init__(self, setup: Setup, phase: Phase, target: Target, seed: int, run_id: str):
        self.setup = setup
        self.phase = phase
        self.target = target
        self.rng = random.Random(f"{seed}:{phase.name}")
        self.prefix = f"{run_id}-{phase.name}"
        self.competitions = sorted(target.participants)
        self.issued = 0  # point ids handed out so far
        self.recent: list[tuple[str, int, int, float]] = []  # ring of points sent
        self._files: list[list[bytes]] = []  # prebuilt upload files, in upload order

    def _value(self) -> float:
        s, rng = self.setup, self.rng
        if s.value_distribution == "normal":
            mid, spread = (s.value_min + s.value_max) / 2, (s.value_max - s.value_min) / 6
            return min(s.value_max, max(s.value_min, rng.gauss(mid, spread)))
        if s.value_distribution == "exponential":
            return min(s.value_max, s.value_min + rng.expovariate(3 / max(1e-9, s.value_max)))
        return rng.uniform(s.value_min, s.value_max)

    def _next_point(self) -> tuple[str, int, int, float]:
        """(id, competition, participant, value): a new point, or an exact resend."""
        if self.recent and self.rng.random() < self.setup.duplicate_fraction:
            return self.recent[self.rng.randrange(len(self.recent))]
        competition = self.rng.choice(self.competitions)
        participant = self.rng.choice(self.target.participants[competition])
        # Rounded as sent (3 decimals), so that a resend is the same value.
        point = (f"{self.prefix}-{self.issued}", competition, participant,
                 round(self._value(), 3))
        if len(self.recent) < RECENT_POINTS:
            self.recent.append(point)
        else:
            self.recent[self.issued % RECENT_POINTS] = point
        self.issued += 1
        return point

    def _point(self) -> str:
        return _point_json(*self._next_point())

    def next_request(self) -> tuple[bytes, tuple[int, ...]]:
        """The next request's bytes and the statuses that count as success."""
        kind, base, token = self.phase.kind, self.target.url, self.target.token
        if kind == "health":
            return build_request("GET", f"{base}/health"), (200,)
        if kind in ("leaderboard", "stats"):
            cid = self.rng.choice(self.competitions)
            path = "leaderboard?limit=10" if kind == "leaderboard" else "stats"
            return build_request("GET", f"{base}/v1/competitions/{cid}/{path}",
                                 token=token), (200,)
        count = 1 if kind == "point" else self.phase.batch_size
        points = [self._point() for _ in range(count)]
        expected: tuple[int, ...] = (202, 201)
        if self.rng.random() < self.setup.invalid_fraction:
            points[-1] = points[-1][:-1] + ',"unexpected":true}'
            expected = (422,)
        body = points[0] if kind == "point" else '{"points":[' + ",".join(points) + "]}"
        return build_request("POST", f"{base}/v1/points", token=token,
                             body=body.encode()), expected

    def prebuild(self, upload: BulkUpload) -> None:
        """Build the upload's files now, unless they are too big to hold in memory."""
        if upload.points * upload.files <= PREBUILD_MAX_POINTS:
            self._files = [list(self.bulk_pieces(upload)) for _ in range(upload.files)]

    def files(self, upload: BulkUpload) -> Iterator[Iterable[bytes]]:
        """Each file's pieces: prebuilt ones first, then generated while they stream."""
        for index in range(upload.files):
            yield self._files[index] if index < len(self._files) else self.bulk_pieces(upload)

    def bulk_pieces(self, upload: BulkUpload) -> Iterator[bytes]:
        """One file of ``upload.points`` CSV or NDJSON lines, in pieces of ~chunk_bytes."""
        csv = upload.format == "csv"
        lines: list[str] = ["id,competition_id,participant_id,value"] if csv else []
        size = sum(len(line) + 1 for line in lines)
        for _ in range(upload.points):
            point_id, competition, participant, value = self._next_point()
            line = (f"{point_id},{competition},{participant},{value:.3f}" if csv else
                    _point_json(point_id, competition, participant, value))
            lines.append(line)
            size += len(line) + 1
            if size >= upload.chunk_bytes:
                yield ("\n".join(lines) + "\n").encode()
                lines, size = [], 0
        if lines:
            yield ("\n".join(lines) + "\n").encode()
