"""/metrics: what each figure counts and under which labels, in one process and in
the N processes of ``run.py serve --processes N`` (one view: summed, never doubled).

Counters belong to the test process, not to a service (every test's app adds to
the same ones), so in-process tests compare a scrape before with one after.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from server.ops.metrics_dir import PREFIX
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores
from server.supervisor import Supervisor
from tests.support import (
    BOTH_PATHS,
    ROOT,
    Api,
    batch,
    call,
    make_settings,
    seed,
    seed_every_shard,
    send,
    served,
    setup_competition,
    until,
    until_sync,
)

RULES = ROOT / "ops" / "prometheus-rules.yml"
LEADERBOARD = "/v1/competitions/{competition_id}/leaderboard"

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(autouse=True)
def fresh_scrapes(request: pytest.FixtureRequest) -> None:
    """These tests read a figure, act, and read it again at once: no render cache."""
    if "service" in request.fixturenames:
        request.getfixturevalue("service").deps.exporter.cache_s = 0.0


async def test_a_scrape_within_a_second_of_the_last_is_served_from_memory(
        api: Api, service: Service) -> None:
    exporter = service.deps.exporter
    exporter.cache_s = 60.0
    first = [await api.http.fetch(api.base_url + "/metrics") for _ in range(20)]
    assert exporter.renders == 1
    assert len({response.body for response in first}) == 1


async def scrape(api: Api) -> tuple[Samples, str]:
    response = await api.http.fetch(api.base_url + "/metrics", raise_error=False)
    assert response.code == 200, response.body
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.body.decode()
    return parse(text), text


async def test_a_request_is_counted_under_its_route_template_method_and_status(
        api: Api) -> None:
    cid, _ = await seed(api)
    before, _ = await scrape(api)
    for _ in range(3):
        assert (await api.get(f"/v1/competitions/{cid}/leaderboard"))[0] == 200
    assert (await api.get(f"/v1/competitions/{cid}/leaderboard", token=None))[0] == 401
    assert (await api.get("/no/such/route"))[0] == 404
    after, _ = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "points_http_requests_total"
    assert delta(requests, route=LEADERBOARD, method="GET", status="200") == 3
    assert delta(requests, route=LEADERBOARD, method="GET", status="401") == 1
    assert delta(requests, route="unmatched", method="GET", status="404") == 1
    duration = "points_http_request_duration_seconds"
    assert delta(f"{duration}_count", route=LEADERBOARD, method="GET") == 4
    assert delta(f"{duration}_bucket", route=LEADERBOARD, method="GET", le="+Inf") == 4
    assert delta(f"{duration}_sum", route=LEADERBOARD, method="GET") > 0


def test_requests_added_up_between_flushes_read_as_each_observed_alone() -> None:
    """observe_request adds requests up in plain Python; flush_requests hands them
    over.  What a scrape then reads must be what observing each would have given."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, Histogram

    from server import metrics

    durations = [0.0004, 0.001, 0.0011, 0.0049, 0.05, 0.3, 2.0, 9.0, 11.0, 0.001]
    route = "/test/flushed"  # a label no other test uses
    for seconds in durations:
        request = SimpleNamespace(method="GET", request_time=lambda s=seconds: s)
        metrics.observe_request(SimpleNamespace(request=request, route=route,
                                                get_status=lambda: 200))
    assert _samples(route) == {}  # nothing handed over before the flush
    metrics.flush_requests()
    reference = Histogram("reference_seconds", "", buckets=metrics.LATENCY_BUCKETS_S,
                          registry=CollectorRegistry())
    for seconds in durations:
        reference.observe(seconds)
    expected = {(s.name.replace("reference_seconds", "points_http_request_duration_seconds"),
                 s.labels.get("le")): s.value
                for s in next(iter(reference.collect())).samples
                if not s.name.endswith("_created")}
    got = _samples(route)
    assert got.pop(("points_http_requests_total", None)) == len(durations)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def _samples(route: str) -> dict[tuple[str, str | None], float]:
    return {(s.name, s.labels.get("le")): s.value
            for family in REGISTRY.collect() for s in family.samples
            if s.labels.get("route") == route and not s.name.endswith("_created")}


