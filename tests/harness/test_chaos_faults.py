"""The chaos nemesis: its seeded schedule, and each fault on a real stack, injected and undone.

One ``ChaosStack`` (``--processes 2``, so a child can be killed) serves the
module; every stack test leaves it healed (``heal``: each kind's undo is
idempotent), whatever happened.  A point that must stay queued across a fault
is sent while claiming is paused, so it cannot have been committed before.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import pytest
import redis

from harness.chaos.faults import KINDS, Faults, FaultSpec, Nemesis, Probe, max_active, schedule
from harness.chaos.stack import ChaosStack
from harness.proxy import ThreadedProxy
from harness.server import api
from tests.support import copy_cluster, queue_state, setup_competition, sql, until_sync

ALL = list(KINDS)


# --- the schedule ------------------------------------------------------------------


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    first = schedule(7, ALL, 300, count=20, min_s=5, max_s=20)
    assert first == schedule(7, ALL, 300, count=20, min_s=5, max_s=20)
    assert first != schedule(8, ALL, 300, count=20, min_s=5, max_s=20)


@pytest.mark.parametrize("seed", range(20))
def test_a_schedule_gives_every_kind_a_turn_within_the_run_and_its_overlap(seed: int) -> None:
    specs = schedule(seed, ALL, 120, count=14, min_s=3, max_s=12, max_overlap=2, start_s=5)
    assert len(specs) == 14 and {s.kind for s in specs} == set(ALL)
    assert all(5 <= s.at_s and s.end_s <= 120 and 3 <= s.duration_s <= 12 for s in specs)
    assert specs == sorted(specs, key=lambda s: s.at_s)
    assert max_active(specs) <= 2
    for a, b in itertools.combinations(specs, 2):
        pair = {a.kind, b.kind}
        rivals = (a.kind == b.kind or pair == {"kill_server", "kill_server_child"}
                  # a pause is made through the server and Redis: never while either is out
                  or pair in ({"pause_claiming", kind} for kind in (
                      "kill_server", "kill_redis", "blackhole_redis", "redis_maxmemory"))
                  # a restart must not wait out a black-holed store's timeouts
                  or pair in ({"kill_server", "blackhole_redis"},
                              {"kill_server", "blackhole_postgres"})
                  # a cap on an unreachable Redis cannot bite
                  or pair in ({"redis_maxmemory", "kill_redis"},
                              {"redis_maxmemory", "blackhole_redis"},
                              {"redis_maxmemory", "kill_server"},
                              {"client_cut", "kill_server"}))
        if rivals:  # never at once, and a gap between: each one's recovery is seen
            assert a.end_s + 2 <= b.at_s or b.end_s + 2 <= a.at_s, (a, b)


def test_max_overlap_one_gives_faults_one_at_a_time() -> None:
    specs = schedule(3, ["kill_redis", "pause_claiming"], 100, count=6, min_s=2, max_s=5,
                     max_overlap=1)
    assert max_active(specs) == 1
    assert all(a.end_s <= b.at_s for a, b in itertools.pairwise(specs))


@pytest.mark.parametrize(("kinds", "count", "duration_s"), [
    (["kill_server", "unplug"], 4, 100),  # an unknown kind
    (ALL, 3, 100),                        # fewer faults than kinds
    (["kill_redis"], 10, 30),             # cannot fit without overlapping itself
])
def test_a_schedule_that_cannot_be_kept_is_refused(kinds: list[str], count: int,
                                                   duration_s: float) -> None:
    with pytest.raises(ValueError):
        schedule(1, kinds, duration_s, count=count, min_s=5, max_s=10)


# --- the stack ---------------------------------------------------------------------


@dataclass
class Chaos:
    stack: ChaosStack
    faults: Faults
    cut: threading.Event
    cid: int
    parts: list[int]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, pg_template: Path) -> Iterator[Chaos]:
    work = tmp_path_factory.mktemp("chaos")
    copy_cluster(pg_template, work / "stores")  # no initdb: a migrated copy
    stack = ChaosStack(work, processes=2,
                       env={"QUEUE_LEASE_S": "2", "SHUTDOWN_TIMEOUT": "10"})
    stack.start()
    try:
        cut = threading.Event()
        cid, parts = setup_competition(stack.url, stack.token)
        yield Chaos(stack, Faults(stack, cut=cut, maxmemory_margin_bytes=64 * 1024), cut,
                    cid, parts)
    finally:
        stack.stop()


def undone(faults: Faults, kind: str, detail: dict[str, Any], timeout_s: float = 30
           ) -> dict[str, Any]:
    """``faults.undo`` tried again until it succeeds, as the nemesis does."""
    last: list[BaseException] = []

    def attempt() -> dict[str, Any] | None:
        try:
            return {"result": faults.undo(kind, detail)}
        except Exception as exc:
            last[:] = [exc]
            return None

    return until_sync(attempt, f"undo of {kind} (last error: {last})", timeout_s)["result"]


@pytest.fixture
def healthy(chaos: Chaos) -> Iterator[Chaos]:
    """The stack, healed after the test: every kind's undo (idempotent) in turn."""
    yield chaos
    for kind in ("stop_postgres", "kill_redis", "blackhole_redis", "blackhole_postgres",
                 "kill_server", "kill_server_child", "redis_maxmemory", "pause_claiming",
                 "client_cut"):
        undone(chaos.faults, kind, {})
    until_sync(lambda: all(settled(chaos.stack) for _ in range(6)),
               "every process ready with its breakers closed")


