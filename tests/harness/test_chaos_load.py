"""The chaos load against a real ``run.py serve``: every kind, retried, checked exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from harness.chaos.checker import Verdict, check, read_outcome
from harness.chaos.ledger import (
    ACKED,
    CLIENT_CUT,
    KINDS,
    NO_ANSWER,
    READ,
    REFUSED,
    UNKNOWN,
    Ledger,
)
from harness.chaos.load import (
    Answer,
    LoadPlan,
    LoadTarget,
    _Job,
    _Load,
    load_process,
    run_load,
)
from harness.server import ServeProcess
from tests.support import call, queue_state, serve, served, until_sync

# Small upload chunks: a cut upload has enqueued some of its lines, so its resend meets
# its key's checkpoints (ids derived from the key, lines compared before any is enqueued).
# A key whose holder was killed is taken over after its lease: 2 s here, not 10.
ENV = {"BULK_CHUNK_POINTS": "20", "IDEMPOTENCY_LEASE_S": "2"}
# Light: the server, its stores and this load share two cores with other tests.
PLAN = LoadPlan(seed=7, singles_per_s=8, batches_per_s=1.5, batch_size=10, bulk_every_s=1.0,
                bulk_points=60, bulk_cut_fraction=0.5, bulk_send_s=0.4, ack_per_s=3,
                reads_per_s=3, conflict_fraction=1.0, give_up_s=40, drain_s=40,
                request_timeout_s=10)


def _competitions(url: str, token: str) -> dict[int, list[int]]:
    """Two competitions of three participants each (ids are per competition: both
    get points)."""
    out = {}
    for slug in ("c1", "c2"):
        status, comp = call(url, "POST", "/v1/competitions", token, {"slug": slug, "name": slug})
        assert status == 201, comp
        status, body = call(url, "POST", f"/v1/competitions/{comp['id']}/participants", token,
                            {"participants": [{"external_ref": str(i), "display_name": str(i)}
                                              for i in range(3)]})
        assert status == 201, body
        out[comp["id"]] = [p["id"] for p in body["participants"]]
    return out


def _load_in_thread(target: LoadTarget, plan: LoadPlan, ledger: Ledger, seconds: float,
                    cut: threading.Event | None = None) -> threading.Thread:
    deadline = time.time() + seconds
    thread = threading.Thread(
        target=lambda: asyncio.run(run_load(target, plan, ledger, deadline, cut)), daemon=True)
    thread.start()
    return thread


def _drained(url: str, token: str) -> Callable[[], bool]:
    def empty() -> bool:
        queue = queue_state(url, token)
        return queue["depth"] + queue["inflight"] + queue["retry_scheduled"] == 0
    return empty


def _verdict(server: ServeProcess, url: str, ledger: Ledger,
             competitions: dict[int, list[int]]) -> Verdict:
    token = server.admin_token
    until_sync(_drained(url, token), "the queue to drain", timeout_s=60)
    rows, standings, dead = read_outcome(server.database_url, url, token, ledger.run_id,
                                         competitions)
    return check(ledger.sent, rows, standings, dead)


def test_a_mixed_load_of_every_kind_is_committed_exactly_once(serve_dir: Path) -> None:
    with served(serve_dir, env=ENV) as server:
        token = server.admin_token
        competitions = _competitions(server.url, token)
        ledger = Ledger("t1")
        cut = threading.Event()
        cut.set()  # every upload is cut once by the signal too, then resent whole
        thread = _load_in_thread(LoadTarget(server.url, token, competitions), PLAN, ledger,
                                 4.0, cut)
        thread.join(timeout=90)
        assert not thread.is_alive(), "the load did not end within its drain"

        verdict = _verdict(server, server.url, ledger, competitions)
    assert verdict.ok, verdict.as_dict()
    kinds = {entry.kind for entry in ledger.sent}
    assert kinds == set(KINDS), kinds
    events = {event.kind for event in ledger.events}
    assert READ in events
    uploads = sum(e.kind == "bulk" and e.status == 202 for e in ledger.events)
    planned = math.ceil(uploads * PLAN.bulk_cut_fraction)
    assert sum(e.status == CLIENT_CUT for e in ledger.events) == uploads + planned
    counts = ledger.counts()
    assert counts.get(UNKNOWN, 0) == 0, counts
    conflicts = [entry for entry in ledger.sent if entry.kind == "conflict"]
    assert all(entry.expect_dead for entry in conflicts)
    assert verdict.dead_letters == len(conflicts)  # each refused version, and only those
    assert verdict.committed == sum(entry.outcome == ACKED and not entry.expect_dead
                                    for entry in ledger.sent)


def test_a_server_killed_mid_load_and_restarted_loses_and_doubles_nothing(
        serve_dir: Path) -> None:
    with served(serve_dir, env=ENV) as first:
        token, url = first.admin_token, first.url
        competitions = _competitions(url, token)
        ledger = Ledger("t2")
        thread = _load_in_thread(LoadTarget(url, token, competitions), PLAN, ledger, 4.0)
        until_sync(lambda: sum(e.outcome == ACKED for e in ledger.sent) >= 30,
                   "some points acked before the kill", timeout_s=30)
        first.kill()  # -9, forks first
        second = serve(serve_dir, "--port", str(first.port), env=ENV)  # argparse: the last wins
        try:
            assert second.url == url
            thread.join(timeout=90)
            assert not thread.is_alive(), "the load did not end within its drain"
            verdict = _verdict(second, url, ledger, competitions)
        finally:
            second.kill()
    assert verdict.ok, verdict.as_dict()
    assert any(e.status == NO_ANSWER for e in ledger.events), "the kill met no request"
    counts = ledger.counts()
    assert counts.get(UNKNOWN, 0) == 0, counts  # every request was retried to an answer


# -- what an answer says of each point (pure: no server) ---------------------------------

def _answer(status: int, error: dict[str, object]) -> Answer:
    return Answer(status, {"retry-after": "1"}, orjson.dumps({"error": error}))


def _job(ledger: Ledger, kind: str, n: int) -> tuple[_Load, _Job]:
    load = _Load(LoadTarget("http://127.0.0.1:1", "t", {1: [10]}), PLAN, ledger, None)
    return load, _Job(kind, [ledger.add(1, 10, kind=kind, id=f"p{i}") for i in range(n)])


def test_an_error_acks_what_it_names_accepted_and_a_refusal_refuses_only_the_untouched() -> None:
    ledger = Ledger("j")
    load, job = _job(ledger, "batch", 3)
    done, accepted = load._judge_points(job, _answer(503, {
        "code": "unavailable", "ids": ["p0", "p1", "p2"], "accepted_ids": ["p0"],
        "unknown_ids": ["p1"]}))
    assert (done, accepted) == (False, 1)  # a 503 is retried
    done, _ = load._judge_points(job, _answer(422, {"code": "idempotency_key_reused"}))
    assert done
    assert [p.outcome for p in job.points] == [ACKED, UNKNOWN, REFUSED]


def test_an_upload_error_acks_the_lines_it_handled_and_leaves_the_unknown_ones_unknown() -> None:
    ledger = Ledger("j")
    load, job = _job(ledger, "bulk", 4)  # lines 2..5
    done, accepted = load._judge_upload(job, _answer(503, {
        "code": "unavailable", "accepted_through_line": 3, "unknown_through_line": 4,
        "errors": []}))
    assert (done, accepted) == (False, 2)
    done, _ = load._judge_upload(job, _answer(400, {"code": "malformed_csv",
                                                   "accepted_through_line": 1}))
    assert done
    assert [p.outcome for p in job.points] == [ACKED, ACKED, UNKNOWN, REFUSED]


def test_a_key_in_flight_is_waited_for_not_taken_as_a_refusal() -> None:
    ledger = Ledger("j")
    load, job = _job(ledger, "bulk", 1)
    done, _ = load._judge_upload(job, _answer(409, {"code": "idempotency_key_in_flight"}))
    assert not done and job.points[0].outcome == UNKNOWN


def test_a_plan_refuses_an_unknown_key() -> None:
    with pytest.raises(ValueError, match="singles_per_sec"):
        LoadPlan.from_dict({"singles_per_sec": 3})
    assert LoadPlan.from_dict({"singles_per_s": 3}).singles_per_s == 3


def test_a_load_in_its_own_process_writes_its_ledger_and_gives_up_as_unknown(
        tmp_path: Path) -> None:
    """Nothing listens: every point stays unknown (never refused: no answer refuses),
    each attempt is an event, and the drain ends the retries."""
    out = tmp_path / "ledger.json"
    plan = dataclasses.replace(PLAN, singles_per_s=20, batches_per_s=0, bulk_every_s=0,
                               ack_per_s=0, reads_per_s=0, drain_s=0.5)
    with socket.socket() as closed:  # a port nobody listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        target = LoadTarget(f"http://127.0.0.1:{closed.getsockname()[1]}", "t", {1: [10]})
        process = multiprocessing.get_context("spawn").Process(
            target=load_process, args=(target, plan, 3, "p", time.time() + 1.0, out))
        process.start()
        process.join(30)
        assert process.exitcode == 0
    ledger = Ledger.from_json(out.read_bytes())
    assert ledger.run_id == "p" and ledger.sent
    assert {p.outcome for p in ledger.sent} == {UNKNOWN}
    assert {e.status for e in ledger.events} == {NO_ANSWER}


def test_a_server_that_answers_and_closes_mid_body_is_read_not_a_crash() -> None:
    """Found by the chaos run's load_errors threshold: under uvloop, writing the rest
    of a body to a connection the server already closed raises RuntimeError, which
    killed the client task and left its points "unknown" without a word."""
    import uvloop

    from harness.chaos.load import NoAnswer, exchange

    async def scenario() -> int | str:
        async def answer_early(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\n"
                         b"Connection: close\r\n\r\n{}")
            await writer.drain()
            writer.transport.abort()  # gone at once, mid-body

        server = await asyncio.start_server(answer_early, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            answer = await exchange("127.0.0.1", port, b"POST / HTTP/1.1\r\n\r\n",
                                    b"x" * 4_000_000, timeout_s=10, pieces=8, pace_s=0.05)
            return answer.status
        except NoAnswer as exc:
            return f"no answer: {exc}"
        finally:
            server.close()

    outcome = uvloop.run(scenario())
    assert outcome == 413 or str(outcome).startswith("no answer"), outcome
