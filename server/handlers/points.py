"""POST /v1/points (single or batch) and GET /v1/competitions/{id}/points/{point_id}.

Every error after the enqueue has started carries the request's ``ids``
(server-assigned ones included) with ``accepted_ids`` (surely accepted) and
``unknown_ids`` (may have been: every id is unknown until ingest says otherwise,
also when a bug interrupts it): a client re-sends the points not accepted with
those ids, or the same body with the same ``Idempotency-Key``, and never doubles
a point.  With a key, the request is bound to it (``ingest/idempotency.py``): a
resend after a success is answered from the record, another body under the key
is refused, a resend while the first runs is told to wait.
"""

from __future__ import annotations

from typing import Any

import orjson

from server import schemas
from server.errors import InvalidInput, PartiallyAccepted
from server.handlers.base import BaseHandler, BodyHandler
from server.handlers.errors import BadParameter, NotFound
from server.handlers.jsonbody import decode_json
from server.ingest.accept import COMMITTED
from server.ingest.idempotency import DONE, body_digest
from server.points import ID, Point, check_point_id, now_us, validate_points
from server.storage import points as sql


class PointsHandler(BodyHandler):
    role = "ingest"
    _ids: list[str] | None = None
    # (accepted_ids, unknown_ids): what ingest said; any failure of its other than
    # ``PartiallyAccepted`` accepted nothing (``Ingest.accept``'s contract, bugs
    # included).
    _outcome: tuple[list[str], list[str]] = ([], [])

    def error_extra(self) -> dict[str, Any]:
        if self._ids is None:
            return {}  # refused before anything could be accepted
        accepted, unknown = self._outcome
        return {"ids": self._ids, "accepted_ids": accepted, "unknown_ids": unknown}

    async def post_body(self) -> None:
        received_us = now_us()
        ack = self.get_query_argument("ack", "queued")
        if ack not in schemas.ACK_MODES:
            raise BadParameter("query parameter 'ack' must be 'queued' or 'committed'",
                               details=[{"field": "ack", "message": "queued|committed"}])
        raw = self.body
        points = await validate_points(self._items(decode_json(raw)), received_us,
                                       keyed=self.idempotency_ids("i"))
        ids = [p[ID] for p in points]
        # The fingerprint: the method, the path, the query that changes the answer
        # (``ack``), and the body's bytes.
        digest = body_digest(raw) if self.idempotency_key() is not None else ""
        held = await self.hold_key(f"POST /v1/points?ack={ack}", digest)
        if held is None:
            status, body = await self._accept(points, ids, ack)
            self.write_json(body, status)
            return
        begun, hold = held
        if begun.outcome == DONE:  # the same body, so the same ids
            stored = orjson.loads(begun.answer)
            self.write_replay(begun.status, {"accepted": stored.pop("accepted"), "ids": ids,
                                             **stored})
            return
        try:
            status, body = await self._accept(points, ids, ack)
        except BaseException:
            # Nothing accepted: the key is free again; else it stays bound to this
            # request, which a resend runs again (same ids: nothing doubles).
            await hold.finish("abandon" if self._outcome == ([], []) else "open")
            raise
        # Stored without the ids, which a replay derives again from the same body.
        await hold.finish("done", digest=digest, status=status,
                          answer=orjson.dumps({k: v for k, v in body.items() if k != "ids"}))
        self.write_json(body, status)

    async def _accept(self, points: list[Point], ids: list[str], ack: str
                      ) -> tuple[int, dict[str, Any]]:
        """Accept (and with ``ack=committed`` wait for) the points; (status, body)."""
        self._ids = ids
        ingest = self.deps.ingest
        try:
            where = await ingest.accept(points)
        except PartiallyAccepted as exc:
            self._outcome = (exc.accepted_ids, exc.unknown_ids)
            raise
        self._outcome = (ids, [])
        body: dict[str, Any] = {"accepted": len(points), "ids": ids}
        if where == COMMITTED:  # Redis was down; the points are already in PostgreSQL
            body["committed"] = True
            return (201 if ack == "committed" else 202), body
        if ack == "committed":
            committed = await ingest.wait_committed(points, self.deps.settings.ack_timeout_s)
            body["committed"] = committed
            return (201 if committed else 202), body
        return 202, body

    def _items(self, decoded: Any) -> list[Any]:
        """A single point object, or {"points": [...]} within POINTS_MAX_BATCH."""
        if type(decoded) is not dict or "points" not in decoded:
            return [decoded]
        extra = [key for key in decoded if key != "points"]
        if extra:
            raise InvalidInput("a batch body has only the key 'points'",
                               details=[{"field": key, "message": "unknown field"}
                                        for key in extra])
        items = decoded["points"]
        limit = self.deps.settings.points_max_batch
        if type(items) is not list:
            raise InvalidInput("'points' must be a list",
                               details=[{"field": "points", "message": "must be a list"}])
        if not items:
            raise InvalidInput("'points' must not be empty",
                               details=[{"field": "points", "message": "empty batch"}])
        if len(items) > limit:
            raise InvalidInput(f"a batch holds at most {limit} points (POINTS_MAX_BATCH)",
                               details=[{"field": "points",
                                         "message": f"{len(items)} > {limit}"}])
        return items


class PointHandler(BaseHandler):
    """A committed point by its key: point ids are scoped per competition."""

    role = "read"

    async def get(self, competition: str, point_id: str) -> None:
        competition_id = self.path_id(competition)
        missing = f"no committed point with id {point_id!r} in competition {competition_id}"
        if check_point_id(point_id):
            raise NotFound(missing)
        row = await self.deps.reads.run(
            lambda cur: sql.get_point(cur, competition_id, point_id))
        if row is None:
            raise NotFound(missing)
        self.write_json(row)