def settled(stack: ChaosStack) -> bool:
    """One ``/ready`` (whichever process answers) says ready, both breakers closed: a
    store's breaker left open by one test would send the next one's ingest elsewhere."""
    try:
        status, body = api(stack.url, "GET", "/ready", stack.token, timeout=5)
    except OSError:
        return False
    checks = body.get("checks", {})
    return status == 200 and all(checks.get(store, {}).get("circuit") == "closed"
                                 for store in ("postgres", "redis"))


_numbers = itertools.count()


def points(chaos: Chaos, tag: str, n: int = 1) -> list[dict[str, Any]]:
    return [{"id": f"{tag}-{i}", "competition_id": chaos.cid,
             "participant_id": chaos.parts[i % len(chaos.parts)], "value": next(_numbers)}
            for i in range(n)]


def post(chaos: Chaos, body: object, query: str = "") -> tuple[int, dict]:
    return api(chaos.stack.url, "POST", "/v1/points" + query, chaos.stack.token, body,
               timeout=30)


def committed(chaos: Chaos, ids: list[str]) -> dict[str, int]:
    """How many times each of ``ids`` is in ``points`` (through the direct URL)."""
    rows = sql(chaos.stack.database_url, "SELECT id, count(*) FROM points WHERE "
               "competition_id = %s AND id = ANY(%s) GROUP BY id", chaos.cid, ids)
    return dict(rows)


def all_committed_once(chaos: Chaos, ids: list[str], timeout_s: float = 30) -> None:
    until_sync(lambda: committed(chaos, ids) == dict.fromkeys(ids, 1),
               f"{len(ids)} points committed once", timeout_s)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def queue(chaos: Chaos) -> dict:
    return until_sync(lambda: _queue_or_none(chaos), "the admin queue view", 30)


def _queue_or_none(chaos: Chaos) -> dict | None:
    try:
        return queue_state(chaos.stack.url, chaos.stack.token)
    except (OSError, AssertionError):
        return None


def test_kill_server_kills_every_process_and_it_comes_back_on_the_same_url(
        healthy: Chaos) -> None:
    chaos, faults = healthy, healthy.faults
    faults.inject("pause_claiming")
    before = points(chaos, "ks-before")
    status, body = post(chaos, before[0])
    assert status == 202, body
    pids, url = chaos.stack.server_pids(), chaos.stack.url
    assert len(pids) == 3  # the parent and its two children
    detail = faults.inject("kill_server")
    assert set(pids) <= set(detail["pids"]) and all(gone(pid) for pid in detail["pids"])
    with pytest.raises(OSError):
        post(chaos, points(chaos, "ks-during")[0])
    undone(faults, "kill_server", detail)
    assert chaos.stack.url == url and not set(chaos.stack.server_pids()) & set(pids)
    after = points(chaos, "ks-after")
    status, body = post(chaos, after[0])
    assert status == 202, body
    faults.undo("pause_claiming", {})
    all_committed_once(chaos, ["ks-before-0", "ks-after-0"])


def test_kill_server_child_kills_one_child_and_the_supervisor_replaces_it(
        healthy: Chaos) -> None:
    chaos, faults = healthy, healthy.faults
    parent, *children = chaos.stack.server_pids()
    detail = faults.inject("kill_server_child")
    [victim] = detail["pids"]
    assert victim in children and gone(victim)
    status, body = post(chaos, points(chaos, "child-during")[0])  # the other one serves
    assert status == 202, body
    replaced = undone(faults, "kill_server_child", detail)["pids"]
    assert len(replaced) == 2 and victim not in replaced
    assert chaos.stack.server_pids()[0] == parent
    all_committed_once(chaos, ["child-during-0"])


