"""The naive and pipelined ingest paths: one seam, chosen once at start-up.

Both paths run the same code — the same Lua scripts, the same SQL, the same
worker — and differ only in how much work goes into one round trip:

=============================  =====  ==========================================
                               naive  pipelined
=============================  =====  ==========================================
points per queue chunk         1      QUEUE_BATCH_SIZE
chunks per enqueue call        1      all of a request's chunks, and those of
                                      every request that arrived while the
                                      previous call was in flight (coalesced),
                                      up to 2,000 chunks and 8 MiB a call
                                      (``redis_queue.ENQUEUE_MAX_*``)
points claimed per round trip  1      QUEUE_BATCH_SIZE, growing (×2 a claim, up to
                                      ×8) while claims come back full: a backlog
points per write statement     1      the whole claim
(one transaction)
=============================  =====  ==========================================

``make_strategy`` is the only place in the code base that branches on the name
(the names themselves are ``config.INGEST_PATHS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.config import NAIVE, PIPELINED


@dataclass(frozen=True)
class IngestStrategy:
    """How an ingest path groups the queue's and storage's work into round trips."""

    name: str
    chunk_points: int
    chunks_per_call: int  # 0 = every chunk of a request in one call
    claim_points: int
    commit_points: int  # 0 = the whole claim in one statement
    coalesce: bool  # concurrent requests share enqueue calls
    max_claim_factor: int  # claims grow up to claim_points × this under a backlog


def make_strategy(name: str, batch_size: int) -> IngestStrategy:
    if name == NAIVE:
        return IngestStrategy(name, chunk_points=1, chunks_per_call=1, claim_points=1,
                              commit_points=1, coalesce=False, max_claim_factor=1)
    if name == PIPELINED:
        return IngestStrategy(name, chunk_points=batch_size, chunks_per_call=0,
                              claim_points=batch_size, commit_points=0, coalesce=True,
                              max_claim_factor=8)
    raise ValueError(f"unknown ingest path {name!r}")
