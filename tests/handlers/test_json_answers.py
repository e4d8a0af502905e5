"""Every JSON answer ends with a newline (in a terminal, the prompt after ``curl`` starts
on a line of its own), counted in its Content-Length: answers built per request, bytes
served from the cache, error answers, the 404 of no route, the OpenAPI document.
``/metrics`` is Prometheus text, which ends with its own newline."""

from __future__ import annotations

import orjson

from tests.support import Api, seed


def _one_json_line(body: bytes) -> bool:
    """A JSON document, then exactly one newline."""
    if not body.endswith(b"\n") or body.endswith(b"\n\n"):
        return False
    orjson.loads(body)
    return True


async def test_every_json_answer_ends_with_one_newline_counted_in_its_length(
        api: Api) -> None:
    cid, parts = await seed(api)
    point = {"competition_id": cid, "participant_id": parts[0], "value": 1}
    answers = {
        "200": await api.response("GET", "/v1/competitions"),
        "202": await api.response("POST", "/v1/points", json=point, token="ingest"),
        "cached bytes": await api.response("GET", f"/v1/competitions/{cid}/stats"),
        "cached bytes again": await api.response("GET", f"/v1/competitions/{cid}/stats"),
        "400": await api.response("POST", "/v1/points", body=b"{", token="ingest",
                                  content_type="application/json"),
        "401": await api.response("GET", "/v1/competitions", token=None),
        "404 no route": await api.response("GET", "/no/such/route"),
        "405": await api.response("DELETE", "/v1/competitions"),
        "openapi": await api.response("GET", "/openapi.json", token=None),
    }
    for name, response in answers.items():
        assert response.headers["Content-Type"].startswith("application/json"), name
        assert _one_json_line(response.body), (name, response.body[-40:])
        assert int(response.headers["Content-Length"]) == len(response.body), name
    assert [answers[name].code for name in ("400", "401", "404 no route", "405")] == [
        400, 401, 404, 405]
    assert set(orjson.loads(answers["404 no route"].body)) == {"error"}

    metrics = await api.response("GET", "/metrics", token=None)
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert metrics.body.endswith(b"\n")  # Prometheus text, as it always was
