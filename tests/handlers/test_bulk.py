"""POST /v1/points/bulk: streamed CSV and NDJSON, per-line errors, bounded memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import psutil
import pytest

from server.access.auth import hash_token
from server.points import KeyedIds
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from tests.support import (
    BOTH_PATHS,
    TOKENS,
    Api,
    assert_exact,
    assert_settled_cleanly,
    key_state,
    seed,
    sql,
    until,
)


async def test_csv_upload_accepts_valid_lines_and_reports_bad_ones(
        api: Api, service: Service, clean: Stores) -> None:
    cid, (a, b, _) = await seed(api)
    body = (f"id,competition_id,participant_id,value,recorded_at\n"
            f"r1,{cid},{a},1.5,2026-01-01T00:00:00Z\n"
            f",{cid},{b},2,\n"
            f"r3,{cid},{a},NaN,\n"
            f"r4,{cid},{a}\n"
            f"\n"
            f'"r5",{cid},{b},3,\r\n').encode()
    status, answer = await api.post("/v1/points/bulk", body=body, content_type="text/csv")
    assert status == 202
    assert (answer["accepted"], answer["rejected"]) == (3, 2)
    assert [e["line"] for e in answer["errors"]] == [4, 5]
    await service.deps.workers.drain()
    assert sql(clean, "SELECT count(*), sum(value) FROM points") == [(3, 6.5)]


async def test_ndjson_upload_reports_lines_by_number(api: Api, service: Service) -> None:
    cid, (a, *_) = await seed(api)
    lines = [f'{{"competition_id": {cid}, "participant_id": {a}, "value": 1}}',
             "{broken", f'{{"competition_id": {cid}, "participant_id": {a}, "value": true}}',
             b"\xff\xfe".decode("latin-1"), "",
             f'{{"competition_id": {cid}, "participant_id": {a}, "value": 2, "x": 1}}']
    status, answer = await api.post("/v1/points/bulk", body="\n".join(lines).encode("latin-1"),
                                    content_type="application/x-ndjson")
    assert status == 202
    assert answer["accepted"] == 1 and answer["rejected"] == 4
    assert [e["line"] for e in answer["errors"]] == [2, 3, 4, 6]
    assert "value" in answer["errors"][1]["message"]
    assert "x: unknown field" in answer["errors"][3]["message"]
    assert await service.deps.workers.drain() == 1


async def test_an_upload_sent_as_bytes_is_read_as_ndjson_or_csv_by_its_first_line(
        api: Api, service: Service, clean: Stores) -> None:
    """For generated clients that send no text bodies (``application/octet-stream``)."""
    cid, (a, b, _) = await seed(api)
    ndjson = (f'\xef\xbb\xbf{{"id": "n1", "competition_id": {cid}, "participant_id": {a}, '
              f'"value": 1}}\nnot json\n').encode("latin-1")
    csv = f"id,participant_id,value,competition_id\nc1,{b},2,{cid}\nc2,{b},x,{cid}\n".encode()
    answers = [await api.post("/v1/points/bulk", body=body,
                              content_type="application/octet-stream")
               for body in (ndjson, csv)]
    assert [(status, answer["accepted"], answer["rejected"],
             [e["line"] for e in answer["errors"]])
            for status, answer in answers] == [(202, 1, 1, [2]), (202, 1, 1, [3])]
    await service.deps.workers.drain()
    assert sql(clean, "SELECT id, participant_id, value FROM points ORDER BY id") == [
        ("c1", b, 2.0), ("n1", a, 1.0)]
    # No first line at all: an empty CSV upload, as with text/csv.
    status, body = await api.post("/v1/points/bulk", body=b"",
                                  content_type="application/octet-stream")
    assert (status, body["error"]["code"]) == (400, "malformed_csv")


async def test_csv_with_a_bad_header_is_400_and_enqueues_nothing(
        api: Api, service: Service) -> None:
    status, body = await api.post("/v1/points/bulk", body=b"competition,participant\n1,2\n",
                                  content_type="text/csv")
    assert status == 400 and body["error"]["code"] == "malformed_csv"
    assert (await service.deps.queue.stats())["totals"]["enqueued"] == 0
    status, body = await api.post("/v1/points/bulk", body=b"", content_type="text/csv")
    assert status == 400


async def test_bulk_refuses_other_content_types(api: Api) -> None:
    status, body = await api.post("/v1/points/bulk", body=b"{}",
                                  content_type="application/json")
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"


async def test_bulk_over_the_byte_limit_is_413_before_the_body_is_read(
        service: Service) -> None:
    # A raw request: announce one byte over the limit, send almost nothing.
    limit = service.deps.settings.bulk_max_bytes
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"POST /v1/points/bulk HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + TOKENS["ingest"].encode() + b"\r\n"
                 b"Content-Type: text/csv\r\nContent-Length: " + str(limit + 1).encode()
                 + b"\r\n\r\ncompetition_id")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413")


def _csv_producer(cid: int, parts: list[int], lines: int) -> Callable:
    """Streams a CSV body in 64 KiB pieces, never building it whole."""

    async def produce(write: Callable) -> None:
        await write(b"competition_id,participant_id,value\n")
        block = []
        for i in range(lines):
            block.append(f"{cid},{parts[i % len(parts)]},{i % 7}\n")
            if len(block) == 2000:
                await write("".join(block).encode())
                block.clear()
        if block:
            await write("".join(block).encode())

    return produce


# The bound is about streaming, which both paths share; the naive path would make
# 200,000 fsynced Redis calls (one per point) and only measure the disk.
@pytest.mark.parametrize("ingest_path", ["pipelined"])
async def test_200k_line_upload_keeps_server_memory_bounded(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api, participants=10)
    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    lines = 200_000
    status, answer = await api.request(
        "POST", "/v1/points/bulk", content_type="text/csv",
        body_producer=_csv_producer(cid, parts, lines),
        headers={"Transfer-Encoding": "chunked"})
    done.set()
    await sampler
    assert status == 202, answer
    assert answer == {"accepted": lines, "rejected": 0, "errors": []}
    # The whole upload as Python objects would cost well over 100 MB; streamed in
    # 5,000-point chunks the process (server and client together) grows far less.
    assert peak - baseline < 60 * 1024 * 1024, (peak - baseline) / 1e6
    assert (await service.deps.queue.stats())["depth"] == lines


async def test_unicode_digits_and_broken_headers_never_drop_the_connection(
        api: Api, service: Service) -> None:
    cid, (a, *_) = await seed(api)
    status, answer = await api.post(
        "/v1/points/bulk", content_type="text/csv",
        body=f"competition_id,participant_id,value\n\u00b2,{a},1\n{cid},{a},1\n".encode())
    assert status == 202 and (answer["accepted"], answer["rejected"]) == (1, 1)
    status, body = await api.post("/v1/points/bulk", content_type="text/csv",
                                  body=b'competition_id,participant_id,"value\n1,1,1\n')
    assert status in (400, 202)
    status, body = await api.post("/v1/points/bulk", content_type="text/csv",
                                  body=b"competition_id,participant_id\rvalue\n1,1,1\n")
    assert status == 400 and body["error"]["code"] == "malformed_csv"


def _csv(cid: int, parts: list[int], lines: range) -> bytes:
    """Data lines (no header) whose values differ, so a doubled line changes a total."""
    return "".join(f"{cid},{parts[i % len(parts)]},{i}\n" for i in lines).encode()


HEADER = b"competition_id,participant_id,value\n"


def _expected_totals(cid: int, parts: list[int], count: int) -> list[tuple]:
    totals: dict[int, list[int]] = {}
    for i in range(count):
        totals.setdefault(parts[i % len(parts)], []).append(i)
    return sorted((cid, pid, float(sum(v)), len(v)) for pid, v in totals.items())


# Small chunks and bounds keep the naive path (one fsynced Redis call per point) quick.
CHUNK = 10
SMALL = pytest.mark.parametrize("settings", [{"bulk_chunk_points": CHUNK}], indirect=True)


# Where an upload stops depends on how the path groups enqueue calls.
@BOTH_PATHS
@SMALL
async def test_a_refused_upload_says_where_to_resume_and_resuming_there_doubles_nothing(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    lines = 2 * CHUNK + CHUNK // 2
    service.deps.queue.max_points = CHUNK + CHUNK // 2  # the second chunk cannot fit whole
    bad = b"%d,%d,not-a-number\n" % (cid, parts[0])  # line 2: rejected, and reported
    status, body = await api.post("/v1/points/bulk", content_type="text/csv",
                                  body=HEADER + bad + _csv(cid, parts, range(lines)))
    assert status == 503 and body["error"]["code"] == "queue_full", body
    error = body["error"]
    assert (error["rejected"], [e["line"] for e in error["errors"]]) == (1, [2])
    resume = error["accepted_through_line"] - 1  # lines 1 and 2: the header, the bad line
    assert error["accepted"] == resume - 1
    # pipelined: the second chunk was refused whole; naive: it went in to the bound.
    assert resume - 1 == (service.deps.queue.max_points if service.deps.strategy.name == "naive"
                          else CHUNK)
    await service.deps.workers.drain()
    status, body = await api.post("/v1/points/bulk", content_type="text/csv",
                                  body=HEADER + _csv(cid, parts, range(resume - 1, lines)))
    assert status == 202 and body["accepted"] == lines - (resume - 1)
    await service.deps.workers.drain()
    assert sql(clean, "SELECT count(*) FROM points") == [(lines,)]
    assert sql(clean, "SELECT competition_id, participant_id, total, points FROM standings "
                      "ORDER BY 2") == _expected_totals(cid, parts, lines)


@BOTH_PATHS
@SMALL
async def test_an_upload_cut_off_mid_stream_and_resent_with_its_key_doubles_nothing(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    lines = 5 * CHUNK - 2
    data = HEADER + _csv(cid, parts, range(lines))
    key = "day-3-results.csv"
    _, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"POST /v1/points/bulk HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                 b"Authorization: Bearer " + TOKENS["ingest"].encode() + b"\r\n"
                 b"Idempotency-Key: " + key.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    cut = data.index(b"\n", len(data) * 9 // 10) + 1  # past four flushes, short of five
    writer.write(b"%x\r\n%s\r\n" % (cut, data[:cut]))
    await writer.drain()

    async def four_chunks_taken() -> bool:
        return (await service.deps.queue.stats())["totals"]["enqueued"] >= 4 * CHUNK

    await until(four_chunks_taken, "the server to enqueue the upload's first four chunks")
    writer.transport.abort()  # the client vanishes: no reply is ever read
    assert (await service.deps.queue.stats())["totals"]["enqueued"] == 4 * CHUNK
    # The server lets the key go when it sees the connection close (until then a
    # resend would be told 409, retry shortly).
    async def let_go() -> bool:
        return await key_state(service, key) == "open"

    await until(let_go, "the cut upload's key let go")
    status, body = await api.request("POST", "/v1/points/bulk", body=data, token="ingest",
                                     content_type="text/csv",
                                     headers={"Idempotency-Key": key})
    assert status == 202 and body["accepted"] == lines
    await service.deps.workers.drain()
    await assert_settled_cleanly(service)  # the resent copies of the first chunks too
    ids = KeyedIds(key, hash_token(TOKENS["ingest"]), "l")
    assert_exact(clean, {ids(line) for line in range(2, lines + 2)})
    assert sql(clean, "SELECT competition_id, participant_id, total, points FROM standings "
                      "ORDER BY 2") == _expected_totals(cid, parts, lines)


@pytest.mark.parametrize("media", ["text/csv", "application/x-ndjson"])
async def test_an_upload_resent_after_success_is_answered_as_the_first_and_enqueues_nothing(
        api: Api, service: Service, media: str) -> None:
    cid, parts = await seed(api)
    if media == "text/csv":
        data = HEADER + _csv(cid, parts, range(30)) + b"x,y,z\n"
    else:
        data = b"".join(b'{"competition_id": %d, "participant_id": %d, "value": %d}\n'
                        % (cid, parts[i % 3], i) for i in range(30)) + b"{broken\n"
    key = {"Idempotency-Key": "day-4-results"}
    status, first = await api.post("/v1/points/bulk", body=data, content_type=media,
                                   headers=key)
    assert status == 202 and (first["accepted"], first["rejected"]) == (30, 1), first
    response = await api.response("POST", "/v1/points/bulk", body=data, content_type=media,
                                  headers=key)
    assert (response.code, orjson.loads(response.body)) == (202, first)
    assert response.headers["Idempotent-Replayed"] == "true"
    assert (await service.deps.queue.stats())["totals"]["enqueued"] == 30


async def test_an_upload_under_a_used_key_with_another_body_is_422_and_enqueues_nothing(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    key = {"Idempotency-Key": "day-5-results"}
    status, _ = await api.post("/v1/points/bulk", body=HEADER + _csv(cid, parts, range(30)),
                               content_type="text/csv", headers=key)
    assert status == 202
    changed = HEADER + _csv(cid, parts, range(29)) + _csv(cid, parts, range(99, 100))
    for body, media in ((changed, "text/csv"), (HEADER + _csv(cid, parts, range(30)),
                                                "application/x-ndjson")):
        status, answer = await api.post("/v1/points/bulk", body=body, content_type=media,
                                        headers=key)
        assert (status, answer["error"]["code"]) == (422, "idempotency_key_reused"), answer
        assert answer["error"]["accepted"] == 0
    assert (await service.deps.queue.stats())["totals"]["enqueued"] == 30


async def _open_upload(service: Service, key: str) -> tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter]:
    """A raw chunked upload with ``key``, its head sent; pieces follow with ``_send``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"POST /v1/points/bulk HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                 b"Authorization: Bearer " + TOKENS["ingest"].encode() + b"\r\n"
                 b"Idempotency-Key: " + key.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    return reader, writer


