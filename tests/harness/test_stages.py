"""Reading a py-spy profile as the pipeline's stages."""

from __future__ import annotations

from harness.stages import stage_of, stages, table

ROOT = "run (uvloop/__init__.py:82);_run_once (asyncio/events.py:84)"
HANDLER = "post (/srv/server/handlers/points.py:40)"


def test_a_sample_goes_to_the_deepest_project_frame_with_its_library_work() -> None:
    stack = (f"{ROOT};{HANDLER};accept (/srv/server/ingest/accept.py:60);"
             "enqueue (/srv/server/queue/redis_queue.py:106);"
             "execute_command (redis/asyncio/client.py:600);read_response (redis/connection.py:9)")
    assert stage_of(stack) == "enqueue"
    fold = f"{ROOT};fold (/srv/server/storage/standings.py:30);execute (aiopg/cursor.py:113)"
    assert stage_of(fold) == "fold"


def test_tornado_work_below_a_handler_and_outside_any_is_http() -> None:
    assert stage_of(f"{ROOT};{HANDLER};finish (tornado/web.py:1200)") == "HTTP"
    assert stage_of(f"{ROOT};_read_message (tornado/http1connection.py:170)") == "HTTP"
    assert stage_of(ROOT) == "loop"
    assert stage_of("something odd") == "other"


def test_claim_and_settle_are_told_apart_in_one_module() -> None:
    claim = ("claim (/srv/server/queue/redis_queue.py:198);"
             "Chunk.from_payload (/srv/server/queue/chunks.py:51)")
    assert stage_of(claim) == "claim"
    assert stage_of("PointQueue.settle (/srv/server/queue/redis_queue.py:216)") == "settle"


def test_samples_are_summed_per_stage_and_tabled_largest_first() -> None:
    lines = [f"{ROOT};{HANDLER};validate_point (/srv/server/points.py:180) 7",
             f"{ROOT};{HANDLER};finish (tornado/web.py:1200) 3", "", "garbage"]
    counts = stages(lines)
    assert counts == {"validate": 7, "HTTP": 3}
    assert table(counts).splitlines()[2] == "| validate | 7 | 70.0% |"