def test_kill_redis_restarts_it_from_its_aof_with_the_queued_points(healthy: Chaos) -> None:
    chaos, faults = healthy, healthy.faults
    faults.inject("pause_claiming")
    queued = points(chaos, "kr-queued", 30)
    status, body = post(chaos, {"points": queued})
    assert status == 202 and "committed" not in body, body
    depth = queue(chaos)["depth"]
    assert depth >= 30
    detail = faults.inject("kill_redis")
    assert gone(detail["pid"])
    # Redis down: ingest writes to PostgreSQL directly.
    status, body = post(chaos, points(chaos, "kr-during")[0])
    assert status == 202 and body.get("committed") is True, body
    after = undone(faults, "kill_redis", detail)
    assert after["pid"] != detail["pid"]
    view = queue(chaos)
    assert view["depth"] == depth and view["paused"], view  # replayed from the AOF
    assert committed(chaos, [p["id"] for p in queued]) == {}
    faults.undo("pause_claiming", {})
    all_committed_once(chaos, [p["id"] for p in queued] + ["kr-during-0"])


def test_stop_postgres_keeps_ingest_accepting_and_commits_after_the_start(
        healthy: Chaos) -> None:
    chaos, faults = healthy, healthy.faults
    post(chaos, points(chaos, "sp-warm")[0])  # the token verified: cached for the outage
    detail = faults.inject("stop_postgres")
    with pytest.raises(psycopg2.OperationalError):
        sql(chaos.stack.database_url, "SELECT 1")
    during = points(chaos, "sp-during", 10)
    status, body = post(chaos, {"points": during})
    assert status == 202 and "committed" not in body, body
    undone(faults, "stop_postgres", detail)
    all_committed_once(chaos, [p["id"] for p in during] + ["sp-warm-0"])


@pytest.mark.parametrize("store", ["redis", "postgres"])
def test_a_black_holed_store_still_lets_ingest_answer_and_all_commits_after_release(
        healthy: Chaos, store: str) -> None:
    chaos, faults = healthy, healthy.faults
    # Many connections: both children verify the token (cached for the outage) and hold
    # pooled connections to both stores.
    warm = points(chaos, f"bh-{store}-warm", 20)
    for point in warm:
        status, body = post(chaos, point)
        assert status == 202, body
    proxy = chaos.stack.proxies[store]  # type: ignore[index]
    silenced = proxy.blackholed
    detail = faults.inject(f"blackhole_{store}")
    assert proxy.blackholed > silenced
    during = points(chaos, f"bh-{store}-during", 3)
    for point in during:
        started = time.monotonic()
        status, body = post(chaos, point)
        took = time.monotonic() - started
        assert status in (201, 202), body
        assert took < 10, f"{took:.1f} s: longer than the server's store waits"
    assert undone(faults, f"blackhole_{store}", detail)["closed"] >= 1
    all_committed_once(chaos, [p["id"] for p in warm + during], timeout_s=40)


def test_redis_at_maxmemory_answers_ingest_503_queue_full_and_recovers_after(
        healthy: Chaos) -> None:
    chaos, faults = healthy, healthy.faults
    faults.inject("pause_claiming")  # nothing frees memory meanwhile
    detail = faults.inject("redis_maxmemory")
    assert detail["cap"] > detail["used"] and detail["was"] == 0
    accepted: list[str] = []
    refusals: list[dict] = []
    batches = itertools.count()

    def refused() -> dict | None:
        batch = points(chaos, f"mm-{next(batches)}", 200)
        status, body = post(chaos, {"points": batch})
        if status == 202:
            assert "committed" not in body, body  # queued, not written around Redis
            accepted.extend(body["ids"])
            return None
        refusals.append(body)
        return body if status == 503 else None

    body = until_sync(refused, "a refusal at maxmemory", 30, interval_s=0)
    assert body["error"]["code"] == "queue_full", body
    assert body["error"]["accepted_ids"] == [] and accepted, body
    undone(faults, "redis_maxmemory", detail)
    again = points(chaos, "mm-again", 10)
    status, body = post(chaos, {"points": again})
    assert status == 202, body
    faults.undo("pause_claiming", {})
    all_committed_once(chaos, accepted + [p["id"] for p in again])


def test_pause_claiming_lets_the_queue_grow_and_it_drains_after(healthy: Chaos) -> None:
    chaos, faults = healthy, healthy.faults
    faults.inject("pause_claiming")
    held = points(chaos, "pc", 50)
    status, body = post(chaos, {"points": held})
    assert status == 202, body
    view = queue(chaos)
    assert view["paused"] and view["depth"] >= 50, view
    assert committed(chaos, [p["id"] for p in held]) == {}
    faults.undo("pause_claiming", {})
    all_committed_once(chaos, [p["id"] for p in held])
    until_sync(lambda: queue(chaos)["depth"] == 0, "the queue drained")


