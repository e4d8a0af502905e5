"""The workers' counters of one process, read by tests, ``/ready``, the admin view and
``/metrics`` (arq keeps ``jobs_complete``/``jobs_failed``/``jobs_retried`` the same way)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class WorkerStats:
    claims: int = 0
    points_committed: int = 0
    points_duplicate: int = 0
    points_retried: int = 0
    points_dead: int = 0
    handbacks: int = 0  # claims handed back (store outage, unexpected error, shutdown)
    given_up: int = 0  # chunks dead-lettered after QUEUE_MAX_HANDBACKS handbacks
    leases_lost: int = 0  # settlements refused: another worker held the chunks by then
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=100))  # recent groups

    def as_dict(self) -> dict[str, int]:
        return {"claims": self.claims, "points_committed": self.points_committed,
                "points_duplicate": self.points_duplicate,
                "points_retried": self.points_retried, "points_dead": self.points_dead,
                "handbacks": self.handbacks, "given_up": self.given_up,
                "leases_lost": self.leases_lost}
