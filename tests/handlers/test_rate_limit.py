"""Rate limiting per token over HTTP: 429s past the burst, other tokens and public
routes untouched, one limit shared through Redis, still a limit while Redis is down."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
import redis
import tornado.httpclient
import tornado.ioloop
from prometheus_client import REGISTRY

from server.access.ratelimit import REDIS_RETRY_S
from server.config import Settings
from server.queue.keys import RATE_LIMIT_PREFIX
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores
from tests.support import TOKENS, Api, make_settings, served, until_sync

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


def _counted(name: str) -> float:
    """This process's value of a counter as /metrics shows it (in-process registry)."""
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_burst_past_the_limit_gets_429s_in_the_error_shape(
        api: Api, service: Service) -> None:
    refused_before = _counted("points_rate_limited_total")
    responses = await burst(api, BURST + 3)
    assert statuses(responses) == [200] * BURST + [429] * 3
    assert _counted("points_rate_limited_total") - refused_before == 3  # on /metrics
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


async def test_two_services_on_one_redis_share_one_limit(
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


def _serving_process(children: list[psutil.Process], port: int,
                     conn: http.client.HTTPConnection) -> int | None:
    """The pid of the child holding the server side of ``conn``'s socket."""
    client_port = conn.sock.getsockname()[1]
    for child in children:
        for c in child.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port == client_port:
                return child.pid
    return None


def _connection_to(pid: int, children: list[psutil.Process], port: int
                   ) -> http.client.HTTPConnection:
    """A new connection that process ``pid`` serves.  Which process accepts a
    connection is the kernel's choice, so open some until that one does."""

    def one_it_serves() -> http.client.HTTPConnection | None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")  # public: costs the token nothing
        conn.getresponse().read()
        if _serving_process(children, port, conn) == pid:
            return conn
        conn.close()
        return None

    return until_sync(one_it_serves, f"a connection that process {pid} accepts",
                      timeout_s=20, interval_s=0)


@pytest.mark.timeout(180)
def test_serve_with_two_processes_shares_one_limit_between_them(serve_dir: Path) -> None:
    """A real ``run.py serve --processes 2``: a token's burst is spent across both
    processes together, not once per process."""
    # A burst of 1 and then one request each 4 s: finding a connection to the
    # wanted process may take a moment, which must not earn the token a request.
    with served(serve_dir, "--processes", "2", "--workers", "1",
                env={"RATE_LIMIT_PER_TOKEN": "0.25"}) as server:
        # Each fork says ``listening on`` once it serves (the launcher read the first).
        until_sync(lambda: "".join(server.output).count("listening on") >= 2
                   or server.proc.poll() is not None, "both processes listening")
        children = server.forks()
        assert len(children) == 2, "".join(server.output)
        answers = []
        for i in range(6):  # alternate between the two processes
            # A new connection each time: the server closes one after an answer
            # given before the request's body was read (a 429 from a body
            # handler's prepare), even a GET's.
            conn = _connection_to(children[i % 2].pid, children, server.port)
            try:
                conn.request("GET", LIMITED,
                             headers={"Authorization": f"Bearer {server.admin_token}"})
                response = conn.getresponse()
                response.read()
            finally:
                conn.close()
            answers.append((response.status, response.getheader("RateLimit-Remaining")))
        # The second process refuses a token it has never served: the first spent
        # its burst.  One limit, not one per process (that would be 200, 200, 429…).
        assert answers == [(200, "0")] + [(429, "0")] * 5
        assert server.terminate(60) == 0, "".join(server.output)


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
    local_before = _counted("points_rate_limit_local_decisions_total")
    responses = await burst(api, BURST + 3, "admin")
    assert _counted("points_rate_limit_local_decisions_total") - local_before == BURST + 3
    assert statuses(responses) == [200] * BURST + [429] * 3  # no 500, no 503
    assert orjson.loads(responses[-1].body)["error"]["code"] == "rate_limited"
    assert responses[-1].headers["Retry-After"] == "1"
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["1", "0", "0", "0", "0"]
    limiter = service.deps.limiter
    assert limiter is not None and limiter.local_decisions == BURST + 3
    # Redis back: after REDIS_RETRY_S the limit lives in Redis again (shared).
    # The last failure came before the restart: once REDIS_RETRY_S has passed (on
    # purpose), the next request asks Redis, and is decided there.
    await asyncio.to_thread(own.redis.start)
    await asyncio.sleep(REDIS_RETRY_S)
    assert (await fetch(api, LIMITED, "admin")).code == 200
    assert limiter.local_decisions == BURST + 3
    client = redis.Redis.from_url(own.redis_url)
    try:
        assert client.keys(RATE_LIMIT_PREFIX + "*")
    finally:
        client.close()