@BOTH_PATHS  # the write statements, which count, differ by path
async def test_points_counters_advance_by_exactly_what_was_posted_and_committed(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    before, _ = await scrape(api)
    assert (await api.post("/v1/points", batch(cid, parts, "a", 40)))[0] == 202
    assert await service.deps.workers.drain() == 40
    # The first 15 again: accepted again, committed once (skipped as duplicates).
    assert (await api.post("/v1/points", batch(cid, parts, "a", 15)))[0] == 202
    assert await service.deps.workers.drain() == 0
    after, _ = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("points_accepted_total") == 55
    assert delta("points_committed_total", via="queue") == 40
    assert delta("points_committed_total", via="direct") == 0
    assert delta("points_duplicates_total") == 15
    assert delta("points_claim_size_points_sum") == 55
    assert delta("points_write_batch_size_points_sum") == 55


@BOTH_PATHS  # a refused point is found by the write statements, which differ by path
@pytest.mark.parametrize("settings", [{"queue_max_attempts": 2, "retry_base_s": 0.001}],
                         indirect=True)
async def test_retries_and_dead_letters_are_counted_once_settled(
        api: Api, service: Service) -> None:
    service.deps.exporter.queue_stats.cache_s = 0.0  # every scrape reads Redis
    cid, _ = await seed(api)
    before, _ = await scrape(api)
    ghosts = {"points": [{"id": f"g-{i}", "competition_id": cid, "participant_id": 999_999,
                          "value": 1} for i in range(4)]}
    assert (await api.post("/v1/points", ghosts))[0] == 202
    await service.deps.workers.drain()  # attempt 1 of 2: scheduled for a retry
    after_retry, _ = await scrape(api)
    assert (value(after_retry, "points_retried_total")
            - value(before, "points_retried_total")) == 4

    async def dead_lettered() -> bool:  # attempt 2 of 2, once the retry is due (≤ 1 ms)
        await service.deps.workers.drain()
        return (await service.deps.queue.stats())["dead"] == 4

    await until(dead_lettered, "the 4 points' second attempt dead-lettered")
    after, _ = await scrape(api)
    dead = "points_dead_lettered_total"
    assert (value(after, dead, reason="unknown_participant")
            - value(before, dead, reason="unknown_participant")) == 4
    assert value(after, "points_queue_dead_letters") == 4  # what Redis holds, read live


async def test_points_written_directly_while_redis_is_down_are_counted_as_direct(
        own: Stores) -> None:
    assert own.redis_url is not None
    settings = make_settings(redis_timeout_s=1.0)
    async with running_service(settings, own.database_url, own.redis_url) as service:
        service.deps.exporter.cache_s = 0.0
        service.deps.exporter.queue_stats.cache_s = 0.0  # every scrape reads Redis
        api = Api(service.url)
        try:
            cid, parts = await seed(api)
            before, _ = await scrape(api)
            assert value(before, "points_queue_depth") == 0  # Redis answers: it is there
            own.redis.kill()
            status, body = await api.post("/v1/points", batch(cid, parts, "d", 40))
            assert (status, body.get("committed")) == (202, True), body
            after, text = await scrape(api)  # still answers, without the queue's gauges
            assert "points_queue_depth" not in text
            assert (value(after, "points_accepted_total")
                    - value(before, "points_accepted_total")) == 40
            assert (value(after, "points_committed_total", via="direct")
                    - value(before, "points_committed_total", via="direct")) == 40
            await asyncio.to_thread(own.redis.start)
        finally:
            api.http.close()


async def test_queue_gauges_show_a_paused_queues_depth_from_one_read_a_second(
        api: Api, service: Service) -> None:
    exporter = service.deps.exporter  # renders every scrape (``fresh_scrapes``)
    cid, parts = await seed(api)
    assert (await api.post("/v1/admin/queue/pause"))[0] == 200
    assert (await api.post("/v1/points", batch(cid, parts, "p", 150)))[0] == 202
    exporter.queue_stats.cache_s = 3600.0
    first, _ = await scrape(api)
    assert value(first, "points_queue_depth") == 150
    assert value(first, "points_queue_paused") == 1
    assert value(first, "points_queue_inflight") == 0
    assert 0 <= value(first, "points_queue_oldest_ready_age_seconds") < 60
    assert (await api.post("/v1/points", batch(cid, parts, "q", 50)))[0] == 202
    renders = exporter.renders
    second, _ = await scrape(api)
    # Rendered again, from the queue read of the first scrape: Redis holds 200 now.
    assert (value(second, "points_queue_depth"), exporter.renders) == (150, renders + 1)
    exporter.queue_stats.cache_s = 0.0
    third, _ = await scrape(api)
    assert value(third, "points_queue_depth") == 200  # read again


async def test_breaker_state_gauge_reads_2_open_1_half_open_0_closed(
        api: Api, service: Service) -> None:
    breaker = service.deps.workers.postgres_breaker

    async def state(store: str) -> float:
        samples, _ = await scrape(api)
        return value(samples, "points_circuit_breaker_state", store=store)

    breaker.base_s = breaker.max_s = 3600.0
    breaker.record_failure("test: PostgreSQL is away")
    assert (await state("postgres"), await state("redis")) == (2, 0)
    breaker.base_s = breaker.max_s = 0.0
    breaker.record_failure("test: its cool-down is over")  # the next caller may probe
    assert await state("postgres") == 1
    breaker.record_success()
    assert await state("postgres") == 0


async def test_a_restarted_task_is_counted_by_kind_from_a_series_at_zero() -> None:
    supervisor = Supervisor(restart_base_s=0.01)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("first run breaks")

    def restarts() -> float | None:
        return REGISTRY.get_sample_value("points_task_restarts_total", {"task": "probe"})

    assert restarts() is None
    supervisor.start("probe-3", flaky)
    assert restarts() == 0  # the series exists before anything failed
    await until(lambda: runs == 2, "the task's second run, after its restart", timeout_s=5)
    await supervisor.stop(1.0)
    assert (runs, restarts()) == (2, 1)


async def test_every_metric_the_alert_rules_name_is_in_a_live_scrape(api: Api) -> None:
    assert (await api.get("/health"))[0] == 200  # a request, so its series exist
    _, text = await scrape(api)
    served: set[str] = set()
    for family in text_string_to_metric_families(text):
        served.add(family.name)
        served.update(sample.name for sample in family.samples)
        if family.type == "counter":
            served.add(family.name + "_total")
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]]
    assert rules
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in ("warning", "critical")
    named = set(re.findall(r"\bpoints_[a-z0-9_]+", RULES.read_text()))
    assert len(named) >= 10
    assert named <= served, f"named in {RULES.name} but not served: {named - served}"


