"""POST /v1/points and GET /v1/competitions/{id}/points/{point_id}: acceptance, commit,
id conflicts, bad input."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.access.auth import hash_token
from server.ingest.idempotency import IdempotencyKeys, body_digest
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from server.storage import points as points_sql
from tests.support import (
    BOTH_PATHS,
    TOKENS,
    Api,
    assert_exact,
    assert_settled_cleanly,
    drained,
    key_state,
    locked,
    make_settings,
    running,
    seed,
    sql,
    until,
)

# The commit watch's poll as PostgreSQL shows it (the points follow, inline).
POLL = points_sql.STORED_STATES.partition("%(")[0]


@pytest.fixture
def settings(request: pytest.FixtureRequest, ingest_path: str):
    # A short Idempotency-Key lease: a dead holder's key is taken over in a second.
    return make_settings(ingest_path=ingest_path, points_max_batch=100,
                         idempotency_lease_s=0.5, **getattr(request, "param", {}))


async def queued(service: Service) -> int:
    return (await service.deps.queue.stats())["totals"]["enqueued"]


async def test_single_point_is_accepted_then_committed(api: Api, service: Service,
                                                       clean: Stores) -> None:
    cid, (p0, *_) = await seed(api)
    status, body = await api.post("/v1/points", {"competition_id": cid, "participant_id": p0,
                                                 "value": 2.5, "id": "judge-1"})
    assert status == 202
    assert body == {"accepted": 1, "ids": ["judge-1"]}
    assert await service.deps.workers.drain() == 1
    status, point = await api.get(f"/v1/competitions/{cid}/points/judge-1", token="read")
    assert status == 200
    assert point["value"] == 2.5 and point["participant_id"] == p0
    assert point["committed_at"] >= point["received_at"]


async def test_batch_gets_sortable_server_ids_when_absent(api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    points = [{"competition_id": cid, "participant_id": parts[i % 3], "value": i}
              for i in range(50)]
    status, body = await api.post("/v1/points", {"points": points})
    assert status == 202 and body["accepted"] == 50
    assert len(set(body["ids"])) == 50
    # Sortable by time (to the millisecond: the first 12 hex digits), random after.
    times = [point_id[:12] for point_id in body["ids"]]
    assert times == sorted(times) and all(len(i) == 32 for i in body["ids"])
    assert await service.deps.workers.drain() == 50


async def test_recorded_at_is_kept_and_defaults_to_receive_time(api: Api, service: Service,
                                                               clean: Stores) -> None:
    cid, (p0, *_) = await seed(api)
    await api.post("/v1/points", {"points": [
        {"id": "a", "competition_id": cid, "participant_id": p0, "value": 1,
         "recorded_at": "2026-01-31T12:00:00.123456789+02:00"},
        {"id": "b", "competition_id": cid, "participant_id": p0, "value": 1}]})
    await service.deps.workers.drain()
    rows = dict(sql(clean, "SELECT id, recorded_at = received_at FROM points"))
    assert rows == {"a": False, "b": True}
    (recorded,), = sql(clean, "SELECT recorded_at AT TIME ZONE 'UTC' FROM points WHERE id='a'")
    assert recorded.isoformat() == "2026-01-31T10:00:00.123456"


async def test_ack_committed_waits_for_the_commit(service: Service, api: Api) -> None:
    cid, (p0, *_) = await seed(api)
    service.deps.workers.start(1)
    status, body = await api.post("/v1/points?ack=committed",
                                  {"competition_id": cid, "participant_id": p0, "value": 1})
    assert status == 201
    assert body["committed"] is True


# The requests wait while the test holds the points table: a long ack timeout.
@pytest.mark.parametrize("settings", [{"ack_timeout_s": 30.0}], indirect=True)
async def test_concurrent_committed_acks_share_one_query_per_tick(
        service: Service, api: Api, clean: Stores) -> None:
    # 60 requests wait at once, each for its own point: one query at a time asks
    # PostgreSQL about all of them (polled per request, each query would name one).
    # The points table is held so that a poll stays in PostgreSQL, where its text
    # (the ids inline) says whom it asks about.
    cid, parts = await seed(api)
    ids = [f"w{i}" for i in range(60)]
    many = Api(service.url, max_clients=100)
    waiting = [asyncio.ensure_future(many.post(
        "/v1/points?ack=committed", {"id": point_id, "competition_id": cid,
                                     "participant_id": parts[i % 3], "value": i}))
        for i, point_id in enumerate(ids)]
    hold = contextlib.ExitStack()

    async def a_poll_names_every_id() -> bool:
        hold.close()  # a poll that began before every request waited goes on
        hold.enter_context(locked(clean, "points"))
        polls = await until(lambda: running(clean, POLL), "a poll held by the lock")
        assert len(polls) == 1, polls  # never two polls at once
        return all(f'"{point_id}"' in polls[0] for point_id in ids)

    try:
        with hold:
            await until(a_poll_names_every_id, "one poll naming every waiting request's id")
            await asyncio.sleep(0.2)  # twenty ticks pass, on purpose, while it is held…
            assert len(running(clean, POLL)) == 1  # …and no second poll started
        service.deps.workers.start(1)
        answers = await asyncio.gather(*waiting)
    finally:
        many.close()
    assert [(status, body["committed"], body["ids"]) for status, body in answers] == [
        (201, True, [point_id]) for point_id in ids]
    await service.deps.workers.folder.fold_once()
    assert_exact(clean, set(ids))


@pytest.mark.parametrize("settings", [{"ack_timeout_s": 0.2}], indirect=True)
async def test_ack_committed_answers_202_when_commit_is_not_possible_in_time(
        service: Service, api: Api) -> None:
    # No workers run, so nothing can commit: the point is safely queued, not lost.
    cid, (p0, *_) = await seed(api)
    status, body = await api.post("/v1/points?ack=committed",
                                  {"competition_id": cid, "participant_id": p0, "value": 1})
    assert status == 202
    assert body["committed"] is False and body["accepted"] == 1


@BOTH_PATHS  # the same ids again: one write statement per point, or per claim
async def test_resending_a_batch_leaves_standings_unchanged(api: Api, service: Service,
                                                            clean: Stores) -> None:
    cid, parts = await seed(api)
    batch = {"points": [{"id": f"r{i}", "competition_id": cid, "participant_id": parts[i % 3],
                         "value": 1.5} for i in range(12)]}
    for copy in range(3):
        assert (await api.post("/v1/points", batch))[0] == 202
        # A copy inserts nothing, and settles like the first: never a failure to
        # retry or to dead-letter.
        assert await service.deps.workers.drain() == (12 if copy == 0 else 0), copy
    await assert_settled_cleanly(service)
    assert_exact(clean, {f"r{i}" for i in range(12)})
    status, board = await api.get(f"/v1/competitions/{cid}/leaderboard", token="read")
    assert status == 200
    assert [e["points"] for e in board["entries"]] == [4, 4, 4]


async def other_competition(api: Api) -> tuple[int, int]:
    """A second competition with one participant: (its id, the participant's)."""
    status, comp = await api.post("/v1/competitions", {"slug": "plate", "name": "The Plate"})
    assert status == 201, comp
    status, body = await api.post(f"/v1/competitions/{comp['id']}/participants", {
        "participants": [{"external_ref": "q", "display_name": "Q"}]})
    assert status == 201, body
    return comp["id"], body["participants"][0]["id"]


async def dead_lettered(api: Api, service: Service, reason: str) -> float:
    """``points_dead_lettered_total{reason}`` as /metrics shows it now."""
    service.deps.exporter.cache_s = 0.0  # read, act, read again: no render cache
    response = await api.http.fetch(api.base_url + "/metrics")
    return sum(sample.value
               for family in text_string_to_metric_families(response.body.decode())
               for sample in family.samples
               if sample.name == "points_dead_lettered_total"
               and sample.labels.get("reason") == reason)


def stored(clean: Stores) -> list[tuple]:
    return sql(clean, "SELECT competition_id, id, participant_id, value FROM points "
                      "ORDER BY 1, 2")


def standings(clean: Stores) -> list[tuple]:
    return sql(clean, "SELECT competition_id, participant_id, total, points FROM standings "
                      "ORDER BY 1, 2")


@BOTH_PATHS  # the key of the workers' idempotent insert
async def test_two_competitions_may_use_the_same_client_id(api: Api, service: Service,
                                                           clean: Stores) -> None:
    cup, (a, *_) = await seed(api)
    plate, q = await other_competition(api)
    service.deps.workers.start(1)
    in_cup = {"id": "judge-7", "competition_id": cup, "participant_id": a, "value": 8}
    in_plate = {"id": "judge-7", "competition_id": plate, "participant_id": q, "value": 5}
    for point in (in_cup, in_plate, in_cup):  # the last: an identical resend, a no-op
        status, body = await api.post("/v1/points?ack=committed", point)
        assert (status, body) == (201, {"accepted": 1, "ids": ["judge-7"], "committed": True})
    for cid, value in ((cup, 8.0), (plate, 5.0)):
        status, point = await api.get(f"/v1/competitions/{cid}/points/judge-7", token="read")
        assert (status, point["competition_id"], point["value"]) == (200, cid, value)
    await drained(service, 2, clean)
    assert stored(clean) == [(cup, "judge-7", a, 8.0), (plate, "judge-7", q, 5.0)]
    assert standings(clean) == [(cup, a, 8.0, 1), (plate, q, 5.0, 1)]  # the resend: once
    await assert_settled_cleanly(service)
    assert service.deps.workers.stats.points_duplicate == 1


@BOTH_PATHS  # the conflict found by the commit watch, then by the worker's write
async def test_an_id_taken_by_other_content_answers_409_id_conflict_and_is_dead_lettered(
        api: Api, service: Service, clean: Stores) -> None:
    cid, (a, *_) = await seed(api)
    service.deps.workers.start(1)
    first = {"id": "judge-7", "competition_id": cid, "participant_id": a, "value": 8}
    assert (await api.post("/v1/points?ack=committed", first))[0] == 201
    before = await dead_lettered(api, service, "id_conflict")
    corrected = {"points": [{**first, "value": 9},
                            {"id": "judge-8", "competition_id": cid, "participant_id": a,
                             "value": 1}]}
    status, body = await api.post("/v1/points?ack=committed", corrected)
    assert status == 409, body
    error = body["error"]
    assert error["code"] == "id_conflict" and "'judge-7'" in error["message"]
    assert [(d["index"], d["field"]) for d in error["details"]] == [(0, "id")]
    assert "'judge-7'" in error["details"][0]["message"]
    # The other point was queued (it commits); the conflicting one never will.
    assert (error["accepted_ids"], error["unknown_ids"]) == (["judge-8"], [])

    async def dead_letters() -> list:
        return (await api.get("/v1/admin/dlq"))[1]["items"]

    (letter,) = await until(dead_letters, "the conflicting point dead-lettered")
    assert letter["reason"] == "id_conflict" and letter["point"]["value"] == 9
    assert letter["key"].startswith(f"{cid}:judge-7:") and "'judge-7'" in letter["last_error"]
    assert await dead_lettered(api, service, "id_conflict") - before == 1
    await drained(service, 2, clean)
    assert stored(clean) == [(cid, "judge-7", a, 8.0), (cid, "judge-8", a, 1.0)]
    assert standings(clean) == [(cid, a, 9.0, 2)]
    assert service.deps.workers.stats.points_duplicate == 0  # never taken for a repeat


@BOTH_PATHS  # one statement per point, or the whole claim in one
async def test_a_queued_point_whose_id_is_taken_is_dead_lettered_not_counted_as_a_duplicate(
        api: Api, service: Service, clean: Stores) -> None:
    cid, (a, b, _) = await seed(api)
    lap = {"id": "lap-1", "competition_id": cid, "participant_id": a, "value": 2}
    # In one request, then in another: other participant, other value, other time,
    # and one identical resend (the only repeat).
    sent = [{"points": [lap, {**lap, "participant_id": b}]},
            {"points": [{**lap, "value": 3}, lap,
                        {**lap, "recorded_at": "2026-01-31T12:00:00Z"}]}]
    for body in sent:
        assert (await api.post("/v1/points", body))[0] == 202
    before = await dead_lettered(api, service, "id_conflict")
    assert await service.deps.workers.drain() == 1
    _, page = await api.get("/v1/admin/dlq")
    assert sorted((item["reason"], item["point"]["participant_id"], item["point"]["value"])
                  for item in page["items"]) == [
        ("id_conflict", a, 2.0), ("id_conflict", a, 3.0), ("id_conflict", b, 2.0)]
    assert len({item["key"] for item in page["items"]}) == 3
    assert await dead_lettered(api, service, "id_conflict") - before == 3
    stats = service.deps.workers.stats
    assert (stats.points_committed, stats.points_duplicate, stats.points_dead) == (1, 1, 3)
    assert stored(clean) == [(cid, "lap-1", a, 2.0)]
    assert standings(clean) == [(cid, a, 2.0, 1)]


async def test_get_unknown_point_is_404(api: Api) -> None:
    for path in ("/v1/competitions/1/points/nope", "/v1/points/nope"):  # the old route is gone
        status, body = await api.get(path, token="read")
        assert status == 404 and body["error"]["code"] == "not_found", path


GOOD = {"competition_id": 1, "participant_id": 1, "value": 1}
BIG = 2**64


@pytest.mark.parametrize("payload, field", [
    ({"participant_id": 1, "value": 1}, "competition_id"),
    ({**GOOD, "extra": 1}, "extra"),
    ({**GOOD, "value": "3"}, "value"),
    ({**GOOD, "value": True}, "value"),
    ({**GOOD, "participant_id": False}, "participant_id"),
    ({**GOOD, "competition_id": 0}, "competition_id"),
    ({**GOOD, "competition_id": 1.5}, "competition_id"),
    ({**GOOD, "value": None}, "value"),
    ({**GOOD, "value": [1]}, "value"),
    ({**GOOD, "value": 1e16}, "value"),
    ({**GOOD, "value": -(10**16)}, "value"),
    ({**GOOD, "id": "x" * 65}, "id"),
    ({**GOOD, "id": ""}, "id"),
    ({**GOOD, "id": 7}, "id"),
    ({**GOOD, "recorded_at": "yesterday"}, "recorded_at"),
    ({**GOOD, "recorded_at": "2026-01-31T12:00:00"}, "recorded_at"),
    ({**GOOD, "recorded_at": "2026-02-30T12:00:00Z"}, "recorded_at"),
    ({**GOOD, "recorded_at": "2999-01-01T00:00:00Z"}, "recorded_at"),
])
async def test_invalid_field_is_422_naming_index_and_field(api: Api, service: Service,
                                                           payload: dict, field: str) -> None:
    status, body = await api.post("/v1/points", {"points": [GOOD, payload]})
    assert status == 422
    assert body["error"]["code"] == "invalid_fields"
    assert {"index": 1, "field": field} in [
        {k: d[k] for k in ("index", "field") if k in d} for d in body["error"]["details"]]
    assert await queued(service) == 0


@pytest.mark.parametrize("raw, field", [
    (b'{"competition_id": 1, "participant_id": 1, "value": NaN}', "value"),
    (b'{"competition_id": 1, "participant_id": 1, "value": Infinity}', "value"),
    (b'{"competition_id": 1, "participant_id": 1, "value": -Infinity}', "value"),
    (b'{"competition_id": 1, "participant_id": 1, "value": %d}' % BIG, "value"),
    (b'{"competition_id": %d, "participant_id": 1, "value": 1}' % BIG, "competition_id"),
])
async def test_non_finite_and_oversized_numbers_are_422(api: Api, service: Service,
                                                        raw: bytes, field: str) -> None:
    status, body = await api.post("/v1/points", body=raw, content_type="application/json")
    assert status == 422, body
    assert body["error"]["details"][0]["field"] == field
    assert await queued(service) == 0


@pytest.mark.parametrize("raw, code", [
    (b"{", "malformed_json"),
    (b"", "malformed_json"),
    (b'{"competition_id": 1,}', "malformed_json"),
    (b'{"value": "\xff\xfe"}', "invalid_encoding"),
    (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
])
async def test_malformed_body_is_400(api: Api, service: Service, raw: bytes, code: str) -> None:
    status, body = await api.post("/v1/points", body=raw, content_type="application/json")
    assert status == 400
    assert body["error"]["code"] == code
    assert set(body["error"]) == {"code", "message", "details"}
    assert await queued(service) == 0


async def test_deeply_nested_value_is_refused_not_crashed(api: Api, service: Service) -> None:
    raw = b'{"competition_id": 1, "participant_id": 1, "value": ' + b"[" * 500 + b"]" * 500
    raw += b"}"
    status, _ = await api.post("/v1/points", body=raw, content_type="application/json")
    assert status == 422
    assert await queued(service) == 0


async def test_wrong_content_type_is_415(api: Api, service: Service) -> None:
    status, body = await api.post("/v1/points", body=orjson.dumps(GOOD),
                                  content_type="text/plain")
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"
    assert await queued(service) == 0


async def test_empty_and_oversized_batches_are_422(api: Api, service: Service) -> None:
    status, body = await api.post("/v1/points", {"points": []})
    assert status == 422 and body["error"]["details"][0]["field"] == "points"
    limit = service.deps.settings.points_max_batch
    status, body = await api.post("/v1/points", {"points": [GOOD] * (limit + 1)})
    assert status == 422 and body["error"]["details"][0]["field"] == "points"
    status, body = await api.post("/v1/points", {"points": [GOOD], "more": 1})
    assert status == 422
    assert await queued(service) == 0


async def test_body_over_the_limit_is_413_without_reading_it(api: Api,
                                                             service: Service) -> None:
    limit = service.deps.settings.json_body_max_bytes
    status, body = await api.post("/v1/points", body=b" " * (limit + 1),
                                  content_type="application/json")
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert await queued(service) == 0


async def test_unknown_ack_mode_is_422(api: Api, service: Service) -> None:
    status, _ = await api.post("/v1/points?ack=maybe", GOOD)
    assert status == 422
    assert await queued(service) == 0


@pytest.mark.parametrize("raw", [
    b'{"\\ud800": 1, "competition_id": 1, "participant_id": 1, "value": 1}',
    b'{"competition_id": 1, "participant_id": 1, "value": 1, "recorded_at": "\\udfff"}',
])
async def test_lone_surrogates_anywhere_are_400(api: Api, service: Service, raw: bytes) -> None:
    status, body = await api.post("/v1/points", body=raw, content_type="application/json")
    assert status == 400 and body["error"]["code"] == "invalid_encoding"
    assert await queued(service) == 0


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                   "1899-12-31T23:59:59Z"])
async def test_timestamps_outside_the_supported_years_are_422(api: Api, service: Service,
                                                              stamp: str) -> None:
    status, body = await api.post("/v1/points", {**GOOD, "recorded_at": stamp})
    assert status == 422 and body["error"]["details"][0]["field"] == "recorded_at"
    status, _ = await api.post("/v1/competitions", {"slug": "x", "name": "x",
                                                    "starts_at": stamp})
    assert status == 422


