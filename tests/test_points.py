"""Server-assigned point ids: unique, unguessable (80 random bits), sortable by time."""

from __future__ import annotations

import os
import time
import warnings
from itertools import pairwise

from server.points import new_ids

RANDOM_BITS = 80


def random_part(point_id: str) -> int:
    assert len(point_id) == 32 and int(point_id, 16) >= 0, point_id
    return int(point_id[12:], 16)


def test_server_ids_are_unique_and_every_one_of_their_80_random_bits_is_random() -> None:
    # Taken the way ingest takes them: batches of several sizes, one after another.
    ids = [i for size in (1, 1, 7, 1000, 1, 5000, 3, 40_000) for i in new_ids(size)]
    assert len(set(ids)) == len(ids)
    parts = [random_part(i) for i in ids]
    # Nothing in one id tells the next: consecutive random parts differ in about
    # half their bits (a counter's differ in one or two; ~40 ± 4.5 expected here).
    distances = [bin(a ^ b).count("1") for a, b in pairwise(parts)]
    assert 39 < sum(distances) / len(distances) < 41
    assert min(distances) > 10
    # Every one of the 80 bits is set in about half the ids: no fixed tag, no
    # counter's high bits (±1.2% is over 5 standard deviations at 46,013 ids).
    for bit in range(RANDOM_BITS):
        share = sum(part >> bit & 1 for part in parts) / len(parts)
        assert 0.488 < share < 0.512, (bit, share)


def test_server_ids_sort_by_the_millisecond_they_were_taken() -> None:
    before_ms = time.time_ns() // 1_000_000
    first = new_ids(100)
    stamp = int(first[0][:12], 16)
    assert stamp >= before_ms
    while time.time_ns() // 1_000_000 <= stamp:  # wall time passes, on purpose (≤ 1 ms)
        pass
    second = new_ids(100)
    assert max(first) < min(second)
    assert {i[:12] for i in second} == {second[0][:12]}  # one batch, one timestamp


def test_a_forked_process_never_repeats_its_parents_ids() -> None:
    # As ``serve --processes`` forks after start-up: the parent holds random bits
    # it has not used yet when it forks.
    new_ids(1)
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python ≥ 3.12 warns of fork with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its ids down the pipe, and out without any cleanup
        try:
            os.write(write, ",".join(new_ids(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            theirs = pipe.read().decode().split(",")
    finally:
        os.waitpid(pid, 0)
    assert len(theirs) == 50
    ours = new_ids(50)
    assert not {random_part(i) for i in ours} & {random_part(i) for i in theirs}
