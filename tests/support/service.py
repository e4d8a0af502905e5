"""The service in this process: settings, a JSON client, seeding, waiting for a drain."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import tornado.httpclient

from server.access.auth import hash_token
from server.config import INGEST_PATHS, Settings
from server.ingest.idempotency import IdempotencyKeys
from server.queue import keys
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores
from tests.support.stores import sql
from tests.support.waits import until

# Shaped as issued tokens are (``pts_`` and 43 URL-safe characters): auth refuses
# any other shape before a lookup.
TOKENS = {role: f"pts_test_{role}_token".ljust(47, "x")
          for role in ("read", "ingest", "admin", "revoked")}
# The tests whose behaviour depends on the ingest path run on both (the default
# ``ingest_path`` fixture is pipelined): ``@BOTH_PATHS`` on a test, or
# ``pytestmark = BOTH_PATHS`` on a module.
BOTH_PATHS = pytest.mark.parametrize("ingest_path", INGEST_PATHS)



def make_settings(**overrides: Any) -> Settings:
    base = {"port": 0, "queue_workers": 0, "pg_pool_min": 1, "pg_pool_max": 5,
            "queue_lease_s": 30.0, "shutdown_timeout_s": 5.0, "ack_timeout_s": 2.0}
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


class Api:
    """A small JSON client for the service under test."""

    def __init__(self, base_url: str, max_clients: int = 10) -> None:
        self.base_url = base_url
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True,
                                                       max_clients=max_clients)

    async def response(self, method: str, path: str, *, token: str | None = "admin",
                       json: Any = None, body: bytes | None = None,
                       content_type: str | None = None,
                       headers: dict[str, str] | None = None,
                       **kwargs: Any) -> tornado.httpclient.HTTPResponse:
        """The whole answer, headers included (a 599 raises its error)."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {TOKENS.get(token, token)}"
        if json is not None:
            body = orjson.dumps(json)
            content_type = content_type or "application/json"
        if content_type:
            all_headers["Content-Type"] = content_type
        if body is None and method in ("POST", "PUT", "PATCH") and "body_producer" not in kwargs:
            body = b""
        response = await self.http.fetch(
            self.base_url + path, method=method, body=body, headers=all_headers,
            raise_error=False, request_timeout=120,
            allow_nonstandard_methods=method == "DELETE", **kwargs)
        if response.code == 599:
            assert response.error is not None
            raise response.error
        return response

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """Status and decoded JSON body."""
        response = await self.response(method, path, **kwargs)
        data = orjson.loads(response.body) if response.body else None
        return response.code, data

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=json, **kwargs)

    def close(self) -> None:
        self.http.close()


@contextlib.asynccontextmanager
async def serving(settings: Settings, database_url: str, redis_url: str | None
                  ) -> AsyncIterator[tuple[Service, Api]]:
    """The whole service on stores a test owns (and may stop), with a client; for
    tests whose settings or stores the ``service`` fixture does not give."""
    assert redis_url is not None
    async with running_service(settings, database_url, redis_url) as service:
        api = Api(service.url)
        try:
            yield service, api
        finally:
            api.close()


async def seed(api: Api, participants: int = 3, slug: str = "cup"
               ) -> tuple[int, list[int]]:
    """One competition with ``participants`` participants; returns their ids."""
    status, comp = await api.post("/v1/competitions", {"slug": slug, "name": "The Cup"})
    assert status == 201, comp
    status, body = await api.post(
        f"/v1/competitions/{comp['id']}/participants",
        {"participants": [{"external_ref": f"p{i}", "display_name": f"Player {i}"}
                          for i in range(participants)]})
    assert status == 201, body
    return comp["id"], [p["id"] for p in body["participants"]]


async def seed_every_shard(api: Api, shards: int) -> dict[int, tuple[int, list[int]]]:
    """shard -> a competition routed to it and its participants (``seed``), for each of
    ``shards`` queue shards: competitions are made until every shard has one."""
    seeded: dict[int, tuple[int, list[int]]] = {}
    made = 0
    while len(seeded) < shards:
        made += 1
        cid, parts = await seed(api, 1, slug=f"shard-{made}")
        seeded.setdefault(keys.shard_of(cid, shards), (cid, parts))
    return seeded


def batch(cid: int, parts: list[int], tag: str, n: int = 100) -> dict:
    return {"points": [{"id": f"{tag}-{i}", "competition_id": cid,
                        "participant_id": parts[i % len(parts)], "value": 1}
                       for i in range(n)]}


async def assert_settled_cleanly(service: Service) -> None:
    """Nothing was retried, waits to be, or went to the dead letters: a resent copy of a
    committed point must settle like any other (its insert takes nothing)."""
    stats = await service.deps.queue.stats()
    assert (stats["retry_scheduled"], stats["dead"], stats["totals"]["retried"],
            stats["totals"]["dead_lettered"]) == (0, 0, 0, 0), stats


async def drained(service: Service, expected: int, stores: Stores, timeout_s: float = 60
                  ) -> None:
    """Wait (bounded) until the queue is empty, ``expected`` points are committed and
    every standings delta is folded."""

    async def state() -> tuple[int, int, int, int] | None:
        try:
            stats = await service.deps.queue.stats()
            count = sql(stores, "SELECT count(*) FROM points")[0][0]
            unfolded = sql(stores, "SELECT count(*) FROM standing_deltas")[0][0]
        except Exception:  # a store may still be coming back
            return None
        return count, stats["depth"], stats["inflight"], unfolded

    async def done() -> bool:
        return await state() == (expected, 0, 0, 0)

    try:
        await until(done, f"{expected} points committed and the queue empty", timeout_s,
                    interval_s=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (committed, depth, inflight, unfolded) = "
                             f"{await state()}") from None


async def plant_chunk(service: Service, payload: bytes,
                      chunk_id: str = "00000000000000000000000000000000-1") -> None:
    """Put a chunk in the queue as a buggy (or older) producer might have."""
    redis = service.deps.redis
    await redis.hset(keys.ITEMS, chunk_id, payload)
    await redis.rpush(keys.READY, chunk_id)
    await redis.hincrby(keys.STATS, "ready", 1)



async def key_state(service: Service, key: str, token: str = "ingest") -> str | None:
    """The state of an Idempotency-Key's record (``in_flight``, ``open``, ``done``), or
    None when the key has none."""
    record = IdempotencyKeys.record_key(hash_token(TOKENS[token]), key)
    state = await service.deps.redis.hget(record, "state")
    return None if state is None else state.decode()


def conformance_checks() -> list[Any]:
    """schemathesis's checks that an answer is the one the document describes: status,
    content type, body, headers (imported here, on use: schemathesis is slow to import)."""
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [status_code_conformance, content_type_conformance, response_schema_conformance,
            response_headers_conformance]