async def test_odd_ids_and_query_values_are_404_or_422_never_500(api: Api) -> None:
    assert (await api.get("/v1/competitions/1/points/%00", token="read"))[0] == 404
    assert (await api.get("/v1/competitions/1/points/a%01b", token="read"))[0] == 404
    assert (await api.get("/v1/competitions/0/points/a", token="read"))[0] == 404
    for query in ("limit=%C2%B2", "limit=" + "9" * 5000, "limit=-1", "cursor=1e3"):
        status, _ = await api.get(f"/v1/competitions?{query}", token="read")
        assert status == 422, query


@BOTH_PATHS  # both copies in one claim (pipelined) or one point per claim
async def test_idempotency_key_makes_a_resent_batch_a_no_op(api: Api, service: Service,
                                                            clean: Stores) -> None:
    cid, parts = await seed(api)
    body = {"points": [{"competition_id": cid, "participant_id": parts[i % 3], "value": i}
                       for i in range(20)]}
    key = {"Idempotency-Key": "upload-2026-11-28-judge-4"}
    status, first = await api.post("/v1/points", body, headers=key)
    assert status == 202
    status, second = await api.post("/v1/points", body, headers=key)
    assert status == 202 and second == first  # answered from the key's record
    status, other = await api.post("/v1/points", body, headers=key, token="ingest")
    assert not set(other["ids"]) & set(first["ids"])  # a key is scoped to its token
    assert await queued(service) == 40  # the resend enqueued nothing
    assert await service.deps.workers.drain() == 40
    await assert_settled_cleanly(service)
    assert_exact(clean, set(first["ids"]) | set(other["ids"]))


