"""/openapi.json: a valid OpenAPI 3.1 document of every route, from the validators' own
limits; the answers schemathesis cannot provoke (429, 503) checked against it here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import jsonschema_rs
import orjson
import pytest
import requests
import schemathesis
import tornado.ioloop
import tornado.web

from server import schemas
from server.config import Settings
from server.handlers import catalogue, openapi
from server.handlers.base import BodyHandler
from server.handlers.errors import ERROR_CODES
from server.points import now_us, parse_rfc3339, validate_point
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores
from tests.support import TOKENS, Api, conformance_checks, make_settings

METHODS = ("get", "post", "put", "patch", "delete")



def _implemented(handler: type) -> set[str]:
    """The HTTP methods a handler class answers (a body handler's through ``*_body``)."""
    methods = set()
    for method in METHODS:
        if issubclass(handler, BodyHandler) and method in ("post", "delete"):
            own = getattr(handler, f"{method}_body") is not getattr(BodyHandler,
                                                                  f"{method}_body")
        else:
            own = getattr(handler, method) is not getattr(tornado.web.RequestHandler, method)
        if own:
            methods.add(method)
    return methods


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(doc: dict[str, Any], pointer: str) -> Any:
    node: Any = doc
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part]
    return node


async def test_openapi_json_is_a_valid_openapi_3_1_document_without_a_token(api: Api
                                                                            ) -> None:
    response = await api.http.fetch(api.base_url + "/openapi.json")
    assert response.headers["Content-Type"].startswith("application/json")
    doc = orjson.loads(response.body)
    assert doc["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.1 meta-schema
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name  # JSON Schema 2020-12
    for pointer in set(_refs(doc)):
        assert _resolve(doc, pointer) is not None, pointer
    again = await api.http.fetch(api.base_url + "/openapi.json")
    assert again.body == response.body


def test_every_route_and_method_of_the_application_is_documented(service: Service) -> None:
    routes = openapi.routes_of(service.http.request_callback)
    doc = openapi.build(service.deps.settings, routes)
    for pattern, handler in routes:
        template = catalogue.PATHS[pattern].template
        assert set(doc["paths"][template]) == _implemented(handler), pattern
        example = re.sub(r"{\w+}", "7", template)  # the template is the route's path
        assert re.fullmatch(pattern, example), (pattern, template)
    assert len(doc["paths"]) == len(routes)


def test_each_status_publishes_exactly_the_codes_of_the_handlers_error_table() -> None:
    doc = openapi.build(Settings(), [(pattern, None) for pattern in catalogue.PATHS])
    published: dict[int, set[str]] = {}
    for name, response in doc["components"]["responses"].items():
        status = int(name[-3:])
        codes = response["x-error-codes"]
        assert codes == list(ERROR_CODES[status]), name
        published.setdefault(status, set()).update(codes)
        for code in codes:  # each with its words
            assert f"`{code}`: {catalogue.ERROR_CODE_TEXT[code]}." in response["description"]
    # Every status the table maps to is published, but 405 (tornado's own answer to a
    # method no route has, which no operation documents).
    assert set(published) == set(ERROR_CODES) - {405}


def test_every_request_body_can_be_sent_by_a_client_that_knows_only_json_and_bytes(
        ) -> None:
    """Generators that cannot send text/csv (openapi-python-client among them) left
    the bulk upload out of the clients they made."""
    doc = openapi.build(Settings(), [(pattern, None) for pattern in catalogue.PATHS])
    for name, body in doc["components"]["requestBodies"].items():
        content = body["content"]
        assert "application/json" in content or content.get(
            "application/octet-stream", {}).get("schema") == {
                "type": "string", "format": "binary"}, name


def test_an_error_code_without_words_fails_the_build() -> None:
    table = {**ERROR_CODES, 409: (*ERROR_CODES[409], "brand_new")}
    with pytest.raises(openapi.UndocumentedErrorCode, match="brand_new"):
        openapi.build(Settings(), [(r"/v1/competitions", None)], table)


def test_every_error_answer_of_every_operation_is_the_one_error_schema() -> None:
    """So that a client generated from the document has one error type (it had one
    per operation and status: 288 models in openapi-python-client's output)."""
    doc = openapi.build(Settings(), [(pattern, None) for pattern in catalogue.PATHS])
    bodies: dict[str, set[str]] = {"error": set(), "other": set()}
    for template, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                kind = "other"
                if "$ref" in response:  # a shared error response
                    kind, response = "error", _resolve(doc, response["$ref"])
                else:  # 4xx are all errors; the probes' 503 is their status body
                    assert int(status) < 400 or (status == "503" and template in (
                        "/health", "/ready")), (template, method, status)
                for media in response["content"].values():
                    bodies[kind].add(orjson.dumps(media["schema"]).decode())
    assert bodies["error"] == {'{"$ref":"#/components/schemas/Error"}'}
    assert not bodies["error"] & bodies["other"]
    # Nothing else in the document has the error body's shape.
    shaped = [name for name, schema in doc["components"]["schemas"].items()
              if "error" in schema.get("properties", {})]
    assert shaped == ["Error"]


def test_a_route_without_a_document_entry_fails_the_build() -> None:
    with pytest.raises(openapi.UndocumentedRoute, match="/v1/new"):
        openapi.build(Settings(), [(r"/health", None), (r"/v1/new", BodyHandler)])


def test_settings_dependent_limits_are_read_from_the_settings() -> None:
    settings = Settings(points_max_batch=7, bulk_max_bytes=12345)
    doc = openapi.build(settings, [(r"/v1/points", None), (r"/v1/points/bulk", None)])
    assert doc["components"]["schemas"]["PointBatch"]["properties"]["points"]["maxItems"] == 7
    bodies = doc["components"]["requestBodies"]
    assert f"At most {settings.json_body_max_bytes} bytes" in bodies["points"]["description"]
    assert "12345 bytes" in bodies["bulk"]["description"]


def test_point_validation_refuses_exactly_what_the_point_schema_refuses() -> None:
    point = openapi.build(Settings(), [])["components"]["schemas"]["Point"]
    props = point["properties"]
    base = {key: value for key, value in point["examples"][0].items()
            if key in point["required"]}
    validator = jsonschema_rs.validator_for(point)
    cases = [
        {**base, "id": "x" * props["id"]["maxLength"]},
        {**base, "id": "x" * (props["id"]["maxLength"] + 1)},
        {**base, "id": "tab\there"},
        {**base, "competition_id": props["competition_id"]["maximum"]},
        {**base, "competition_id": props["competition_id"]["maximum"] + 1},
        {**base, "participant_id": props["participant_id"]["minimum"] - 1},
        # JSON Schema's integer takes 7.0 as 7; a float names one exactly up to 2^53.
        {**base, "competition_id": 7.0},
        {**base, "participant_id": float(schemas.WHOLE_FLOAT_MAX)},
        {**base, "participant_id": 7.5},
        {**base, "participant_id": 0.0},
        {**base, "value": props["value"]["maximum"]},
        {**base, "value": props["value"]["maximum"] * 1.5},
        {**base, "value": props["value"]["minimum"] * 1.5},
        {**base, "recorded_at": "2026-01-31T12:00:00+01:00"},
        {**base, "recorded_at": "2026-01-31"},
        # (the last year allowed is in the future, which only the validator checks)
        *({**base, "recorded_at": f"{year}-01-01T00:00:00Z"} for year in (
            schemas.TIMESTAMP_YEARS[0] - 1, schemas.TIMESTAMP_YEARS[0],
            schemas.TIMESTAMP_YEARS[1])),
        {**base, "recorded_at": "2026-13-01T00:00:00Z"},
        {**base, "recorded_at": "2026-01-31T24:00:00Z"},
        {**base, "recorded_at": "2026-01-31T12:00:00+24:00"},
        {**base, "recorded_at": "2024-02-29T12:00:00Z"},
        {**base, "recorded_at": "2025-02-29T12:00:00Z"},
        {**base, "surprise": 1},
        *({k: v for k, v in base.items() if k != key} for key in point["required"]),
    ]
    for case in cases:
        errors: list[dict[str, Any]] = []
        validate_point(case, ("index", 0), now_us(), errors)
        assert (not errors) == validator.is_valid(case), (case, errors)
    # The one exception, in the field's description: past 2^53 a float names no one
    # integer (the digits sent are lost in parsing), so it is refused.
    errors = []
    inexact = {**base, "participant_id": float(schemas.WHOLE_FLOAT_MAX + 2)}
    assert validator.is_valid(inexact)
    validate_point(inexact, ("index", 0), now_us(), errors)
    assert [e["field"] for e in errors] == ["participant_id"]
    assert "2^53" in props["participant_id"]["description"]


def test_timestamps_are_parsed_exactly_when_the_timestamp_schema_accepts_them() -> None:
    validator = jsonschema_rs.validator_for(schemas.TIMESTAMP_IN)
    low, high = schemas.TIMESTAMP_YEARS
    cases = [f"{low - 1}-12-31T23:59:59Z", f"{low}-01-01T00:00:00Z",
             f"{high - 1}-12-31T23:59:59.999999999Z", f"{high}-01-01T00:00:00Z",
             "2026-01-31t12:00:00z", "2026-01-31 12:00:00+23:59", "2026-01-31T12:00:00-00:00",
             "2026-00-10T00:00:00Z", "2026-01-32T00:00:00Z", "2026-01-31T24:00:00Z",
             "2026-01-31T12:60:00Z", "2026-01-31T12:00:60Z", "2026-01-31T12:00:00+24:00",
             "2026-01-31T12:00:00", "2026-01-31T12:00Z", "2026-1-31T12:00:00Z",
             # A real day of the calendar: 29 February of leap years only.
             "2026-04-30T00:00:00Z", "2026-04-31T00:00:00Z", "2026-02-28T00:00:00Z",
             "2026-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
             "1900-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2196-02-29T00:00:00Z",
             # The years bound what is written: an offset may cross them.
             f"{low}-01-01T00:00:00+01:00", f"{high - 1}-12-31T23:30:00-23:59"]
    for case in cases:
        assert (parse_rfc3339(case) is not None) == validator.is_valid(case), case
    day = datetime(low, 1, 1)
    while day.year < high:  # every day of every year the pattern allows
        case = f"{day:%Y-%m-%d}T00:00:00Z"
        assert parse_rfc3339(case) is not None and validator.is_valid(case), case
        day += timedelta(days=1)


def test_a_name_is_blank_by_one_definition_in_python_and_in_the_document() -> None:
    """The not-blank, no-NUL pattern of names and references reads alike in Python's
    ``re`` (the validators) and in JSON Schema (the document), whitespace being
    what ``str.isspace`` says, character by character."""
    text = re.compile(schemas.TEXT_PATTERN)
    validator = jsonschema_rs.validator_for({"type": "string",
                                             "pattern": f"^{schemas.TEXT_PATTERN}$"})
    for point in [*range(0x10000), 0x1F600, 0x10FFFF]:  # no whitespace past the BMP
        if 0xD800 <= point <= 0xDFFF:
            continue  # no UTF-8 text holds a surrogate
        char = chr(point)
        expected = not char.isspace() and char != "\x00"
        assert bool(text.fullmatch(char)) == validator.is_valid(char) == expected, hex(point)
        assert bool(text.fullmatch(f" {char}\t")) == expected, hex(point)


async def test_competitions_and_participants_are_refused_exactly_when_their_schemas_refuse(
        api: Api) -> None:
    """The handlers' checks of names, slugs and times are the document's schemas
    (schemathesis found blank names and 30 February allowed by the document and
    refused by the server)."""
    components = openapi.build(Settings(), [])["components"]["schemas"]

    def valid(name: str, instance: Any) -> bool:
        return jsonschema_rs.validator_for(_inlined(components[name], components)
                                           ).is_valid(instance)

    texts = ["x", " x ", " ", "\t\n", "\u3000", "\x1c", "\ufeff", "a\x00b", "",
             "x" * schemas.NAME_MAX_CHARS, "x" * (schemas.NAME_MAX_CHARS + 1), 7]
    competitions: list[dict[str, Any]] = [
        *({"name": text} for text in texts),
        *({"name": "n", "slug": slug} for slug in (
            "cup-1_a", "Cup", "-cup", "c" * schemas.SLUG_MAX_CHARS,
            "c" * (schemas.SLUG_MAX_CHARS + 1), "cup cup")),
        {"name": "n", "starts_at": "2024-02-29T09:00:00Z", "ends_at": None},
        {"name": "n", "starts_at": "2026-02-29T09:00:00Z"},
        {"name": "n", "ends_at": "2026-04-31T09:00:00+23:59"},
        {"name": "n", "starts_at": "1900-01-01T00:00:00+01:00",
         "ends_at": "2199-12-31T23:00:00-23:00"},
        {"name": "n", "surprise": 1}, {"slug": "no-name"}, [], "cup",
    ]
    for number, case in enumerate(competitions):
        if type(case) is dict and "slug" not in case and "name" in case:
            case = {"slug": f"case-{number}", **case}  # a slug of its own: no 409
        status, body = await api.post("/v1/competitions", case)
        assert status in (201, 422) and (status == 201) == valid("CompetitionCreate", case), (
            case, body)
    status, body = await api.post("/v1/competitions", {"slug": "p", "name": "P"})
    path = f"/v1/competitions/{body['id']}/participants"
    participants: list[Any] = [
        *({"participants": [{"external_ref": f"r{number}", "display_name": text}]}
          for number, text in enumerate(texts)),
        *({"participants": [{"external_ref": text, "display_name": "d"}]} for text in texts),
        {"participants": []}, {"participants": [{"external_ref": "r"}]},
        {"participants": [{"external_ref": "r", "display_name": "d", "x": 1}]},
        {"participants": {}}, {"participants": [], "x": 1}, {},
    ]
    for case in participants:
        status, body = await api.post(path, case)
        assert status in (201, 422) and (status == 201) == valid("ParticipantsCreate", case), (
            case, body)


def _inlined(schema: Any, components: dict[str, Any]) -> Any:
    """``schema`` with every ``#/components/schemas/...`` reference replaced by its
    schema (the components here hold no cycle)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(components[schema["$ref"].rsplit("/", 1)[1]], components)
        return {key: _inlined(value, components) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inlined(value, components) for value in schema]
    return schema


async def test_a_competition_takes_every_offset_the_document_allows(api: Api) -> None:
    """RFC 3339 offsets reach ±23:59, PostgreSQL's only ±15:59 (found by schemathesis:
    it was a 422 ``data_rejected``)."""
    status, body = await api.post("/v1/competitions", {
        "slug": "far-east", "name": "Far East", "starts_at": "2026-01-31T09:00:00+23:59",
        "ends_at": "2026-01-31T09:00:00-23:59"})
    assert status == 201, body
    assert (body["starts_at"], body["ends_at"]) == ("2026-01-30T09:01:00+00:00",
                                                    "2026-02-01T08:59:00+00:00")


async def test_integer_query_parameters_are_refused_just_past_their_documented_bounds(
        api: Api) -> None:
    status, doc = await api.get("/openapi.json", token=None)
    for template, item in doc["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "query" or parameter["schema"].get("type") != "integer":
                    continue
                path = re.sub(r"{\w+}", "1", template)
                low, high = parameter["schema"]["minimum"], parameter["schema"]["maximum"]
                for value, refused in ((low, False), (high, False), (high + 1, True)) + (
                        ((low - 1, True),) if low > 0 else ()):
                    status, body = await api.request(
                        method.upper(), f"{path}?{parameter['name']}={value}")
                    assert (status == 422) == refused, (template, parameter["name"], value,
                                                        body)


async def _conforms(api_url: str, doc: dict[str, Any], method: str, template: str,
                    path_parameters: dict[str, Any] | None = None, **kwargs: Any
                    ) -> requests.Response:
    """Send one request (off the event loop) and check its answer against ``doc``
    (a documented 503 conforms: these are the answers of an outage)."""
    path_parameters = path_parameters or {}
    response = await asyncio.to_thread(requests.request, method,
                                       api_url + template.format(**path_parameters),
                                       timeout=30, **kwargs)
    operation = schemathesis.openapi.from_dict(doc)[template][method]
    case = operation.Case(path_parameters=path_parameters)
    case.validate_response(response, checks=conformance_checks())
    return response


@pytest.mark.parametrize("settings", [{"rate_limit_per_token": 1}], indirect=True)
async def test_a_rate_limited_answer_conforms_to_the_document(api: Api) -> None:
    _, doc = await api.get("/openapi.json", token=None)
    auth = {"Authorization": f"Bearer {TOKENS['read']}"}
    statuses = []
    for _ in range(3):  # the burst is 2 × 1/s
        response = await _conforms(api.base_url, doc, "GET", "/v1/competitions",
                                   headers=auth)
        statuses.append(response.status_code)
    assert statuses[-1] == 429, statuses
    assert response.json()["error"]["code"] == "rate_limited"


@pytest.fixture
def outage(own: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[tuple[Service, Stores]]:
    context = running_service(make_settings(), own.database_url, own.redis_url)
    service = io_loop.run_sync(context.__aenter__)
    yield service, own
    io_loop.run_sync(lambda: context.__aexit__(None, None, None))


async def test_answers_while_both_stores_are_down_conform_to_the_document(
        outage: tuple[Service, Stores]) -> None:
    service, own = outage
    api = Api(service.url)
    try:
        _, doc = await api.get("/openapi.json", token=None)
        admin = {"Authorization": f"Bearer {TOKENS['admin']}"}
        point = schemas.POINT["examples"][0]
        await _conforms(api.base_url, doc, "POST", "/v1/points", json=point,
                        headers=admin)  # verifies (and caches) the token
        await asyncio.to_thread(own.redis.stop, even_if_reused=True)
        await asyncio.to_thread(own.postgres.stop, even_if_reused=True)
        answers = [
            await _conforms(api.base_url, doc, "POST", "/v1/points",
                            json={**point, "id": "during-outage"}, headers=admin),
            await _conforms(api.base_url, doc, "GET", "/v1/competitions/{competition_id}",
                            {"competition_id": 1}, headers=admin),
            await _conforms(api.base_url, doc, "GET", "/ready"),
        ]
        assert [r.status_code for r in answers] == [503, 503, 503]
        assert int(answers[0].headers["Retry-After"]) >= 1
    finally:
        api.http.close()
