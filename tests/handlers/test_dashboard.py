"""The dashboard's server side: its page, its one cached summary, its runs' charts.

The page itself is driven in a real browser by ``tests/dashboard/``; here are the
answers it reads, on real stores: who may read them, what a role sees, that a
burst of viewers costs one build a second, and that a store down is a state the
summary shows rather than an error.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest
import tornado.ioloop

from server.access.auth import hash_token
from server.ops.bench_runs import RunIndex
from server.ops.dashboard import for_role
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores
from tests.support import TOKENS, Api, batch, make_settings, seed, sql, until

PNG = b"\x89PNG\r\n\x1a\n" + b"chart" * 10
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def write_run(root: Path, scenario: str, run: str, *, passed: int = 1, failed: int = 0,
              accepted: float = 1234.5) -> Path:
    folder = root / scenario / run
    folder.mkdir(parents=True)
    (folder / "summary.json").write_bytes(orjson.dumps({
        "scenario": scenario, "created": run, "scale": 0.5, "paths": ["naive", "pipelined"],
        "comparison": {"headline": {"pipelined": {"accepted points/s": accepted,
                                                  "note": "not a number"}}},
        "thresholds": [{"passed": True}] * passed + [{"passed": False}] * failed}))
    (folder / "throughput.png").write_bytes(PNG)
    (folder / "timeseries.csv").write_text("t,rate\n")
    return folder


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    write_run(root, "smoke", "20261201T000000Z")
    write_run(root, "competition_burst", "20261202T000000Z", passed=3, failed=1)
    os.symlink("20261202T000000Z", root / "competition_burst" / "latest")  # not a run
    (root / "smoke" / "20261203T000000Z").mkdir()  # no summary: not a run
    (root / "secret.png").write_bytes(PNG)  # outside any run folder
    return root


@pytest.fixture
def settings(results: Path, ingest_path: str):
    return make_settings(ingest_path=ingest_path, results_dir=results)


async def test_page_and_assets_are_public_with_a_policy_allowing_no_inline_or_foreign_code(
        api: Api) -> None:
    page = await api.response("GET", "/dashboard", token=None)
    assert page.code == 200
    assert page.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    html = page.body.decode()
    assert 'src="/dashboard/app.js"' in html and 'href="/dashboard/app.css"' in html
    for path, media in (("/dashboard/app.js", "text/javascript"),
                        ("/dashboard/app.css", "text/css")):
        asset = await api.response("GET", path, token=None)
        assert (asset.code, asset.headers["Content-Type"]) == (200, f"{media}; charset=UTF-8")
        assert asset.body
    assert (await api.get("/dashboard/other.js", token=None))[0] == 404


async def test_summary_needs_a_token_and_names_the_viewers_role(api: Api) -> None:
    status, body = await api.get("/v1/dashboard/summary", token=None)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert (await api.get("/v1/dashboard/summary", token="revoked"))[0] == 401
    for role in ("read", "ingest", "admin"):
        status, summary = await api.get("/v1/dashboard/summary", token=role)
        assert (status, summary["viewer"]) == (200, {"role": role})


async def test_summary_shows_the_queue_competitions_workers_stores_and_runs(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    assert (await api.post("/v1/points", batch(cid, parts, "q", 7)))[0] == 202
    status, summary = await api.get("/v1/dashboard/summary", token="read")
    assert status == 200
    assert summary["status"] == "ready" and summary["unavailable"] == []
    queue = summary["queue"]  # no workers in this service: the points wait
    assert (queue["depth"], queue["inflight"], queue["paused"]) == (7, 0, False)
    assert queue["totals"]["enqueued"] == 7 and queue["path"] == "pipelined"
    assert [c["id"] for c in summary["competitions"]] == [cid]
    assert summary["stores"]["postgres"]["ok"] and summary["stores"]["redis"]["ok"]
    assert summary["stores"]["redis"]["durability"]["appendonly"] == "yes"
    assert summary["workers"]["breakers"]["postgres"]["state"] == "closed"
    assert {"lag_max_ms_last_s", "lag_max_ms_60s"} <= set(summary["loop"])
    assert isinstance(queue["totals_at"], float)
    requests = {(p["store"], p["pool"]): p for p in summary["pools"]}
    assert {("postgres", "requests"), ("redis", "requests")} <= set(requests)
    assert requests["postgres", "requests"]["in_use"] >= 0
    burst, smoke = summary["runs"]  # newest first; `latest` and a folder without summary skipped
    assert (burst["scenario"], burst["run"], burst["thresholds"]) == (
        "competition_burst", "20261202T000000Z", {"passed": 3, "failed": 1})
    assert burst["headline"] == {"pipelined": {"accepted points/s": 1234.5}}
    assert burst["charts"] == ["throughput.png"] and smoke["scenario"] == "smoke"


async def test_a_burst_of_viewers_costs_one_summary_build_a_second(
        api: Api, service: Service) -> None:
    refreshed = service.deps.dashboard._summary
    builds = 0
    build = refreshed._compute

    async def counted():
        nonlocal builds
        builds += 1
        return await build()

    refreshed._compute = counted
    answers = await asyncio.gather(*(api.get("/v1/dashboard/summary", token=role)
                                     for role in ("read", "admin") * 10))
    assert {status for status, _ in answers} == {200}
    assert len({summary["as_of"] for _, summary in answers}) == 1
    assert builds == 1
    first = answers[0][1]["as_of"]

    async def rebuilt() -> bool:
        return (await api.get("/v1/dashboard/summary"))[1]["as_of"] != first

    await until(rebuilt, "a summary built after the cached one's second")
    assert builds == 2


async def test_a_runs_chart_is_served_to_any_token_and_nothing_outside_a_run_folder(
        api: Api) -> None:
    path = "/v1/dashboard/runs/smoke/20261201T000000Z/throughput.png"
    response = await api.response("GET", path, token="read")
    assert (response.code, response.headers["Content-Type"], response.body) == (
        200, "image/png", PNG)
    assert (await api.get(path, token=None))[0] == 401
    for wrong in ("smoke/20261201T000000Z/timeseries.csv",  # not a chart
                  "smoke/20261201T000000Z/missing.png",
                  "smoke/..%2F..%2Fsecret.png", "smoke/%2E%2E/secret.png",
                  "smoke/20261201T000000Z/..%2F..%2Fsecret.png"):
        status, body = await api.get(f"/v1/dashboard/runs/{wrong}", token="read")
        assert (status, body["error"]["code"]) == (404, "not_found"), wrong


def test_run_index_refuses_names_and_links_that_leave_the_results_folder(
        tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_run(root, "smoke", "20261201T000000Z")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "leak.png").write_bytes(PNG)
    os.symlink(outside / "leak.png", root / "smoke" / "20261201T000000Z" / "leak.png")
    index = RunIndex(root)
    assert index.read_chart("smoke", "20261201T000000Z", "throughput.png") == PNG
    assert index.read_chart("smoke", "20261201T000000Z", "leak.png") is None
    assert index.read_chart("smoke", "..", "results.png") is None
    assert index.read_chart(".hidden", "x", "y.png") is None
    assert RunIndex(tmp_path / "absent").list_runs() == []


def test_a_runs_charts_drawn_after_it_was_first_listed_are_listed_too(
        tmp_path: Path) -> None:
    # The harness writes summary.json first, then draws the charts.
    folder = write_run(tmp_path, "smoke", "20261201T000000Z")
    index = RunIndex(tmp_path)
    assert index.list_runs()[0]["charts"] == ["throughput.png"]
    (folder / "latency.png").write_bytes(PNG)
    assert index.list_runs()[0]["charts"] == ["latency.png", "throughput.png"]


def test_run_index_skips_a_summary_that_is_not_the_harnesss_and_rereads_a_changed_one(
        tmp_path: Path) -> None:
    write_run(tmp_path, "smoke", "20261201T000000Z", accepted=1.0)
    (tmp_path / "smoke" / "20261202T000000Z").mkdir()
    (tmp_path / "smoke" / "20261202T000000Z" / "summary.json").write_text("{not json")
    index = RunIndex(tmp_path)
    (only,) = index.list_runs()
    assert only["headline"]["pipelined"]["accepted points/s"] == 1.0
    summary = tmp_path / "smoke" / "20261201T000000Z" / "summary.json"
    data = orjson.loads(summary.read_bytes())
    data["comparison"]["headline"]["pipelined"]["accepted points/s"] = 2.0
    summary.write_bytes(orjson.dumps(data))
    os.utime(summary, (1, 1))  # another modification time
    assert index.list_runs()[0]["headline"]["pipelined"]["accepted points/s"] == 2.0


def test_only_an_admin_sees_error_texts() -> None:
    summary = {"stores": {"redis": {"ok": False, "error": "ConnectionError: 10.0.0.7:6379"}},
               "workers": {"tasks": [{"name": "worker-0", "last_error": "at 10.0.0.7"}],
                           "breakers": {"redis": {"state": "open", "last_error": "x"}}}}
    admin = for_role(summary, "admin")
    assert admin["stores"]["redis"]["error"].endswith("6379")
    assert admin["viewer"] == {"role": "admin"}
    for role in ("read", "ingest"):
        shown = for_role(summary, role)
        assert "10.0.0.7" not in orjson.dumps(shown).decode()
        assert shown["stores"]["redis"] == {"ok": False}
        assert shown["viewer"] == {"role": role}
    assert "error" in summary["stores"]["redis"]  # the cached summary is left whole


@pytest.fixture
def own_api(own: Stores, io_loop: tornado.ioloop.IOLoop, results: Path):
    """A service on this test's own stores (to kill), with a read token too."""
    sql(own, "INSERT INTO api_tokens (token_hash, role, name) VALUES (%s, 'read', 'r')",
        hash_token(TOKENS["read"]))
    settings = make_settings(results_dir=results)
    context = running_service(settings, own.database_url, own.redis_url)
    service = io_loop.run_sync(context.__aenter__)
    api = Api(service.url)
    yield api
    api.close()
    io_loop.run_sync(lambda: context.__aexit__(None, None, None))


async def test_redis_down_the_summary_answers_without_the_queue_and_says_so(
        own_api: Api, own: Stores) -> None:
    api = own_api
    cid, _ = await seed(api)  # verifies (and caches) the tokens
    assert (await api.get("/v1/dashboard/summary", token="read"))[0] == 200
    own.redis.kill()

    async def shown_down() -> bool:
        status, summary = await api.get("/v1/dashboard/summary", token="read")
        return status == 200 and summary["unavailable"] == ["queue"]

    await until(shown_down, "a summary that names the queue unavailable")
    status, read = await api.get("/v1/dashboard/summary", token="read")
    assert read["queue"] is None and read["status"] == "degraded"
    assert read["stores"]["redis"]["ok"] is False and "error" not in read["stores"]["redis"]
    assert [c["id"] for c in read["competitions"]] == [cid]  # PostgreSQL still answers
    status, admin = await api.get("/v1/dashboard/summary", token="admin")
    assert status == 200 and admin["stores"]["redis"]["error"]
    assert TOKENS["admin"] not in orjson.dumps(admin).decode()
