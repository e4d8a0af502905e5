"""Every answer of a live ``run.py serve`` conforms to its own ``/openapi.json``.

schemathesis reads the document the server serves and, for every operation,
sends the document's examples, boundary cases and generated requests — valid
and invalid — with an admin token, then checks each answer: never a 5xx, a
status the operation documents, the documented content type, a body that fits
the documented schema, the documented headers.  The server runs on its own data
directory with real embedded PostgreSQL and Redis, seeded so that the examples
(competition 1, participant 2, point ``judge-7``, a dead letter) exist.

Reproducible: a fixed seed, derandomized generation, no example database.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tests.test_serve import Server, call

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
SEED = 20261128
MAX_EXAMPLES = 15  # generated requests per operation, beyond examples and boundary cases


def _lines(kind: str) -> st.SearchStrategy[bytes]:
    """Upload bodies: mostly good points (references 1..3 exist), some garbage lines."""
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


def _seed(port: int, token: str) -> None:
    """Competition 1 with participants 1..3, committed points (``judge-7`` among
    them) and one dead letter, as the document's examples expect."""
    status, comp = call(port, "POST", "/v1/competitions", token,
                        {"slug": "cup", "name": "The Cup"})
    assert (status, comp["id"]) == (201, 1), comp
    status, _ = call(port, "POST", "/v1/competitions/1/participants", token,
                     {"participants": [{"external_ref": f"p{i}", "display_name": f"Player {i}"}
                                       for i in range(3)]})
    assert status == 201
    points = [{"id": "judge-7", "competition_id": 1, "participant_id": 2, "value": 8.5},
              {"id": "lap-1", "competition_id": 1, "participant_id": 1, "value": 3},
              {"id": "ghost", "competition_id": 1, "participant_id": 999, "value": 1}]
    status, _ = call(port, "POST", "/v1/points", token, {"points": points})
    assert status == 202
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a wait, not an assertion on time
        _, queue = call(port, "GET", "/v1/admin/queue", token)
        if queue["dead"] >= 1 and queue["depth"] == 0 and queue["inflight"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"seed points not settled: {queue}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, admin token) of a ``run.py serve`` on its own stores."""
    data_dir: Path = tmp_path_factory.mktemp("conformance")
    pg, rd = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("QUEUE_MAX_ATTEMPTS", "1")  # an unknown reference is dead at once
        server = Server(data_dir, port)
    try:
        token = (data_dir / "admin-token").read_text().strip()
        _seed(port, token)
        yield f"http://127.0.0.1:{port}", token
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0, "".join(server.output)
    finally:
        server.kill()
        rd.stop(even_if_reused=True)  # the stores this fixture caused, by their pids
        pg.stop(even_if_reused=True)


@pytest.fixture(scope="module")
def served_schema(live: tuple[str, str]) -> schemathesis.schemas.BaseSchema:
    base_url, token = live
    config = SchemathesisConfig.from_dict({
        "seed": SEED,
        "headers": {"Authorization": f"Bearer {token}"},
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True,
                       "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    })
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("served_schema")


@pytest.mark.timeout(300)
@schema.parametrize()
def test_every_answer_of_a_live_server_conforms_to_its_openapi_document(
        case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS, timeout=30)
