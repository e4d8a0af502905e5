"""Schemathesis hooks for ``tests/test_api_conformance.py`` (``SCHEMATHESIS_HOOKS``).

The document describes the bulk upload bodies as strings of media types
schemathesis can neither generate nor send by itself (``text/csv``,
``application/x-ndjson``): these strategies make uploads of mostly good lines
(competition 1 and participants 1..3 exist on the seeded server, 4 does not)
with some garbage, sent as they are.
"""

from __future__ import annotations

import orjson
import schemathesis
from hypothesis import strategies as st


def _lines(kind: str) -> st.SearchStrategy[bytes]:
    point = st.fixed_dictionaries({"competition_id": st.just(1),
                                   "participant_id": st.integers(1, 4),
                                   "value": st.integers(-100, 100)})
    if kind == "csv":
        good = point.map(lambda p: f"{p['competition_id']},{p['participant_id']},{p['value']}")
        header = st.sampled_from(["competition_id,participant_id,value",
                                  "participant_id,value,competition_id", "nonsense"])
    else:
        good = point.map(lambda p: orjson.dumps(p).decode())
        header = st.just("")
    line = st.one_of(good, good, st.text(max_size=40).filter(lambda t: "\n" not in t))
    return st.builds(lambda h, rows: "\n".join([h, *rows]).encode("utf-8", "surrogatepass"),
                     header, st.lists(line, max_size=20))


schemathesis.openapi.media_type("text/csv", _lines("csv"))
schemathesis.openapi.media_type("application/x-ndjson", _lines("ndjson"))
# Sent as they are: the document's examples (strings) and the bytes above.
schemathesis.serializer.alias("text/csv", "text/plain")
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
