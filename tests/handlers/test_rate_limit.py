"""Rate limiting per token over HTTP: 429s past the burst, other tokens and public
routes untouched, one limit shared through Redis, still a limit while Redis is down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
import redis
import tornado.httpclient
import tornado.ioloop

from server.config import Settings
from server.lifecycle import Service, Stores, running_service
from server.queue.keys import RATE_LIMIT_PREFIX
from server.ratelimit import REDIS_RETRY_S
from tests.conftest import TOKENS, Api, make_settings

LIMIT = 1.0  # requests/s per token: a burst of 2 passes at once, then one a second
BURST = 2
LIMITED = "/v1/competitions"  # a GET that needs a token and touches no Redis
PUBLIC = ("/health", "/ready", "/metrics", "/openapi.json")
HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """Rate limiting on, over one ingest path: the limiter cannot depend on it."""
    return make_settings(**{"rate_limit_per_token": LIMIT, **getattr(request, "param", {})})


async def fetch(api: Api, path: str, token: str | None = "read"
                ) -> tornado.httpclient.HTTPResponse:
    headers = {"Authorization": f"Bearer {TOKENS.get(token, token)}"} if token else {}
    response = await api.http.fetch(api.base_url + path, headers=headers, raise_error=False,
                                    request_timeout=60)
    if response.code == 599:
        raise response.error  # type: ignore[misc]
    return response


async def burst(api: Api, n: int, token: str = "read") -> list[tornado.httpclient.HTTPResponse]:
    return [await fetch(api, LIMITED, token) for _ in range(n)]


def statuses(responses: list[tornado.httpclient.HTTPResponse]) -> list[int]:
    return [r.code for r in responses]


async def test_a_burst_past_the_limit_gets_429s_in_the_error_shape(
        api: Api, service: Service) -> None:
    responses = await burst(api, BURST + 3)
    assert statuses(responses) == [200] * BURST + [429] * 3
    # Allowed answers say how much of the burst is left and when it is whole again.
    assert [[r.headers[h] for h in HEADERS] for r in responses[:BURST]] == [
        ["2", "1", "1"], ["2", "0", "2"]]
    for refused in responses[BURST:]:
        body = orjson.loads(refused.body)
        assert body["error"]["code"] == "rate_limited"
        assert set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["details"] == [] and "rate limit" in body["error"]["message"]
        assert refused.headers["Retry-After"] == "1"  # the next request passes in < 1 s
        assert refused.headers["RateLimit-Limit"] == "2"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert 1 <= int(refused.headers["RateLimit-Reset"]) <= 2
    limiter = service.deps.limiter
    assert limiter is not None
    assert (limiter.refused, limiter.local_decisions) == (3, 0)  # decided in Redis


async def test_a_second_token_is_untouched_by_the_first_tokens_burst(api: Api) -> None:
    assert statuses(await burst(api, BURST + 2, "read")) == [200] * BURST + [429] * 2
    for other in ("ingest", "admin"):
        response = await fetch(api, LIMITED, other)
        assert response.code == 200
        assert response.headers["RateLimit-Remaining"] == str(BURST - 1)  # a full burst


async def test_a_limited_token_passes_again_after_retry_after_at_the_limits_pace(
        api: Api) -> None:
    refused = (await burst(api, BURST + 1))[-1]
    assert refused.code == 429
    await asyncio.sleep(int(refused.headers["Retry-After"]))
    assert (await fetch(api, LIMITED)).code == 200
    # One request's worth came back, not a fresh burst: refused requests never
    # count, and waiting one interval earns one request.
    assert (await fetch(api, LIMITED)).code == 429


async def test_public_routes_are_never_limited_even_with_a_token(api: Api) -> None:
    for path in PUBLIC:
        for _ in range(BURST + 2):
            response = await fetch(api, path, "read")
            assert response.code != 429, path
            assert "RateLimit-Limit" not in response.headers, path
    # …and they spent nothing of the token's burst.
    assert statuses(await burst(api, BURST + 1)) == [200] * BURST + [429]
    for path in PUBLIC:  # a spent token does not lock it out of the public routes
        assert (await fetch(api, path, "read")).code != 429, path


async def test_two_processes_on_one_redis_share_one_limit(
        api: Api, clean: Stores, settings: Settings) -> None:
    assert clean.redis_url is not None
    async with running_service(settings, clean.database_url, clean.redis_url) as other:
        other_api = Api(other.url)
        try:
            answers = []
            for i in range(2 * BURST + 2):  # alternate between the two servers
                answers.append((await fetch(api if i % 2 else other_api, LIMITED)).code)
            assert answers.count(200) == BURST  # one limit, not one per server
            assert answers.count(429) == BURST + 2
            assert other.deps.limiter is not None and other.deps.limiter.refused > 0
        finally:
            other_api.http.close()


@pytest.mark.parametrize("settings", [{"rate_limit_per_token": 0.0}], indirect=True)
async def test_rate_limit_0_limits_nothing_and_has_no_limiter(
        api: Api, service: Service) -> None:
    assert service.deps.limiter is None
    responses = await burst(api, 10)
    assert statuses(responses) == [200] * 10
    assert not any("RateLimit-Limit" in r.headers for r in responses)


# --- Redis down: the in-process fallback ------------------------------------------


@pytest.fixture
def redis_less(own: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[tuple[Service, Api]]:
    """A rate-limited service on this test's own stores (whose Redis the test kills)."""
    assert own.redis_url is not None
    context = running_service(make_settings(rate_limit_per_token=LIMIT), own.database_url,
                              own.redis_url)
    service = io_loop.run_sync(context.__aenter__)
    api = Api(service.url)
    yield service, api
    api.http.close()
    io_loop.run_sync(lambda: context.__aexit__(None, None, None))


async def test_with_redis_down_each_process_still_limits_and_nothing_fails(
        redis_less: tuple[Service, Api], own: Stores) -> None:
    service, api = redis_less
    own.redis.kill()  # this test's own Redis, by its pid
    responses = await burst(api, BURST + 3, "admin")
    assert statuses(responses) == [200] * BURST + [429] * 3  # no 500, no 503
    assert orjson.loads(responses[-1].body)["error"]["code"] == "rate_limited"
    assert responses[-1].headers["Retry-After"] == "1"
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["1", "0", "0", "0", "0"]
    limiter = service.deps.limiter
    assert limiter is not None and limiter.local_decisions == BURST + 3
    # Redis back: after REDIS_RETRY_S the limit lives in Redis again (shared).
    await asyncio.to_thread(own.redis.start)
    await asyncio.sleep(REDIS_RETRY_S + 1)  # the first request after the bound asks Redis
    assert (await fetch(api, LIMITED, "admin")).code == 200
    assert limiter.local_decisions == BURST + 3
    client = redis.Redis.from_url(own.redis_url)
    try:
        assert client.keys(RATE_LIMIT_PREFIX + "*")
    finally:
        client.close()