def test_client_cut_sets_the_loads_event_and_clears_it(healthy: Chaos) -> None:
    faults, cut = healthy.faults, healthy.cut
    faults.inject("client_cut")
    assert cut.is_set()
    faults.undo("client_cut", {})
    assert not cut.is_set()


def test_a_threaded_proxy_holds_its_black_hole_until_release(healthy: Chaos) -> None:
    """Flows open at the black hole, and those opened during it, are silent (no FIN, no
    RST: a client times out); ``release`` closes them and carries new ones again."""
    stack = healthy.stack
    assert stack.redis.port is not None
    proxy = ThreadedProxy("127.0.0.1", stack.redis.port).start()
    url = stack.redis_url.replace(f":{stack.redis.port}/", f":{proxy.port}/")
    clients = [redis.Redis.from_url(url, socket_timeout=0.5, retry_on_timeout=False)
               for _ in range(3)]
    try:
        assert clients[0].ping()
        proxy.blackhole(hold=True)
        for client in clients[:2]:  # open before, opened during
            with pytest.raises(redis.exceptions.TimeoutError):
                client.ping()
        assert proxy.release() >= 2
        assert clients[2].ping()
    finally:
        for client in clients:
            client.close()
        proxy.close()


# --- the nemesis -------------------------------------------------------------------


def test_the_nemesis_measures_recovery_and_reports_every_probe(healthy: Chaos) -> None:
    chaos = healthy
    seen: list[Probe] = []
    specs = [FaultSpec("client_cut", 0.0, 0.2), FaultSpec("kill_server", 1.0, 0.3)]
    nemesis = Nemesis(chaos.stack, specs, run_id="nem", probe_point=(chaos.cid, chaos.parts[0]),
                      cut=chaos.cut, on_probe=seen.append, recovery_timeout_s=30)
    nemesis.start()
    nemesis.join(60)
    assert not nemesis.is_alive() and not nemesis.errors
    cut, kill = nemesis.records
    for record in (cut, kill):
        assert record["injected"] and record["undone"] and "error" not in record, record
        assert record["end"] >= record["start"] + record["duration_s"] - 0.05
        assert record["commits_recovered_s"] is not None, record
    # Ingest never stopped for a cut; it did until the restart for a kill: measured.
    assert kill["ingest_recovered_s"] >= kill["undo_s"] > 0
    assert cut["ingest_recovered_s"] < kill["ingest_recovered_s"]
    assert seen == nemesis.probes and len(seen) >= 2
    assert len({p.value for p in seen}) == len(seen) and all(p.value >= 9e11 for p in seen)
    acked = [p.id for p in seen if p.outcome == "acked"]
    assert acked and all(p.status in (201, 202) for p in seen if p.outcome == "acked")
    all_committed_once(chaos, acked)


def test_a_nemesis_stopped_early_undoes_the_fault_it_holds(healthy: Chaos) -> None:
    chaos = healthy
    nemesis = Nemesis(chaos.stack, [FaultSpec("pause_claiming", 0.0, 600)], run_id="early",
                      probe_point=(chaos.cid, chaos.parts[0]))
    nemesis.start()
    until_sync(lambda: nemesis.records[0]["injected"], "the pause injected")
    assert queue(chaos)["paused"]
    nemesis.stop(30)
    assert not nemesis.is_alive() and nemesis.records[0]["undone"]
    assert not queue(chaos)["paused"]


def test_commit_recovery_is_measured_from_the_backlog_committing(healthy: Chaos) -> None:
    """Points queued while PostgreSQL is stopped wait for its start: the commits'
    recovery time covers the start at least, read from the queue's own counter."""
    chaos = healthy
    nemesis = Nemesis(chaos.stack, [FaultSpec("stop_postgres", 0.0, 1.5)], run_id="backlog",
                      probe_point=(chaos.cid, chaos.parts[0]), recovery_timeout_s=30)
    nemesis.start()
    until_sync(lambda: nemesis.records[0]["injected"], "PostgreSQL stopped")
    backlog = points(chaos, "backlog", 50)
    status, body = post(chaos, {"points": backlog})
    assert status == 202 and "committed" not in body, body
    nemesis.join(60)
    [record] = nemesis.records
    assert record["undone"] and not nemesis.errors, record
    assert record["commits_recovered_s"] >= record["undo_s"] > 0, record
    all_committed_once(chaos, [p["id"] for p in backlog])
