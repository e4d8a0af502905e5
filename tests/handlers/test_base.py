"""Request bodies cannot hold a process: what they hold at once is bounded (503
``overloaded`` beyond), and a body that stops arriving is cut (408 ``body_idle``)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from server.runtime.lifecycle import Service
from tests.support import TOKENS, Api, make_settings, seed, until

MIB = 1 << 20


@pytest.fixture
def settings(ingest_path: str):
    # JSON bodies of at most 1 MiB (POINTS_MAX_BATCH=100); 1.5 MiB held at once.
    return make_settings(ingest_path=ingest_path, points_max_batch=100,
                         http_bodies_max_bytes=MIB + MIB // 2, http_body_idle_s=0.5)


async def open_body(service: Service, path: str, length: int, first: bytes,
                    content_type: str = "application/json"
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw request announcing ``length`` bytes of body and sending only ``first``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['ingest']}"
                 f"\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
                 .encode() + first)
    await writer.drain()
    return reader, writer


def padded(point: dict, size: int) -> bytes:
    raw = orjson.dumps(point)
    return raw + b" " * (size - len(raw))


async def test_a_body_past_what_the_process_may_hold_is_503_overloaded_until_room_frees(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    point = {"competition_id": cid, "participant_id": parts[0], "value": 1}
    serving = service.deps.serving
    _, slow = await open_body(service, "/v1/points", MIB, b"{")  # holds 1 MiB from now
    await until(lambda: serving.body_bytes == MIB, "the slow body's bytes held")

    response = await api.response("POST", "/v1/points", body=padded(point, 600_000),
                                  content_type="application/json")
    body = orjson.loads(response.body)
    assert (response.code, body["error"]["code"]) == (503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    assert (await api.post("/v1/points", point))[0] == 202  # a small one still fits
    assert serving.body_bytes == MIB  # what the answered ones held is given back

    slow.close()  # the slow client gives up: its bytes are the process's again
    await until(lambda: serving.body_bytes == 0, "the slow body's bytes given back")
    response = await api.response("POST", "/v1/points", body=padded(point, 600_000),
                                  content_type="application/json")
    assert response.code == 202, response.body


@pytest.mark.parametrize(("path", "content_type", "first"), [
    ("/v1/points", "application/json", b'{"competition_id": '),
    ("/v1/points/bulk", "text/csv", b"competition_id,participant_id,value\n1,1,1\n"),
])
async def test_a_body_that_stops_arriving_is_cut_with_408(
        api: Api, service: Service, path: str, content_type: str, first: bytes) -> None:
    reader, writer = await open_body(service, path, 10_000, first, content_type)
    try:
        answer = await asyncio.wait_for(reader.read(), 10)  # to the close
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head, answer
    assert orjson.loads(body)["error"]["code"] == "body_idle"
    assert service.deps.serving.body_bytes == 0
    assert (await service.deps.queue.stats())["depth"] == 0


async def test_a_slow_body_that_keeps_arriving_is_not_cut(api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    raw = orjson.dumps({"competition_id": cid, "participant_id": parts[0], "value": 1})
    reader, writer = await open_body(service, "/v1/points", len(raw), b"")
    try:
        for byte in raw[:-1]:  # ~1.4 s in all, far past the idle limit, never idle that long
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.03)  # wall time on purpose: a slow client
        writer.write(raw[-1:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 202"), head


async def test_a_body_read_whole_by_the_server_is_cut_when_late(service: Service) -> None:
    """A route that streams no body (here: no route at all) gets its body from tornado,
    within HTTP_BODY_IDLE_S, or the connection is closed."""
    reader, writer = await open_body(service, "/no/such/route", 1000, b"x")
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