async def _send(writer: asyncio.StreamWriter, piece: bytes, *, last: bool = False) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) + (b"0\r\n\r\n" if last else b""))
    await writer.drain()


async def _reply(reader: asyncio.StreamReader) -> tuple[int, Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return int(head.split(b" ")[1]), orjson.loads(await reader.readexactly(length))


async def _enqueued(service: Service, points: int) -> None:
    async def taken() -> bool:
        return (await service.deps.queue.stats())["totals"]["enqueued"] >= points

    await until(taken, f"{points} points enqueued")


async def _cut_upload(service: Service, data: bytes, key: str, chunks: int,
                      cut: int | None = None) -> None:
    """Send ``data`` (up to ``cut``) with ``key`` until the server has enqueued ``chunks``
    chunks, then vanish; return once the server has let the key go."""
    _, writer = await _open_upload(service, key)
    cut = cut or data.index(b"\n", len(data) * 9 // 10) + 1
    await _send(writer, data[:cut])
    await _enqueued(service, chunks * CHUNK)
    writer.transport.abort()

    async def let_go() -> bool:
        return await key_state(service, key) == "open"

    await until(let_go, "the cut upload's key let go")


def _line_end(data: bytes, line: int) -> int:
    """The offset just past line ``line`` (1-based) of ``data``."""
    end = 0
    for _ in range(line):
        end = data.index(b"\n", end) + 1
    return end


@BOTH_PATHS
@SMALL
async def test_a_cut_upload_resent_with_another_body_is_refused_where_the_bodies_part(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    lines = 5 * CHUNK - 2
    data = HEADER + _csv(cid, parts, range(lines))
    key = "day-6-results.csv"
    await _cut_upload(service, data, key, chunks=4)  # checkpoints after lines 11, 21, 31, 41
    # A line of the third chunk corrected: the first attempt may have enqueued it
    # under the id of its line number.
    old = b"%d,%d,%d\n" % (cid, parts[(2 * CHUNK + 2) % 3], 2 * CHUNK + 2)
    fixed = data.replace(old, b"%d,%d,%d\n" % (cid, parts[(2 * CHUNK + 2) % 3], 1000), 1)
    assert fixed != data
    reader, writer = await _open_upload(service, key)
    await _send(writer, fixed[:_line_end(fixed, 2 * CHUNK + 1)])  # as first sent, so far
    await _enqueued(service, 6 * CHUNK)  # taken again: the same points, the same ids
    await _send(writer, fixed[_line_end(fixed, 2 * CHUNK + 1):], last=True)
    status, answer = await _reply(reader)
    writer.close()
    error = answer["error"]
    assert (status, error["code"]) == (422, "idempotency_key_reused"), answer
    assert (error["accepted"], error["accepted_through_line"]) == (2 * CHUNK, 2 * CHUNK + 1)
    assert (await service.deps.queue.stats())["totals"]["enqueued"] == 6 * CHUNK
    # The file as first sent completes the upload: every line once, as first sent.
    status, answer = await api.request("POST", "/v1/points/bulk", body=data, token="ingest",
                                       content_type="text/csv",
                                       headers={"Idempotency-Key": key})
    assert status == 202 and answer["accepted"] == lines, answer
    await service.deps.workers.drain()
    await assert_settled_cleanly(service)
    ids = KeyedIds(key, hash_token(TOKENS["ingest"]), "l")
    assert_exact(clean, {ids(line) for line in range(2, lines + 2)})
    assert sql(clean, "SELECT competition_id, participant_id, total, points FROM standings "
                      "ORDER BY 2") == _expected_totals(cid, parts, lines)


@SMALL
async def test_lines_of_a_resent_upload_wait_for_the_checkpoint_that_covers_them(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    # 30 bad lines first: the first chunk of valid lines ends at line 41.
    bad = b"".join(b"%d,%d,oops\n" % (cid, parts[0]) for _ in range(30))
    data = HEADER + bad + _csv(cid, parts, range(5 * CHUNK))
    key = "day-8-results.csv"
    await _cut_upload(service, data, key, chunks=4, cut=_line_end(data, 31 + 4 * CHUNK + 3))
    # The resend fixed the bad lines: its first chunks fill before the first
    # checkpoint's offset, and their lines would take ids the first attempt gave
    # to other points.  They wait for the checkpoint; past two chunks' worth of
    # waiting lines, the bodies cannot be the same.
    fixed = HEADER + bad.replace(b"oops", b"7") + _csv(cid, parts, range(5 * CHUNK))
    first_checkpoint = _line_end(data, 31 + CHUNK)
    reader, writer = await _open_upload(service, key)
    await _send(writer, fixed[:first_checkpoint - 1])  # not a byte more: refused on its own
    status, answer = await _reply(reader)
    writer.close()
    error = answer["error"]
    assert (status, error["code"], error["accepted"]) == (422, "idempotency_key_reused", 0)
    assert (await service.deps.queue.stats())["totals"]["enqueued"] == 4 * CHUNK


async def test_an_upload_while_the_first_with_its_key_streams_is_409(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    key = "day-7-results.csv"
    _, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"POST /v1/points/bulk HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                 b"Authorization: Bearer " + TOKENS["ingest"].encode() + b"\r\n"
                 b"Idempotency-Key: " + key.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"%x\r\n%s\r\n" % (len(HEADER), HEADER))
    await writer.drain()

    async def streaming() -> bool:
        return await key_state(service, key) == "in_flight"

    await until(streaming, "the first upload under way")
    data = HEADER + _csv(cid, parts, range(3))
    response = await api.response("POST", "/v1/points/bulk", body=data, token="ingest",
                                  content_type="text/csv", headers={"Idempotency-Key": key})
    error = orjson.loads(response.body)["error"]
    assert (response.code, error["code"]) == (409, "idempotency_key_in_flight"), error
    assert int(response.headers["Retry-After"]) >= 1
    writer.transport.abort()  # the first goes away having sent nothing but its header

    async def freed() -> bool:
        return await key_state(service, key) is None

    await until(freed, "the key freed (nothing was accepted under it)")
    status, answer = await api.request("POST", "/v1/points/bulk", body=data, token="ingest",
                                       content_type="text/csv",
                                       headers={"Idempotency-Key": key})
    assert status == 202 and answer["accepted"] == 3
