"""The columnar fast path of uploads against the line-by-line reference parser.

``ingest/columns.py`` may only ever agree with ``bulk.point_from_line``: a block
it takes gives each line the point the reference gives it, and a block holding
anything the reference would refuse or skip (or words an error for) is left to
the reference.  These tests feed both the same generated lines, in blocks of
every size, and ``LineSplitter.block`` the same pieces as ``feed``.
"""

from __future__ import annotations

import random

import pytest

from server.ingest.bulk import LineSplitter, parser_for, point_from_line
from server.ingest.columns import parse_block

RECEIVED = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z

# Data lines for the header "value,participant_id,id,competition_id,recorded_at":
# plain valid ones, valid ones the reference reads by its general rules, and one of
# every kind of error it reports.
PLAIN = ["1.5,7,a1,3,", "2,8,b-2,3,2025-12-31T23:00:00Z", "-0,9,,4,", "1e3,1,x,2,",
         "1000000000000000,5,id,1,", "0.1,9223372036854775807,q,1,", "0.2,0042,z,01,",
         "0.3,0000000000000000007,y,3,"]  # 19 digits: the reference's longest
TRICKY_VALID = [
    '"2.5",7,quoted,3,',  # quotes: the csv module's rules
    "3, 7 ,sp,3,",  # spaces around an integer: stripped
    "4,7, padded ,3,",  # and around an id
    "5,7,é-id,3,",  # a non-ASCII id
    " 6 ,7,v,3,",  # float() reads spaces
    "1_0,7,u,3,",  # and underscores
    "7,7,t,3, 2026-01-01T00:00:00Z ",  # a padded timestamp
    "8,7,crlf,3,\r",  # a CRLF line end
]
INVALID = [
    "", "   ", "\r",  # blank lines: skipped, not errors
    "1,7,a,3", "1,7,a,3,,", "1,7,a,3,,x",  # field counts
    '"1,7,a,3,', '1,7,"a"b",3,',  # malformed quoting
    "1,-7,a,3,", "1,0,a,3,", "1,+7,a,3,", "1,7,a,99999999999999999999,", "1,٣,a,3,",
    "1,9223372036854775808,a,3,", "1,,a,3,", "1,00000000000000000007,a,3,",  # integers
    "NaN,7,a,3,", "inf,7,a,3,", "x,7,a,3,", "1e16,7,a,3,", ",7,a,3,",  # values
    "1,7,\x01ctl,3,", "1,7," + "i" * 200 + ",3,", "1,7,  ,3,",  # ids
    "1,7,a,3,yesterday", "1,7,a,3,2999-01-01T00:00:00Z",  # timestamps
    "1,7,a,3,\r\r", "1,7\r,a,3,",  # stray carriage returns
]
HEADER = "value,participant_id,id,competition_id,recorded_at"
NDJSON_PLAIN = ['{"competition_id":3,"participant_id":7,"value":1.5}',
                '{"id":"n1","competition_id":3,"participant_id":7,"value":2}',
                ' {"competition_id":3,"participant_id":8,"value":-1,"recorded_at":'
                '"2025-12-31T23:00:00Z"} \r']
NDJSON_INVALID = ["", "  ", "{broken", "[1]", "7", '{"competition_id":3}',
                  '{"competition_id":3,"participant_id":7,"value":true}',
                  '{"competition_id":3,"participant_id":7,"value":1},{"x":1}',
                  '{"competition_id":3,"participant_id":7,"value":1,"x":2}']


def _reference(media_type: str, header: bytes | None, lines: list[bytes | None]) -> list:
    parser = parser_for(media_type)
    first = 1
    if header is not None:
        point_from_line(parser, header, 1, RECEIVED)
        first = 2
    return [point_from_line(parser, raw, n, RECEIVED) for n, raw in enumerate(lines, first)]


def _columns(media_type: str, header: bytes | None, lines: list[bytes | None]) -> list | None:
    parser = parser_for(media_type)
    if header is not None:
        point_from_line(parser, header, 1, RECEIVED)
    return parse_block(parser, lines, RECEIVED)


def _agree(media_type: str, header: bytes | None, lines: list[bytes | None]) -> bool:
    """The fast path took the block (True) or left it; either way it agreed."""
    expected = _reference(media_type, header, lines)
    got = _columns(media_type, header, lines)
    if got is None:
        return False
    assert [(point, None) for point in got] == expected
    # Bit for bit, -0.0 included (== would take it for 0.0).
    assert [repr(point) for point in got] == [repr(point) for point, _ in expected]
    return True


