"""Competitions and participants: create, page, read, idempotent registration."""

from __future__ import annotations

import pytest

from server.runtime.lifecycle import Service
from tests.support import Api, seed


async def test_create_competition_returns_the_row(api: Api) -> None:
    status, body = await api.post("/v1/competitions", {
        "slug": "spring-open", "name": "Spring Open", "starts_at": "2026-03-01T09:00:00Z"})
    assert status == 201
    assert body["slug"] == "spring-open" and body["id"] > 0
    assert body["starts_at"].startswith("2026-03-01T09:00:00")
    status, again = await api.get(f"/v1/competitions/{body['id']}", token="read")
    assert status == 200 and again["name"] == "Spring Open"


async def test_slug_clash_is_409(api: Api) -> None:
    assert (await api.post("/v1/competitions", {"slug": "a", "name": "A"}))[0] == 201
    status, body = await api.post("/v1/competitions", {"slug": "a", "name": "B"})
    assert status == 409 and body["error"]["code"] == "slug_taken"


@pytest.mark.parametrize("payload, field", [
    ({"name": "x"}, "slug"),
    ({"slug": "Bad Slug", "name": "x"}, "slug"),
    ({"slug": "ok", "name": ""}, "name"),
    ({"slug": "ok", "name": "x", "color": "red"}, "color"),
    ({"slug": "ok", "name": "x", "starts_at": "soon"}, "starts_at"),
    ({"slug": "ok", "name": "x", "starts_at": "2026-03-02T00:00:00Z",
      "ends_at": "2026-03-01T00:00:00Z"}, "ends_at"),
])
async def test_invalid_competition_is_422(api: Api, payload: dict, field: str) -> None:
    status, body = await api.post("/v1/competitions", payload)
    assert status == 422
    assert field in [d.get("field") for d in body["error"]["details"]]
    assert (await api.get("/v1/competitions", token="read"))[1]["items"] == []


async def test_competitions_are_paged_by_cursor(api: Api) -> None:
    for i in range(5):
        await api.post("/v1/competitions", {"slug": f"c{i}", "name": f"C{i}"})
    status, page = await api.get("/v1/competitions?limit=2", token="read")
    assert status == 200 and [c["slug"] for c in page["items"]] == ["c0", "c1"]
    seen, pages = [c["slug"] for c in page["items"]], 1
    while page["next_cursor"]:
        assert pages < 3, f"a cursor past the last of 5 competitions, 2 a page: {seen}"
        _, page = await api.get(f"/v1/competitions?limit=2&cursor={page['next_cursor']}",
                                token="read")
        seen, pages = seen + [c["slug"] for c in page["items"]], pages + 1
    assert seen == [f"c{i}" for i in range(5)]
    assert (await api.get("/v1/competitions?limit=0", token="read"))[0] == 422


async def test_unknown_or_absurd_competition_id_is_404(api: Api) -> None:
    for path in ("/v1/competitions/99", "/v1/competitions/99999999999999999999999",
                 "/v1/competitions/99/leaderboard", "/v1/competitions/99/stats",
                 "/v1/participants/99"):
        status, body = await api.get(path, token="read")
        assert status == 404, path
        assert body["error"]["code"] == "not_found"


async def test_participants_are_idempotent_on_external_ref(api: Api) -> None:
    cid, first = await seed(api, participants=2)
    status, body = await api.post(f"/v1/competitions/{cid}/participants", {"participants": [
        {"external_ref": "p1", "display_name": "renamed"},
        {"external_ref": "new", "display_name": "Newcomer"}]})
    assert status == 201
    again, new = body["participants"]
    assert again["id"] == first[1] and again["display_name"] == "Player 1"
    assert new["id"] not in first


async def test_participants_for_unknown_competition_is_404(api: Api) -> None:
    status, _ = await api.post("/v1/competitions/42/participants",
                               {"participants": [{"external_ref": "a", "display_name": "A"}]})
    assert status == 404


async def test_leaderboard_stats_and_participant_reflect_commits(api: Api,
                                                                 service: Service) -> None:
    cid, (a, b, c) = await seed(api)
    await api.post("/v1/points", {"points": [
        {"competition_id": cid, "participant_id": a, "value": 5},
        {"competition_id": cid, "participant_id": b, "value": 9},
        {"competition_id": cid, "participant_id": c, "value": 5},
        {"competition_id": cid, "participant_id": a, "value": 1}]})
    await service.deps.workers.drain()
    status, board = await api.get(f"/v1/competitions/{cid}/leaderboard", token="read")
    assert status == 200 and board["competition_id"] == cid
    assert [(e["rank"], e["participant_id"], e["total"]) for e in board["entries"]] == [
        (1, b, 9.0), (2, a, 6.0), (3, c, 5.0)]
    status, page = await api.get(f"/v1/competitions/{cid}/leaderboard?limit=1&offset=1",
                                 token="read")
    assert [e["participant_id"] for e in page["entries"]] == [a]
    status, stats = await api.get(f"/v1/competitions/{cid}/stats", token="read")
    assert (stats["points"], stats["participants"], stats["total_value"]) == (4, 3, 20.0)
    assert stats["points_per_minute"] == 4
    status, person = await api.get(f"/v1/participants/{a}", token="read")
    assert (person["total"], person["points"]) == (6.0, 2)
