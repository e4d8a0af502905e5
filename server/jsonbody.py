"""Decoding request JSON strictly, with messages a client can act on.

orjson decodes the common case.  When it refuses a body, the stdlib decoder
takes a second look only to tell *why*: NaN/Infinity literals and integers past
64 bits are parsed into markers that validation reports by index and field
(422), while truly malformed JSON, non-UTF-8 bytes and absurd nesting are a 400.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from server.errors import BadRequest
from server.points import NonFinite


def decode_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 (byte {exc.start})",
                         code="invalid_encoding") from None
    try:
        return json.loads(text, parse_constant=NonFinite)
    except RecursionError:
        raise BadRequest("JSON is nested too deeply", code="malformed_json") from None
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}", code="malformed_json") from None
