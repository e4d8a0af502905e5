"""POST /v1/points (single or batch) and GET /v1/competitions/{id}/points/{point_id}.

Every error after validation carries the request's ``ids`` (server-assigned ones
included) with ``accepted_ids`` and ``unknown_ids``: a client re-sends the points
not accepted with those ids, or the same body with the same ``Idempotency-Key``,
and never doubles a point.
"""

from __future__ import annotations

from typing import Any

from server import schemas
from server.errors import InvalidInput
from server.handlers.base import BaseHandler, BodyHandler
from server.handlers.errors import BadParameter, NotFound
from server.handlers.jsonbody import decode_json
from server.ingest.accept import COMMITTED
from server.points import ID, check_point_id, now_us, validate_points
from server.storage import points as sql


class PointsHandler(BodyHandler):
    role = "ingest"
    _ids: list[str] | None = None

    def error_extra(self) -> dict[str, Any]:
        if self._ids is None:
            return {}  # refused before anything could be accepted
        return {"ids": self._ids, "accepted_ids": [], "unknown_ids": []}

    async def post_body(self) -> None:
        received_us = now_us()
        ack = self.get_query_argument("ack", "queued")
        if ack not in schemas.ACK_MODES:
            raise BadParameter("query parameter 'ack' must be 'queued' or 'committed'",
                               details=[{"field": "ack", "message": "queued|committed"}])
        points = await validate_points(self._items(decode_json(self.body)), received_us,
                                       keyed=self.idempotency_ids("i"))
        ids = self._ids = [p[ID] for p in points]
        ingest = self.deps.ingest
        where = await ingest.accept(points)
        body: dict[str, Any] = {"accepted": len(points), "ids": ids}
        if where == COMMITTED:  # Redis was down; the points are already in PostgreSQL
            body["committed"] = True
            self.write_json(body, 201 if ack == "committed" else 202)
        elif ack == "committed":
            committed = await ingest.wait_committed(points, self.deps.settings.ack_timeout_s)
            body["committed"] = committed
            self.write_json(body, 201 if committed else 202)
        else:
            self.write_json(body, 202)

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
        async with self.deps.db.cursor(read=True) as cur:
            row = await sql.get_point(cur, competition_id, point_id)
        if row is None:
            raise NotFound(missing)
        self.write_json(row)
