"""An upload read as columns answers and stores exactly what the line-by-line
reference parser gives for the same file (tests/ingest/test_columns.py checks the
parts; this checks the handler that slices, falls back and flushes)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from server.access.auth import hash_token
from server.ingest.bulk import LineSplitter, parser_for, point_from_line
from server.points import ID, MAX_REPORTED, KeyedIds, now_us
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from tests.support import TOKENS, Api, seed, sql

CHUNK = 37  # flushes fall inside the handler's slices and inside pieces
HEADER = "value,participant_id,id,competition_id,recorded_at"


def _lines(rng: random.Random, cid: int, parts: list[int]) -> list[str]:
    """Plain lines, lines valid only by the general rules, and every kind of error."""
    lines = [HEADER]
    for n in range(2500):
        p = rng.choice(parts)
        kind = rng.random()
        if kind < 0.85:
            point_id = rng.choice(["", f"p{n}", f"é{n}"])  # "" : an id from the key
            stamp = rng.choice(["", "2025-12-31T23:00:00Z"])
            end = "\r" if rng.random() < 0.1 else ""
            lines.append(f"{rng.randrange(100_000) / 1000},{p},{point_id},{cid},{stamp}{end}")
        elif kind < 0.92:
            lines.append(rng.choice([
                f'"1.5",{p},q{n},{cid},', f"2,{p}, s{n} ,{cid},", f" 3 ,{p},,{cid},",
                f"4,{p},t{n},{cid}, 2026-01-01T00:00:00Z"]))
        else:
            lines.append(rng.choice([
                "", "  ", f"1,{p},a{n},{cid}", f"1,{p},a{n},{cid},,", f'"1,{p},a{n},{cid},',
                f"1,-{p},a{n},{cid},", f"1,0,a{n},{cid},", f"1,+{p},a{n},{cid},",
                f"1,{p},a{n},٣,", f"NaN,{p},a{n},{cid},", f"1e16,{p},a{n},{cid},",
                f"x,{p},a{n},{cid},", f"1,{p},\x01{n},{cid},", f"1,{p},{'i' * 200},{cid},",
                f"1,{p},a{n},{cid},yesterday", f"1,{p},a{n},{cid},\r\r",
                f"1,{p},a{n}\udcff,{cid},"]))
    # Over 64 KiB, and longer than any piece the server is handed (tornado's 64 KiB)
    # whatever the cuts, so reported too long by both.
    lines.insert(1200, f"1,{parts[0]},{'é' * 100_000},{cid},")
    return lines


def _pieces(rng: random.Random, body: bytes) -> list[bytes]:
    """Cut anywhere: mid-line, mid-character (inside an "é"), a byte at a time."""
    inside = [at + 1 for at in range(len(body)) if body[at] == 0xC3][:5]
    cuts = sorted(set(rng.sample(range(1, len(body)), 30) + inside + [5, 6, 7]
                      + list(range(65536, len(body), 65536))))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]


def _reference(pieces: list[bytes], ids: KeyedIds, received_us: int) -> tuple[dict, set]:
    parser, splitter = parser_for("text/csv"), LineSplitter()
    errors, points = [], set()
    for line_no, raw in [line for piece in pieces for line in splitter.feed(piece)] + list(
            splitter.close()):
        point, error = point_from_line(parser, raw, line_no, received_us)
        if error is not None:
            errors.append({"line": line_no, "message": error})
        elif point is not None:
            point_id = point[ID] if point[ID] is not None else ids(line_no)
            points.add((point_id, point[1], point[2], point[3]))
    answer = {"accepted": len(points), "rejected": len(errors), "errors": errors[:MAX_REPORTED]}
    return answer, points


def _producer(pieces: list[bytes]) -> Callable:
    async def produce(write: Callable) -> None:
        for piece in pieces:
            await write(piece)

    return produce


@pytest.mark.parametrize("settings", [{"bulk_chunk_points": CHUNK}], indirect=True)
@pytest.mark.parametrize("seed_value", [1, 2])
async def test_an_upload_read_as_columns_answers_and_stores_what_the_reference_gives(
        api: Api, service: Service, clean: Stores, seed_value: int) -> None:
    cid, parts = await seed(api)
    rng = random.Random(seed_value)
    body = b"\xef\xbb\xbf" + "\n".join(_lines(rng, cid, parts)).encode(
        "utf-8", "surrogateescape")  # no newline after the last line
    pieces = _pieces(rng, body)
    key = f"columns-{seed_value}"
    status, answer = await api.request(
        "POST", "/v1/points/bulk", token="ingest", content_type="text/csv",
        body_producer=_producer(pieces),
        headers={"Transfer-Encoding": "chunked", "Idempotency-Key": key})
    expected, points = _reference(pieces, KeyedIds(key, hash_token(TOKENS["ingest"]), "l"),
                                    now_us())
    assert status == 202
    assert [e for e in answer["errors"] if e not in expected["errors"]] == []
    assert [e for e in expected["errors"] if e not in answer["errors"]] == []
    assert answer == expected
    assert answer["rejected"] > MAX_REPORTED  # the cap on reported errors is in play
    await service.deps.workers.drain()
    assert set(sql(clean, "SELECT id, competition_id, participant_id, value FROM points")) \
        == points