@pytest.mark.parametrize("media_type", ["text/csv", "application/octet-stream"])
def test_plain_csv_blocks_give_the_reference_points(media_type: str) -> None:
    lines = [line.encode() for line in PLAIN * 50]
    assert _agree(media_type, HEADER.encode(), lines)
    # CRLF line ends, and a header in the usual order with no id nor time column.
    assert _agree(media_type, HEADER.encode(), [line + b"\r" for line in lines])
    assert _agree(media_type, b"competition_id,participant_id,value",
                  [b"3,7,1.5", b"1,2,0", b"4,5,-2.25"])


@pytest.mark.parametrize("line", TRICKY_VALID)
def test_a_csv_block_with_a_line_valid_by_the_general_rules_agrees_taken_or_not(
        line: str) -> None:
    _agree("text/csv", HEADER.encode(), [raw.encode() for raw in [*PLAIN[:3], line, *PLAIN[3:]]])


@pytest.mark.parametrize("line", INVALID)
def test_a_csv_block_with_a_line_the_reference_refuses_or_skips_is_left_to_it(
        line: str) -> None:
    lines = [raw.encode() for raw in [*PLAIN[:3], line, *PLAIN[3:]]]
    assert not _agree("text/csv", HEADER.encode(), lines)


def test_a_csv_block_with_invalid_utf8_or_a_too_long_line_is_left_to_the_reference() -> None:
    plain = [line.encode() for line in PLAIN]
    assert not _agree("text/csv", HEADER.encode(), [*plain, b"1,7,\xff,3,"])
    assert not _agree("text/csv", HEADER.encode(), [*plain, b"1,7,\xc3", b",3,"])
    assert not _agree("text/csv", HEADER.encode(), [None, *plain])


def test_rows_that_only_add_up_to_the_right_number_of_fields_are_not_taken() -> None:
    """Four fields and two: six, as two rows of three would have, and each of those
    rows a valid point."""
    header = b"value,participant_id,competition_id"
    assert _agree("text/csv", header, [b"1,2,3", b"4,5,6"])
    assert not _agree("text/csv", header, [b"1,2,3,4", b"5,6"])
    assert not _agree("text/csv", header, [b"1,2,3,4,5,6", b""])


def test_ndjson_blocks_give_the_reference_points_or_are_left_to_it() -> None:
    plain = [line.encode() for line in NDJSON_PLAIN * 20]
    for media_type in ("application/x-ndjson", "application/octet-stream"):
        header = None if media_type == "application/x-ndjson" else plain[0]
        assert _agree(media_type, header, plain)
    for line in NDJSON_INVALID:
        assert not _agree("application/x-ndjson", None, [*plain, line.encode()]), line
    # Two objects on one line and one spread over two: as many values as lines,
    # every one a valid point, and still each line is refused by the reference.
    spread = [b'{"competition_id":3,"participant_id":7,"value":1},{"competition_id":3,'
              b'"participant_id":7,"value":2}', b'{"competition_id":3,',
              b'"participant_id":7,"value":3}']
    assert not _agree("application/x-ndjson", None, spread)


def test_a_block_before_the_header_or_format_is_known_is_left_to_the_reference() -> None:
    for media_type in ("text/csv", "application/octet-stream"):
        assert parse_block(parser_for(media_type), [b"3,7,1.5"], RECEIVED) is None


def _body(rng: random.Random) -> bytes:
    """A generated upload: BOM, valid and invalid lines of every kind, a line over
    64 KiB, multi-byte characters, no newline after the last line."""
    lines = [HEADER]
    for _ in range(3000):
        kind = rng.random()
        lines.append(rng.choice(PLAIN) if kind < 0.9 else
                     rng.choice(TRICKY_VALID) if kind < 0.95 else rng.choice(INVALID))
    lines.insert(1500, "1,7," + "é" * 40_000 + ",3,")
    return b"\xef\xbb\xbf" + "\n".join(lines).encode()


@pytest.mark.parametrize("seed", range(6))
def test_block_splits_a_stream_into_the_lines_and_offsets_feed_gives(seed: int) -> None:
    rng = random.Random(seed)
    body = _body(rng)
    cuts = sorted(rng.sample(range(1, len(body)), 40))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    fed, blocked = LineSplitter(), LineSplitter()
    for piece in pieces:
        expected = []
        for line_no, raw in fed.feed(piece):
            expected.append((line_no, raw, fed.line_end))
        lines = blocked.block(piece)
        first = blocked.line_no - len(lines) + 1
        got = []
        for index in sorted(rng.sample(range(len(lines)), min(len(lines), 5))) + (
                [len(lines) - 1] if lines else []):
            blocked.reach(index)
            got.append((first + index, lines[index], blocked.line_end))
        assert set(got) <= set(expected)
        assert [(n, raw) for n, raw, _ in expected] == list(enumerate(lines, first))
        assert blocked.line_no == fed.line_no
        if lines:
            assert blocked.line_end == fed.line_end
    assert list(blocked.close()) == list(fed.close())
    assert (blocked.line_end, blocked.unterminated) == (fed.line_end, fed.unterminated)
