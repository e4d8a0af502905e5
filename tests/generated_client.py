"""Generate a Python client from a live server's ``/openapi.json`` and drive it.

    python -m tests.generated_client --generator /path/to/venv/bin/openapi-python-client

openapi-python-client is not a dependency of the project (it brings its own
pydantic, typer and more): install it in a venv of its own with
``python-dateutil`` (which the clients it writes import), and name its
executable here; the generated client runs with that venv's Python.  Not part of
the suite (the suite checks the document's shape instead: one error schema for
every error answer, every request body sendable as JSON or bytes); this is the
proof that a generated client has one error model and works end to end.

It starts ``run.py serve`` on a fresh data directory, generates the client, checks
that it has one error model (``Error``) and no model per operation and status,
and that it includes the bulk upload, then runs ``_DRIVE`` with it: create a
competition and participants, post points, upload CSV and NDJSON as bytes, and
read every error (409, 422, 404, 400) as an ``Error``; the standings come out
exact.  Exit 0 when all of that holds.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.server import ServeProcess
from server.embedded import EmbeddedPostgres, EmbeddedRedis

_DRIVE = r'''
import io, sys, time
from points_client import AuthenticatedClient
from points_client.api.competitions import create_competition, create_participants, get_competition
from points_client.api.points import post_points, post_points_bulk
from points_client.api.reads import get_leaderboard
from points_client.models import (BulkAccepted, Competition, CompetitionCreate, Error,
                                  Leaderboard, ParticipantCreate, ParticipantsCreate, Point,
                                  PointBatch, PointsAccepted)
from points_client.models.post_points_ack import PostPointsAck
from points_client.types import File

client = AuthenticatedClient(base_url=sys.argv[1], token=sys.argv[2])


def error(answer, code):
    assert isinstance(answer, Error) and answer.error.code == code, answer
    return answer.error


comp = create_competition.sync(client=client, body=CompetitionCreate(slug="cup", name="Cup"))
assert isinstance(comp, Competition), comp
error(create_competition.sync(client=client, body=CompetitionCreate(slug="cup", name="C")),
      "slug_taken")
error(create_competition.sync(client=client, body=CompetitionCreate(slug="c2", name=" ")),
      "invalid_fields")
error(get_competition.sync(client=client, competition_id=999), "not_found")
made = create_participants.sync(client=client, competition_id=comp.id, body=ParticipantsCreate(
    participants=[ParticipantCreate(external_ref=f"p{i}", display_name=f"P{i}")
                  for i in range(2)]))
a, b = (participant.id for participant in made.participants)
answer = post_points.sync(client=client, ack=PostPointsAck.COMMITTED, body=PointBatch(points=[
    Point(id="g1", competition_id=comp.id, participant_id=a, value=5),
    Point(id="g2", competition_id=comp.id, participant_id=b, value=3)]))
assert isinstance(answer, PointsAccepted) and answer.committed, answer
error(post_points.sync(client=client, body=Point(competition_id=comp.id, participant_id=a,
                                                 value=1e16)), "invalid_fields")
csv = f"competition_id,participant_id,value\n{comp.id},{a},2\n{comp.id},{b},x\n".encode()
answer = post_points_bulk.sync(client=client, body=File(payload=io.BytesIO(csv)))
assert isinstance(answer, BulkAccepted) and (answer.accepted, answer.rejected) == (1, 1), answer
ndjson = f'{{"competition_id": {comp.id}, "participant_id": {b}, "value": 4}}\n'.encode()
answer = post_points_bulk.sync(client=client, body=File(payload=io.BytesIO(ndjson)))
assert isinstance(answer, BulkAccepted) and answer.accepted == 1, answer
refused = error(post_points_bulk.sync(client=client, body=File(payload=io.BytesIO(b"x\n1\n"))),
                "malformed_csv")
assert refused.accepted == 0 and refused.accepted_through_line == 0, refused
deadline = time.monotonic() + 60  # the queue drains, standings fold, the cache expires
while True:
    board = get_leaderboard.sync(client=client, competition_id=comp.id)
    assert isinstance(board, Leaderboard), board
    totals = sorted((entry.participant_id, entry.total) for entry in board.entries)
    if totals == [(a, 7.0), (b, 7.0)]:
        break
    assert time.monotonic() < deadline, totals
    time.sleep(0.2)
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", required=True, type=Path,
                        help="the openapi-python-client executable (of a venv of its own)")
    args = parser.parse_args()
    python = args.generator.parent / "python"
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "data"
        server = ServeProcess(data, env={"ACCESS_LOG": "false"})
        try:
            out = Path(work) / "points_client"
            subprocess.run([str(args.generator), "generate", "--url",
                            f"{server.url}/openapi.json", "--output-path", str(out),
                            "--meta", "none"], check=True, capture_output=True, timeout=120)
            models = sorted(path.stem for path in (out / "models").glob("*.py"))
            per_status = [name for name in models if re.search(r"response_[45][0-9]{2}", name)]
            print(f"{len(models) - 1} models; named for errors: "
                  f"{[name for name in models if 'error' in name]}; "
                  f"per operation and status: {len(per_status)}")
            assert not per_status and "error" in models, models
            assert (out / "api" / "points" / "post_points_bulk.py").exists(), "no bulk upload"
            subprocess.run([str(python), "-c", _DRIVE, server.url, server.admin_token],
                           cwd=work, check=True, timeout=300)
            print("the generated client works end to end")
            assert server.terminate(60) == 0, "".join(server.output)
        finally:  # whatever happened, nothing is left running (by pid)
            server.kill()
            EmbeddedRedis(data).stop(even_if_reused=True)
            EmbeddedPostgres(data).kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
