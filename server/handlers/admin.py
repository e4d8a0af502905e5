"""Admin: the queue's state, pause/resume, and the dead-letter queue."""

from __future__ import annotations

import dataclasses

from server import schemas
from server.errors import InvalidInput
from server.handlers.base import BaseHandler, BodyHandler
from server.handlers.jsonbody import decode_json

MAX_IDS = schemas.DLQ_IDS_MAX
_ID_MAX_CHARS = schemas.DLQ_KEY_MAX_CHARS  # dead letters' keys


class QueueHandler(BaseHandler):
    role = "admin"

    async def get(self) -> None:
        deps = self.deps
        stats = await deps.queue.stats()
        totals = stats.pop("totals")
        rate = await deps.queue.committed_rate()
        self.write_json({
            **stats,
            "path": deps.strategy.name,
            "throughput": {"committed_per_s_10s": rate, **totals},
            "workers": deps.workers.describe(),
            "loop": deps.loop_monitor.describe(),
            "worker_counters": deps.workers.stats.as_dict(),
        })


class PauseHandler(BaseHandler):
    """POST /v1/admin/queue/pause: stop claiming in every process (ingest goes on).

    Takes no body (any body is ignored), so no Content-Type is required.
    """

    role = "admin"

    async def post(self) -> None:
        await self.deps.queue.pause()
        self.write_json({"paused": True})


class ResumeHandler(BaseHandler):
    """POST /v1/admin/queue/resume: claim again.  No body, as for pause."""

    role = "admin"

    async def post(self) -> None:
        await self.deps.queue.resume()
        self.write_json({"paused": False})


def _selection(body: bytes) -> list[str] | None:
    """``{"ids": [...]}`` → the ids; ``{"all": true}`` → None (everything)."""
    data = decode_json(body)
    if data == {"all": True}:
        return None
    ids = data.get("ids") if type(data) is dict and set(data) == {"ids"} else None
    if (type(ids) is not list or not 0 < len(ids) <= MAX_IDS
            or not all(type(i) is str and 0 < len(i) <= _ID_MAX_CHARS for i in ids)):
        raise InvalidInput(
            f'body must be {{"ids": [1..{MAX_IDS} dead letter keys]}} or {{"all": true}}',
            details=[{"field": "ids", "message": f"list of 1..{MAX_IDS} strings of "
                                                 f"1..{_ID_MAX_CHARS} chars"}])
    return ids


class DeadLettersHandler(BodyHandler):
    """GET lists (offset cursor), DELETE purges."""

    role = "admin"

    async def get(self) -> None:
        limit = self.query_int(*schemas.DLQ_LIMIT)
        offset = self.query_int(*schemas.DLQ_CURSOR)
        items, next_offset = await self.deps.queue.dead.page(limit, offset)
        self.write_json({"items": items,
                         "next_cursor": str(next_offset) if next_offset is not None else None})

    async def delete_body(self) -> None:
        purged = await self.deps.queue.dead.purge(_selection(self.body))
        self.write_json({"purged": purged})


class RequeueHandler(BodyHandler):
    """POST /v1/admin/dlq/requeue: within the queue's bound, so the answer may be partial
    (``refused_queue_full`` points stay dead-lettered; send it again later)."""

    role = "admin"

    async def post_body(self) -> None:
        done = await self.deps.queue.dead.requeue(_selection(self.body))
        self.write_json(dataclasses.asdict(done))
