"""Competitions and their participants: create, list, read."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from server import schemas
from server.errors import InvalidInput
from server.handlers.base import BaseHandler, BodyHandler
from server.handlers.errors import NotFound
from server.handlers.jsonbody import decode_json
from server.points import RFC3339_HINT, parse_rfc3339
from server.storage import catalog

# Names, bounds and patterns are those /openapi.json publishes.
_SLUG = re.compile(schemas.SLUG_PATTERN)
_TEXT = re.compile(schemas.TEXT_PATTERN)
MAX_PARTICIPANTS_PER_REQUEST = schemas.PARTICIPANTS_MAX_PER_REQUEST


class _Fields:
    """Collects field problems of one JSON object, then raises them together."""

    def __init__(self, obj: Any, allowed: tuple[str, ...], where: dict[str, Any]) -> None:
        self.where = where
        self.problems: list[dict[str, Any]] = []
        if type(obj) is not dict:
            self.add(None, "must be a JSON object")
            obj = {}
        self.obj = obj
        for key in obj:
            if key not in allowed:
                self.add(key, "unknown field")

    def add(self, field: str | None, message: str) -> None:
        detail = dict(self.where)
        if field is not None:
            detail["field"] = field
        detail["message"] = message
        self.problems.append(detail)

    def text(self, name: str, max_chars: int, *, required: bool = True) -> str | None:
        value = self.obj.get(name)
        if value is None:
            if required:
                self.add(name, "is required")
            return None
        if type(value) is not str or not value or len(value) > max_chars:
            self.add(name, f"must be a non-empty string of at most {max_chars} characters")
            return None
        if not _TEXT.fullmatch(value):  # bounded above: fullmatch's cost is too
            self.add(name, "must not be blank nor contain NUL characters")
            return None
        return value

    def timestamp(self, name: str) -> datetime | None:
        value = self.obj.get(name)
        if value is None:
            return None
        moment = parse_rfc3339(value)
        if moment is None:
            self.add(name, RFC3339_HINT)
        return moment


def _raise_if(problems: list[dict[str, Any]]) -> None:
    if problems:
        raise InvalidInput(f"{len(problems)} invalid field(s)",
                           details=problems[:schemas.MAX_REPORTED])


class CompetitionsHandler(BodyHandler):
    async def prepare(self) -> None:
        self.role = "ingest" if self.request.method == "POST" else "read"
        await super().prepare()

    async def get(self) -> None:
        limit = self.query_int(*schemas.COMPETITIONS_LIMIT)
        after = self.query_int(*schemas.COMPETITIONS_CURSOR)
        items = await self.deps.reads.run(
            lambda cur: catalog.list_competitions(cur, limit, after))
        next_cursor = str(items[-1]["id"]) if len(items) == limit else None
        self.write_json({"items": items, "next_cursor": next_cursor})

    async def post_body(self) -> None:
        fields = _Fields(decode_json(self.body), schemas.COMPETITION_FIELDS, {})
        slug = fields.text("slug", schemas.SLUG_MAX_CHARS)
        if slug is not None and not _SLUG.fullmatch(slug):
            fields.add("slug", "must be lowercase letters, digits, '-' or '_' "
                               f"(1-{schemas.SLUG_MAX_CHARS})")
        name = fields.text("name", schemas.NAME_MAX_CHARS)
        starts_at, ends_at = fields.timestamp("starts_at"), fields.timestamp("ends_at")
        if starts_at and ends_at and ends_at < starts_at:
            fields.add("ends_at", "must not be before starts_at")
        _raise_if(fields.problems)
        assert slug is not None and name is not None  # required: else a problem was raised
        async with self.deps.db.cursor() as cur:
            row = await catalog.create_competition(cur, slug, name, starts_at, ends_at)
        self.write_json(row, 201)


class CompetitionHandler(BaseHandler):
    role = "read"

    async def get(self, competition_id: str) -> None:
        cid = self.path_id(competition_id)
        row = await self.deps.reads.run(lambda cur: catalog.get_competition(cur, cid))
        if row is None:
            raise NotFound(f"no competition {competition_id}")
        self.write_json(row)


class ParticipantsHandler(BodyHandler):
    role = "ingest"

    async def post_body(self, competition_id: str) -> None:
        cid = self.path_id(competition_id)
        body = decode_json(self.body)
        top = _Fields(body, ("participants",), {})
        entries = top.obj.get("participants")
        if type(entries) is not list or not entries:
            top.add("participants", "must be a non-empty list")
        elif len(entries) > MAX_PARTICIPANTS_PER_REQUEST:
            top.add("participants", f"at most {MAX_PARTICIPANTS_PER_REQUEST} per request")
        _raise_if(top.problems)
        problems: list[dict[str, Any]] = []
        pairs: dict[str, str] = {}
        for index, entry in enumerate(entries):
            fields = _Fields(entry, schemas.PARTICIPANT_FIELDS, {"index": index})
            ref = fields.text("external_ref", schemas.EXTERNAL_REF_MAX_CHARS)
            name = fields.text("display_name", schemas.DISPLAY_NAME_MAX_CHARS)
            problems += fields.problems
            if ref is not None and name is not None:
                pairs.setdefault(ref, name)
        _raise_if(problems)
        async with self.deps.db.transaction() as cur:
            if await catalog.get_competition(cur, cid) is None:
                raise NotFound(f"no competition {cid}")
            rows = await catalog.upsert_participants(cur, cid, list(pairs.items()))
        by_ref = {row["external_ref"]: row for row in rows}
        self.write_json({"participants": [by_ref[entry["external_ref"]] for entry in entries]},
                        201)