KEY = {"Idempotency-Key": "judge-4-round-2"}


def _points(cid: int, parts: list[int], value: float, n: int = 3) -> dict:
    return {"points": [{"competition_id": cid, "participant_id": parts[i % len(parts)],
                        "value": value} for i in range(n)]}


async def test_the_same_idempotency_key_with_another_request_is_422_and_accepts_nothing(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    status, _ = await api.post("/v1/points", _points(cid, parts, 1), headers=KEY)
    assert status == 202
    # Another body, another query, another path: each is another request.
    for path, body in (("/v1/points", _points(cid, parts, 2)),
                       ("/v1/points?ack=committed", _points(cid, parts, 1))):
        status, answer = await api.post(path, body, headers=KEY)
        assert (status, answer["error"]["code"]) == (422, "idempotency_key_reused"), answer
        assert "ids" not in answer["error"]  # refused before anything was attempted
    status, answer = await api.post("/v1/points/bulk", headers=KEY, content_type="text/csv",
                                    body=f"competition_id,participant_id,value\n"
                                         f"{cid},{parts[0]},1\n".encode())
    assert (status, answer["error"]["code"]) == (422, "idempotency_key_reused"), answer
    assert await queued(service) == 3
    # Kept for IDEMPOTENCY_TTL_S (24 h), by Redis.
    record = IdempotencyKeys.record_key(hash_token(TOKENS["admin"]), KEY["Idempotency-Key"])
    assert 86400 - 10 < await service.deps.redis.ttl(record) <= 86400


@pytest.mark.parametrize("settings", [{"idempotency_ttl_s": 1}], indirect=True)
async def test_a_key_is_forgotten_after_idempotency_ttl_s(api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    status, _ = await api.post("/v1/points", _points(cid, parts, 1), headers=KEY)
    assert status == 202

    async def forgotten() -> bool:
        return await key_state(service, KEY["Idempotency-Key"], token="admin") is None

    await until(forgotten, "Redis to expire the key's record")
    status, _ = await api.post("/v1/points", _points(cid, parts, 2), headers=KEY)
    assert status == 202


async def test_a_resend_after_success_answers_what_the_first_did_and_enqueues_nothing(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    body = _points(cid, parts, 1)
    first = asyncio.ensure_future(api.post("/v1/points?ack=committed", body, headers=KEY))
    await until(lambda: queued(service), "the points enqueued")
    await service.deps.workers.drain()
    status, answer = await first
    assert (status, answer["committed"]) == (201, True)
    response = await api.response("POST", "/v1/points?ack=committed", json=body, headers=KEY)
    assert (response.code, orjson.loads(response.body)) == (201, answer)
    assert response.headers["Idempotent-Replayed"] == "true"
    assert await queued(service) == 3


async def test_a_request_while_the_first_with_its_key_runs_is_409_with_retry_after(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    body = _points(cid, parts, 1)
    # No workers: the first waits for a commit until ACK_TIMEOUT_S.
    first = asyncio.ensure_future(api.post("/v1/points?ack=committed", body, headers=KEY))

    async def in_flight() -> bool:
        return await key_state(service, KEY["Idempotency-Key"], token="admin") == "in_flight"

    await until(in_flight, "the first request under way")
    response = await api.response("POST", "/v1/points?ack=committed", json=body, headers=KEY)
    error = orjson.loads(response.body)["error"]
    assert (response.code, error["code"]) == (409, "idempotency_key_in_flight"), error
    assert int(response.headers["Retry-After"]) >= 1
    assert not first.done()
    status, answer = await first
    assert (status, answer["committed"]) == (202, False)
    assert await api.post("/v1/points?ack=committed", body, headers=KEY) == (202, answer)
    assert await queued(service) == 3


async def test_a_request_that_accepted_nothing_leaves_its_key_free(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    service.deps.queue.max_points = 2  # three points cannot fit: refused whole
    status, answer = await api.post("/v1/points", _points(cid, parts, 1), headers=KEY)
    assert (status, answer["error"]["code"]) == (503, "queue_full"), answer
    assert await key_state(service, KEY["Idempotency-Key"], token="admin") is None
    service.deps.queue.max_points = 0
    status, _ = await api.post("/v1/points", _points(cid, parts, 2), headers=KEY)
    assert status == 202


@pytest.mark.parametrize("ingest_path", ["naive"])  # one call per point: a request splits
async def test_after_a_partial_failure_the_key_stays_bound_and_its_request_runs_again(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    service.deps.queue.max_points = 5
    body = _points(cid, parts, 1, n=8)
    status, answer = await api.post("/v1/points", body, headers=KEY)
    error = answer["error"]
    assert (status, error["code"], len(error["accepted_ids"])) == (503, "queue_full", 5), error
    # Another body under the key could reuse the ids of points already accepted.
    status, other = await api.post("/v1/points", _points(cid, parts, 2, n=8), headers=KEY)
    assert (status, other["error"]["code"]) == (422, "idempotency_key_reused")
    service.deps.queue.max_points = 0
    status, again = await api.post("/v1/points", body, headers=KEY)
    assert (status, again["ids"]) == (202, error["ids"])  # run again, the same ids
    assert await service.deps.workers.drain() == 8
    await assert_settled_cleanly(service)
    assert_exact(clean, set(error["ids"]))


async def test_a_key_whose_holder_died_is_taken_over_once_its_lease_runs_out(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    body = _points(cid, parts, 1)
    raw = orjson.dumps(body)
    # A process began this very request and died: its record is left in flight,
    # its lease no longer renewed.
    _, hold = await service.deps.idempotency.begin(
        hash_token(TOKENS["admin"]), KEY["Idempotency-Key"], "POST /v1/points?ack=queued",
        body_digest(raw))
    hold.stop_heartbeat()
    status, answer = await api.post("/v1/points", body=raw, content_type="application/json",
                                    headers=KEY)
    assert (status, answer["error"]["code"]) == (409, "idempotency_key_in_flight")

    async def taken_over() -> tuple[int, Any] | None:
        reply = await api.post("/v1/points", body=raw, content_type="application/json",
                               headers=KEY)
        return reply if reply[0] != 409 else None

    status, answer = await until(taken_over, "the dead holder's lease to run out")
    assert status == 202 and answer["accepted"] == 3


@pytest.mark.parametrize("key", ["", "x" * 201, "has space", "naïve"])
async def test_a_malformed_idempotency_key_is_422_and_accepts_nothing(
        api: Api, service: Service, key: str) -> None:
    status, body = await api.post("/v1/points", GOOD, headers={"Idempotency-Key": key})
    assert status == 422 and body["error"]["details"][0]["field"] == "Idempotency-Key"
    assert await queued(service) == 0
