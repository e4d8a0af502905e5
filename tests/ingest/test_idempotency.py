"""A streamed body checked against an earlier attempt's checkpoints (``StreamDigest``).

Pure logic over bytes: the records themselves are exercised through the API, on
real Redis, in ``tests/handlers/test_points.py`` and ``tests/handlers/test_bulk.py``.
"""

from __future__ import annotations

import pytest

from server.errors import IdempotencyKeyReused
from server.ingest.idempotency import StreamDigest, body_digest

BODY = b"competition_id,participant_id,value\n1,1,1\n1,2,2\n1,3,3\n1,1,4\n"


def _checkpoints(body: bytes, *ends: int, last_unterminated: bool = False
                 ) -> list[tuple[int, str, bool]]:
    marks = [(end, body_digest(body[:end]), False) for end in ends]
    if last_unterminated:
        end, digest, _ = marks[-1]
        marks[-1] = (end, digest, True)
    return marks


def _feed(digest: StreamDigest, body: bytes, piece: int) -> None:
    for start in range(0, len(body), piece):
        digest.receive(body[start:start + piece])


@pytest.mark.parametrize("piece", [1, 5, 64])
def test_the_same_body_passes_every_checkpoint_whatever_its_pieces(piece: int) -> None:
    ends = (BODY.index(b"\n1,2") + 1, BODY.index(b"\n1,1,4") + 1)
    digest = StreamDigest(_checkpoints(BODY, *ends))
    assert not digest.may_enqueue(ends[0])  # nothing received yet: lines must wait
    _feed(digest, BODY, piece)
    assert digest.verified == ends[1] == digest.limit
    assert digest.may_enqueue(ends[0]) and digest.may_enqueue(len(BODY))  # new ground
    assert digest.close() == body_digest(BODY)


def test_a_body_that_parts_is_refused_at_the_first_checkpoint_past_the_change() -> None:
    ends = (BODY.index(b"\n1,2") + 1, BODY.index(b"\n1,1,4") + 1)
    digest = StreamDigest(_checkpoints(BODY, *ends))
    changed = BODY.replace(b"1,3,3", b"1,3,9")
    digest.receive(changed[:ends[0]])
    assert digest.verified == ends[0]  # the bytes before the change are the first's
    with pytest.raises(IdempotencyKeyReused):
        digest.receive(changed[ends[0]:])


def test_an_upload_that_ended_without_a_newline_is_not_extended_by_a_resend() -> None:
    first = BODY.rstrip(b"\n")  # its last line "1,1,4" may have been accepted as it is
    digest = StreamDigest(_checkpoints(first, len(first), last_unterminated=True))
    digest.receive(first)
    with pytest.raises(IdempotencyKeyReused):
        digest.receive(b"0\n")  # "1,1,40": the same prefix, another line
    again = StreamDigest(_checkpoints(first, len(first), last_unterminated=True))
    again.receive(first)
    assert again.close() == body_digest(first)


def test_a_body_shorter_than_the_checkpoints_is_refused_at_its_end() -> None:
    digest = StreamDigest(_checkpoints(BODY, len(BODY)))
    digest.receive(BODY[:-6])
    with pytest.raises(IdempotencyKeyReused):
        digest.close()