def _metrics_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def _metrics_dir_of(pid: int) -> Path:
    """The private metrics directory of the ``serve`` with this pid."""
    (own,) = Path(tempfile.gettempdir()).glob(f"{PREFIX}{pid}-*")
    return own


def _health_requests_by_process(directory: Path) -> dict[int, float]:
    """Each process's own count of GET /health, read from its file alone."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        counts[pid] = sum(
            sample.value for family in MultiProcessCollector.merge([str(path)])
            for sample in family.samples
            if sample.name == "points_http_requests_total"
            and sample.labels.get("route") == "/health")
    return counts


@pytest.mark.timeout(120)
def test_two_serve_processes_answer_one_view_summed_and_queue_gauges_not_doubled(
        serve_dir: Path) -> None:
    with subprocess.Popen(["true"]) as gone:  # a pid that no longer runs
        pass
    orphan = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{gone.pid}-"))  # as a serve killed -9 left
    with served(serve_dir, "--processes", "2") as server:
        assert not orphan.exists()  # removed by the next serve to start
        assert len(server.forks()) == 2
        directory = _metrics_dir_of(server.proc.pid)
        token = server.admin_token
        cid, parts = setup_competition(server.url, token)
        assert call(server.url, "POST", "/v1/admin/queue/pause", token)[0] == 200
        send(server.url, token, cid, parts, "m", 2)  # 600 points, each on a new connection
        # Which process accepts a new connection is the kernel's choice: ask until
        # both have answered some.
        sent = 0

        def both_answered() -> dict[int, float] | None:
            nonlocal sent
            assert call(server.url, "GET", "/health", token)[0] == 200
            sent += 1
            by_process = _health_requests_by_process(directory)
            return by_process if sent >= 20 and sum(map(bool, by_process.values())) == 2 \
                else None

        until_sync(both_answered, "a /health answered by each of the two processes",
                   interval_s=0.01)
        # A request is counted just after its answer is sent: wait for the last one.
        until_sync(lambda: sum(_health_requests_by_process(directory).values()) == sent,
                   f"all {sent} /health requests counted in the processes' files",
                   timeout_s=10)
        for _ in range(6):  # whichever process answers
            text = _metrics_text(server.url)
            samples = parse(text)
            assert value(samples, "points_http_requests_total", route="/health",
                         method="GET", status="200") == sent
            assert value(samples, "points_accepted_total") == 600
            assert value(samples, "points_queue_depth") == 600
            assert text.count("# TYPE points_queue_depth gauge") == 1
            assert len([k for k in samples if k[0] == "points_build_info"]) == 1
            pg_requests = sum(value(samples, "points_pool_connections", store="postgres",
                                    pool="requests", state=state)
                              for state in ("in_use", "idle"))
            assert pg_requests >= 2 * 2  # PG_POOL_MIN in each of the two processes
        assert server.terminate(60) == 0
        assert not directory.exists()  # serve removes its metrics directory


@pytest.mark.parametrize("settings", [{"queue_shards": 3}], indirect=True)
async def test_queue_gauges_sum_every_shard(api: Api, service: Service) -> None:
    by_shard: dict[int, int] = {}  # shard -> points queued on it
    for shard, (cid, parts) in (await seed_every_shard(api, 3)).items():
        assert (await api.post("/v1/points", batch(cid, parts, f"m{cid}", 10 + shard)))[0] \
            == 202
        by_shard[shard] = 10 + shard
    samples, _ = await scrape(api)
    assert value(samples, "points_queue_depth") == sum(by_shard.values())
